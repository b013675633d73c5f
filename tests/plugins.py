"""Test-run plugins (markers, the browser's whereabouts); loaded by tests/conftest.py.

The ``browser`` and ``worker`` markers are applied here, from what a test is and uses, so that
``make test-fast`` (``-m "not browser and not worker"``) skips every test that drives Chromium
or starts a Celery worker without each test module having to remember its marker:

- ``browser``: every test under tests/browser/, where the Playwright fixtures live (conftest.py
  there), so a test that drives Chromium belongs in that directory. Fixture names are not used:
  other modules have fixtures called ``browser`` that are plain HTTP clients;
- ``worker``: every test using a fixture that starts a Celery worker (directly or through
  another fixture: ``item.fixturenames`` is the whole closure).
"""

from __future__ import annotations

from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
WORKER_FIXTURES = frozenset({"celery_worker_proc", "scoring_worker_proc"})


def _under(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _under(item.path, BROWSER_DIR):
            item.add_marker(pytest.mark.browser)
        if fixtures & WORKER_FIXTURES:
            item.add_marker(pytest.mark.worker)
