"""The pure core: what a window is, how it is planned, how types map, what a commit records.

Imports only the standard library (and the cron library for schedules): no engine, catalog,
Kubernetes or network code. Every other room builds on it; tests/unit/test_layout.py enforces it.
"""
