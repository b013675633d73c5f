"""Run a Python module (pytest, for ``make test``) with the project's PostgreSQL and Redis.

``python -m tests.with_services pytest -q ...`` runs ``python -m pytest -q ...``. When
``DATABASE_URL`` / ``REDIS_URL`` are not set, the embedded servers under var/ are started first
(oversight/embedded.py) and their URLs passed on: ``DATABASE_URL`` the app role's,
``DATABASE_OWNER_URL`` the owner's (the tests' own connection logs in as the owner, which makes
the test database; the live server and workers as the app: tests/conftest.py). When the run is
over, the embedded servers *this run started* are stopped again (their data stays in var/). A
server that was already running before (``make services``, ``make demo``) is left running, and so
is one that another process is still connected to: ``make stop-services`` stops them. With both
variables set, nothing is started or stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from urllib.parse import urlparse

from oversight import embedded


def _pg_clients(url: str) -> int:
    """Client connections to the embedded PostgreSQL, other than this check's own (as its superuser: the
    app's role does not see other roles' connections)."""
    import psycopg

    admin = embedded.superuser_url(urlparse(url).port or 0, "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def _redis_clients(url: str) -> int:
    """Client connections to the embedded Redis, other than this check's own."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return max(len(client.client_list()) - 1, 0)
    finally:
        client.close()


def _in_use(name: str) -> bool:
    try:
        if name == "postgres":
            return _pg_clients(os.environ["DATABASE_URL"]) > 0
        return _redis_clients(os.environ["REDIS_URL"]) > 0
    except Exception:  # cannot tell: stopping what this run started is still owed
        return False


def _run(argv: list[str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", *argv])  # noqa: S603
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to pytest too: let it clean up (test database, servers) first.
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 128 + signal.SIGINT


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.with_services MODULE [ARGS...]", file=sys.stderr)
        return 2
    needed = {"postgres": not os.environ.get("DATABASE_URL"), "redis": not os.environ.get("REDIS_URL")}
    if not any(needed.values()):
        return _run(argv)
    before = embedded.running()
    embedded.ensure_environment(roles=True)
    started = [name for name, need in needed.items() if need and not before[name]]
    kept = [name for name, need in needed.items() if need and before[name]]
    try:
        return _run(argv)
    finally:
        busy = [name for name in started if _in_use(name)]
        to_stop = [name for name in started if name not in busy]
        if to_stop:
            embedded.stop(postgres="postgres" in to_stop, redis="redis" in to_stop)
            print(f"with_services: stopped the embedded {' and '.join(to_stop)} this run started (data kept in var/)")
        for names, why in ((kept, "already running before this run"), (busy, "still in use by another process")):
            if names:
                print(
                    f"with_services: embedded {' and '.join(names)} left running ({why}); "
                    "`make stop-services` stops them"
                )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
