"""Test-run plugins (markers, the browser's whereabouts); loaded by tests/conftest.py."""
