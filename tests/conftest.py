"""Shared fixtures: a small world of people and systems, real servers started as subprocesses.

Everything runs against real PostgreSQL and Redis (DATABASE_URL / REDIS_URL, or the embedded
servers). The live ASGI server and the Celery worker are real processes pointed at the test
database; tests that use them take ``transactional_db`` so what they write is committed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.test import Client
from django.utils.crypto import get_random_string

from oversight import access, actions, config
from oversight.models import AISystem, ReleaseRequest
from tests.asgiclient import ApiClient

pytest_plugins = ["tests.plugins"]

BASE_DIR = Path(__file__).resolve().parent.parent


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """The standard algorithm with few rounds. A live server checks such a hash with its own
    (standard) hasher, which reads the rounds from the hash, so logging in stays real."""

    iterations = 1000


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The tests' own connection logs in as the database's owner (DATABASE_OWNER_URL; the same role as
    DATABASE_URL with one role): it creates the test database, migrates it, and some tests tamper with
    the audit log on purpose. The app's processes started here (the live server, the workers) log in
    as the app's role (``test_database_env``); tests/integration/test_db_roles.py checks that role."""
    settings.DATABASES["default"].update(settings.DATABASE_OWNER_LOGIN)


@pytest.fixture(autouse=True)
def _quick_password_hashing(settings: Any) -> None:
    """The world's people are made anew for every test: keep their hashing cheap."""
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2PasswordHasher"]


def csrf_session(user: Any, api: bool = False) -> Any:
    """A person logged in, with the CSRF cookie and header a browser page would send.

    ``api``: a client whose requests go through the production ASGI application (tests/asgiclient.py).
    """
    c: Any = ApiClient() if api else Client(enforce_csrf_checks=True)
    c.force_login(user)
    token = get_random_string(32)
    c.cookies[settings.CSRF_COOKIE_NAME] = token
    c.defaults["HTTP_X_CSRFTOKEN"] = token
    return c


def api_session(user: Any) -> ApiClient:
    """``csrf_session`` for the JSON API: served by the production ASGI application."""
    return csrf_session(user, api=True)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _fresh_config_epoch() -> Iterator[None]:
    """Each test starts with no cached gate config and no epoch in Redis (its DB starts anew)."""
    r = redis.Redis.from_url(settings.REDIS_URL)
    r.delete(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX)
    config.cache.clear()
    config.redis_epoch.down_until = 0.0
    yield
    config.cache.clear()


@dataclass
class World:
    operator: Any
    editor: Any
    admin: Any
    nobody: Any
    critical: AISystem
    supervised: AISystem
    autonomous: AISystem
    keys: dict[str, str]
    password: str = "correct-horse-battery"

    def client_for(self, slug: str) -> ApiClient:
        """The system's client service: its API key, through the production ASGI application."""
        return ApiClient(HTTP_AUTHORIZATION=f"Bearer {self.keys[slug]}")

    def person(self, user: Any) -> Client:
        """A person's browser for pages (Django's test client: templates and context to inspect)."""
        c = Client(enforce_csrf_checks=True)
        c.force_login(user)
        return c

    def api_person(self, user: Any) -> ApiClient:
        """A person's session on the JSON API, without a CSRF token (through the ASGI application)."""
        c = ApiClient()
        c.force_login(user)
        return c


def make_world() -> World:
    access.ensure_groups()
    User = get_user_model()
    people = {}
    for name in ("operator", "editor", "admin", "nobody"):
        u = User.objects.create_user(name, password="correct-horse-battery")
        if name in access.ALL_ROLES:
            u.groups.add(Group.objects.get(name=name))
        people[name] = u
    crit = actions.create_system(None, {"slug": "crit", "name": "Critical", "level": 1,
                                        "fallback": {"decision": "refer"}})
    sup = actions.create_system(None, {"slug": "sup", "name": "Supervised", "level": 2,
                                       "confidence_threshold": 0.6, "fallback": {"items": ["safe"]}})
    auto = actions.create_system(None, {"slug": "auto", "name": "Autonomous", "level": 3,
                                        "fallback": {"label": "hold"}})
    keys = {s.slug: actions.create_api_key(None, s, "test")[1] for s in (crit, sup, auto)}
    return World(people["operator"], people["editor"], people["admin"], people["nobody"], crit, sup, auto, keys)


@pytest.fixture
def world(db: None) -> World:
    return make_world()


@pytest.fixture
def tworld(transactional_db: None) -> World:
    """The same world, committed: visible to the live server and the Celery worker."""
    return make_world()


def second_admin() -> Any:
    """Another admin (four eyes: releasing the global switch or a level-1 system's needs two)."""
    User = get_user_model()
    user, made = User.objects.get_or_create(username="admin2")
    if made:
        user.set_password("correct-horse-battery")
        user.save()
        user.groups.add(Group.objects.get(name=access.ADMIN))
    return user


def release_switch(admin: Any, scope: str, system: str | None = None, model: str = "",
                   reason: str = "incident over") -> Any:
    """Release a kill switch the way the product requires: when four eyes apply, ``admin`` asks and
    a second admin approves."""
    done = actions.set_killswitch(admin, scope, False, reason, system, model)
    if isinstance(done, ReleaseRequest):
        return actions.approve_release(second_admin(), done.public_id)
    return done


def decision_body(confidence: float | None = 0.9, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "user-1",
        "context": {"hour": 23},
        "features": {"tempo": 171.0},
        "prediction": {"output": {"items": ["t1", "t9"]}, "confidence": confidence, "model": "collab-v3"},
    }
    body.update(extra)
    return body


# --- real processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_env() -> dict[str, str]:
    """Environment for a subprocess that must use this run's test database and Redis prefix, as the app's role."""
    db = {**settings.DATABASES["default"], **settings.DATABASE_APP_LOGIN}
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    url = f"postgresql://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "OVERSIGHT_REDIS_PREFIX": settings.REDIS_PREFIX,
        "DATABASE_POOL_MAX": "4",
        "PYTHONPATH": str(BASE_DIR),
    }


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not open port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def live_server_url(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    """A real uvicorn (ASGI: Django + Channels) serving the test database."""
    port = free_port()
    (BASE_DIR / "var").mkdir(exist_ok=True)
    log = open(BASE_DIR / "var" / "test-uvicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "oversight.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--lifespan", "off", "--no-access-log",
         "--timeout-keep-alive", "5", "--timeout-graceful-shutdown", "5"],  # as the Procfile's
        env=test_database_env(), cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def celery_worker_proc(django_db_setup: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker on the monitoring queue, using the test database."""
    (BASE_DIR / "var").mkdir(exist_ok=True)
    log = open(BASE_DIR / "var" / "test-celery.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "oversight", "worker", "-Q", "monitoring",
         "-c", "1", "--pool", "solo", "-n", f"test-{os.getpid()}@%h", "--loglevel", "INFO"],
        env=test_database_env(), cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def scoring_worker_proc(django_db_setup: None, tmp_path_factory: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker on the scoring queue (prefork, one child), using the test database."""
    (BASE_DIR / "var").mkdir(exist_ok=True)
    log = open(BASE_DIR / "var" / "test-scoring.log", "wb")  # noqa: SIM115
    env = {**test_database_env(), "HOSTED_MARKERS": str(tmp_path_factory.mktemp("markers"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "oversight", "worker", "-Q", "scoring",
         "-c", "1", "-n", f"test-scoring-{os.getpid()}@%h", "--loglevel", "INFO"],
        env=env, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_worker_ready(BASE_DIR / "var" / "test-scoring.log", proc)
        proc.markers = Path(env["HOSTED_MARKERS"])  # type: ignore[attr-defined]
        yield proc
    finally:
        stop(proc)
        log.close()


def _wait_worker_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited: {log.read_text()[-2000:]}")
        if b"ready." in log.read_bytes():
            return
        time.sleep(0.1)
    raise RuntimeError("the worker did not become ready")
