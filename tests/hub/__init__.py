"""Pushing to a local Hub-compatible server (a package so its conftest does not shadow tests/conftest.py)."""
