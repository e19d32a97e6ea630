"""The test layers, told apart by directory, and how thoroughly the property tests search.

Every test gets the marker of its layer (``unit``, ``helm``, ``integration``, ``e2e``) from the
directory it lives in, and that layer's timeout per test unless it sets its own, so
``pytest -m integration`` selects a layer and a hung engine fails one test instead of the run.
A test in a directory without a layer is a collection error: a new directory must say its layer.

``HYPOTHESIS_PROFILE`` picks how many examples each property test tries:

* ``full`` (the default, ``make test`` and ``make unit``): what each test asks for.
* ``check`` (``make check``, before each commit): at most :data:`CHECK_MAX_EXAMPLES` per test.
  Tests declare their example counts with ``@settings``, which a loaded profile never overrides,
  so this profile lowers each test's own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

TESTS = Path(__file__).resolve().parent
#: Directory under tests/ -> (marker, timeout per test in seconds). Integration tests run the
#: demo and spark-submit as subprocesses with 600 s limits of their own, which must fire first.
LAYERS = {
    "unit": ("unit", 60),
    "helm": ("helm", 120),
    "integration": ("integration", 900),
    "e2e": ("e2e", 900),
}
PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
CHECK_MAX_EXAMPLES = 20
# Where @settings and @given keep a test's settings; hypothesis reads them there at each run.
_HYPOTHESIS_SETTINGS = "_hypothesis_internal_use_settings"

# No deadline: a property test must not race the wall clock (a loaded machine is not a failure).
settings.register_profile("full", settings(deadline=None))
settings.register_profile("check", settings(max_examples=CHECK_MAX_EXAMPLES, deadline=None))
PROFILE = os.environ.get(PROFILE_VARIABLE, "").strip() or "full"
try:
    settings.load_profile(PROFILE)
except Exception as exc:  # hypothesis raises InvalidArgument; name the variable that chose it
    raise pytest.UsageError(f"{PROFILE_VARIABLE}={PROFILE!r}: not a profile (full or check)") from exc


def layer_of(path: Path) -> tuple[str, int]:
    """The marker and per-test timeout of the layer a test file belongs to."""
    try:
        top = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        raise pytest.UsageError(f"{path} is not under {TESTS}") from None
    if top not in LAYERS:
        raise pytest.UsageError(f"{path}: tests/{top} is no test layer; add it to LAYERS in {__file__}")
    return LAYERS[top]


def _cap_examples(item: pytest.Item, limit: int) -> None:
    test = getattr(item, "obj", None)
    if not getattr(test, "is_hypothesis_test", False):
        return
    own = getattr(test, _HYPOTHESIS_SETTINGS, None)
    if not isinstance(own, settings):  # fail loudly rather than silently run the full search
        raise pytest.UsageError(f"{item.nodeid}: hypothesis no longer keeps settings in {_HYPOTHESIS_SETTINGS}")
    if own.max_examples > limit:
        setattr(test, _HYPOTHESIS_SETTINGS, settings(own, max_examples=limit))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker, timeout = layer_of(item.path)
        item.add_marker(marker)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeout))
        if PROFILE == "check":
            _cap_examples(item, CHECK_MAX_EXAMPLES)
