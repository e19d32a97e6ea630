"""The error a run ends with when it cannot go on."""

from __future__ import annotations


class OffloadError(RuntimeError):
    """A run that cannot go on; its message says why, and nothing was committed."""
