"""Local mode: embedded engines behind their real interfaces, for `make demo` and the tests."""
