"""PostgreSQL stopped (accepting connections, answering nothing): a real web server answers the API
with 503 and Retry-After within the connect timeout, instead of holding the client for long."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests import conftest
from tests.conftest import BASE_DIR, free_port, stop, wait_port


def black_hole() -> tuple[socket.socket, list[Any]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[Any] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])  # read nothing, answer nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, held


def test_the_api_answers_503_with_retry_after_within_the_connect_timeout(db: None) -> None:
    sock, held = black_hole()
    port = free_port()
    env = {**conftest.test_database_env(), "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/x",
           "DATABASE_CONNECT_TIMEOUT_S": "2", "DATABASE_POOL_TIMEOUT": "2", "DATABASE_POOL_MIN": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "oversight.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--no-access-log"], env=env, cwd=BASE_DIR,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        body = json.dumps({"subject": "u-1", "prediction": {"output": 1, "confidence": 0.9}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/systems/sup/decisions", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Bearer ovk_whatever"})
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)  # noqa: S310 — a fixed http:// address
        took = time.monotonic() - started
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"] == "5"
        assert json.loads(refused.value.read())["error"]["code"] == "unavailable"
        assert took < 2 + 2 + 1.5, took  # the pool's wait and one connect timeout, not minutes
        with pytest.raises(urllib.error.HTTPError) as page:  # a page, for a logged-in person
            urllib.request.urlopen(urllib.request.Request(  # noqa: S310 — a fixed http:// address
                f"http://127.0.0.1:{port}/review/", headers={"Cookie": "sessionid=" + "a" * 32}), timeout=30)
        assert page.value.code == 503
        assert page.value.headers["Retry-After"] == "5"
        assert "The database cannot be reached" in page.value.read().decode()
    finally:
        stop(proc)
        for c in held:
            c.close()
        sock.close()
