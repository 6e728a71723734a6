"""Maintenance scripts behind make targets (dependency locks, the vendored Wave schema); tests import their checks."""
