from __future__ import annotations

from iceberg_offload.local.chhttp.cli import main

raise SystemExit(main())
