"""A person's and a client's requests through the real server (uvicorn, the production stack).

Log in and out, CSRF on form posts, flash messages, static files, security headers and the API's
JSON errors, and a kill switch confirmed while a decision is half sent.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings

from oversight import actions
from oversight.models import KillSwitch
from tests.conftest import World, decision_body


@pytest.fixture
def http_url(live_server_url: str) -> str:
    return live_server_url


@pytest.fixture
def browser(live_server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server_url, timeout=15, follow_redirects=False) as c:
        yield c


def form_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF form field"
    return match.group(1)


def log_in(c: httpx.Client, username: str, password: str, next_path: str = "/") -> httpx.Response:
    page = c.get("/login/")
    assert page.status_code == 200
    return c.post("/login/", data={"username": username, "password": password, "next": next_path,
                                   "csrfmiddlewaretoken": form_token(page)})


def test_logging_in_and_out_saves_and_ends_the_session(tworld: World, browser: httpx.Client) -> None:
    assert browser.get("/review/").headers["location"] == "/login/?next=/review/"  # user loaded, anonymous
    r = log_in(browser, "operator", "wrong password")
    assert r.status_code == 200
    assert "match" in r.text
    r = log_in(browser, "operator", tworld.password, "/review/")
    assert r.status_code == 302
    assert r.headers["location"] == "/review/"
    assert settings.SESSION_COOKIE_NAME in browser.cookies  # the changed session was saved
    page = browser.get("/review/")
    assert page.status_code == 200
    r = browser.post("/logout/", data={"csrfmiddlewaretoken": form_token(page)})
    assert r.status_code == 302
    assert browser.get("/review/").status_code == 302  # the session is gone on the server too


def test_a_form_post_without_the_csrf_token_is_refused(tworld: World, browser: httpx.Client) -> None:
    log_in(browser, "admin", tworld.password)
    r = browser.post("/killswitch/", data={"scope": "global", "engaged": "true", "reason": "no token"})
    assert r.status_code == 403
    assert not KillSwitch.objects.exists()


def test_a_flash_message_is_shown_once(tworld: World, browser: httpx.Client) -> None:
    log_in(browser, "operator", tworld.password)
    page = browser.get("/review/")
    r = browser.post("/review/next/", data={"csrfmiddlewaretoken": form_token(page)})  # the queue is empty
    assert r.status_code == 302
    assert r.headers["location"] == "/review/"
    assert "the queue is empty" in browser.get("/review/").text
    assert "the queue is empty" not in browser.get("/review/").text  # read, so stored as gone


def test_static_files_are_served_with_the_right_type(browser: httpx.Client) -> None:
    r = browser.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert int(r.headers["content-length"]) == len(r.content) > 1_000_000
    assert browser.get("/static/vendor/no-such-file.js").status_code == 404


def test_api_answers_carry_the_security_headers_and_json_errors(tworld: World, browser: httpx.Client) -> None:
    r = browser.post("/api/v1/systems/auto/decisions", content=json.dumps(decision_body(0.9)),
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    r = browser.get("/api/v1/no-such-endpoint")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = browser.delete("/api/v1/systems/auto/decisions")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    big = b'{"subject": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}'
    r = browser.post("/api/v1/systems/auto/decisions", content=big,
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    r = browser.post("/api/v1/systems/auto/decisions", content=json.dumps(decision_body(0.9)),
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 201


def test_a_flip_confirmed_between_a_decisions_headers_and_its_body_stops_it(tworld: World, http_url: str) -> None:
    """The client sends its headers, waits for ``100 Continue``, an admin stops the system, then the
    body arrives: the decision is killed (the configuration is read once the request is in)."""
    with httpx.Client(base_url=http_url, timeout=15) as c:  # the server's snapshot is fresh
        r = c.post("/api/v1/systems/sup/decisions", content=json.dumps(decision_body(0.9)),
                   headers={"Authorization": f"Bearer {tworld.keys['sup']}", "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    u = urlsplit(http_url)
    body = json.dumps(decision_body(0.9)).encode()
    head = (f"POST /api/v1/systems/sup/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {tworld.keys['sup']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
    with socket.create_connection((u.hostname, u.port), timeout=15) as sock:
        sock.sendall(head.encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100")  # the server has the headers and asks for the body
        actions.set_killswitch(tworld.admin, "system", True, "stop before the body", "sup")  # confirmed
        sock.sendall(body)
        answer = b""
        while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    decided = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert (decided["route"], decided["status"]) == ("killed", "fallback")
