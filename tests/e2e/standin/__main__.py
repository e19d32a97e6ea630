"""``python -m standin``: the Spark Operator stand-in process (see :mod:`standin.sparkop`)."""

import sys

from .sparkop import main

sys.exit(main())
