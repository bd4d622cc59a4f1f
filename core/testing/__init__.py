"""Conformance suites that plugin authors reuse in their own tests."""
