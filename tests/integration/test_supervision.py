"""The demo's runner (``oversight.supervise``: supervisord over the Procfile) keeps the product
serving when a process dies, and stops everything it started on SIGTERM.

Real processes: the runner, supervisord, two uvicorns on supervisord's shared socket and the
monitoring worker (prefork), against the test database and Redis; the last test against embedded
PostgreSQL and Redis the runner starts itself (their own ``OVERSIGHT_VAR_DIR``). Each wait is
bounded; nothing sleeps to see that nothing happened.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from oversight import supervise
from tests import conftest
from tests.conftest import BASE_DIR, free_port

MONITORING_NODE = f"monitoring@{socket.gethostname()}"


# --- helpers ------------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    """``check()``'s first truthy answer (exceptions count as not yet), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            answer = check()
        except Exception as exc:  # not up yet: the socket, the RPC server, the worker
            answer, last = None, exc
        if answer:
            return answer
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"{what}: not within {timeout:.0f}s (last error: {last!r})\n{tail}")


def healthz(port: int, path: str = "/healthz") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().status
    finally:
        conn.close()


@dataclass
class Runner:
    proc: subprocess.Popen[bytes]
    layout: supervise.Layout
    port: int
    log: Path

    def programs(self) -> dict[str, dict[str, Any]]:
        """supervisord's view: ``{"web-0": {"pid": …, "statename": "RUNNING", …}, …}``."""
        return {p["name"]: p for p in supervise.rpc(self.layout).supervisor.getAllProcessInfo()}

    def running(self, name: str, not_pid: int = 0) -> int:
        """The program's pid once RUNNING (and not ``not_pid``), else 0."""
        info = self.programs()[name]
        return int(info["pid"]) if info["statename"] == "RUNNING" and info["pid"] != not_pid else 0

    def tree(self) -> list[psutil.Process]:
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]


def start_runner(env: dict[str, str], names: list[str], run_dir: Path) -> Runner:
    port = free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "runner.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oversight.supervise", "run", "--port", str(port), "--dir", str(run_dir), *names],
            env=env, cwd=BASE_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Runner(proc, supervise.Layout(run_dir), port, log)


def gone(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still alive (a zombie waiting for its parent counts as gone)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def terminate(runner: Runner, timeout: float = 45) -> int:
    runner.proc.send_signal(signal.SIGTERM)
    return runner.proc.wait(timeout=timeout)


def kill_leftovers(runner: Runner, procs: list[psutil.Process]) -> None:
    """After a failed test: nothing of ours stays behind."""
    for p in gone(procs):
        p.kill()
    if runner.proc.poll() is None:
        runner.proc.kill()
        runner.proc.wait()


@dataclass
class Poller:
    """GET /healthz every 20 ms on a new connection, as a load balancer's client would.

    A request the killed process had already accepted is lost with it (connection reset): it is
    sent once more at once, as a client would, and counted in ``retried``; ``failed`` holds those
    that the retry did not get answered either.
    """

    port: int
    answered: int = 0
    retried: int = 0
    slowest: float = 0.0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _once(self) -> None:
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                status = healthz(self.port)
            except OSError as exc:
                if attempt == 2:
                    self.failed.append(repr(exc))
                else:
                    self.retried += 1
                continue
            if status == 200:
                self.answered += 1
            else:
                self.failed.append(f"HTTP {status}")
            break
        self.slowest = max(self.slowest, time.monotonic() - started)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._once()
            self._stop.wait(0.02)

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)


def worker_pid(node: str) -> int:
    """The pid the worker named ``node`` reports over the broker (0 when it does not answer)."""
    from oversight.celery import app

    stats = app.control.inspect(destination=[node], timeout=1.0).stats() or {}
    return int(stats.get(node, {}).get("pid", 0))


# --- the configuration, without processes --------------------------------------------------------


def test_the_procfile_becomes_supervisord_programs_with_the_web_on_one_shared_socket(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"] + os.pathsep + str(Path(sys.executable).parent),
           "OVERSIGHT_PORT": "8123", "WEB_WORKERS": "3"}
    text = supervise.render(list(supervise.DEMO_PROGRAMS), env, supervise.Layout(tmp_path))
    import configparser

    conf = configparser.RawConfigParser()
    conf.read_string(text)
    web = conf["fcgi-program:web"]
    assert web["socket"] == "tcp://127.0.0.1:8123"  # ${HOST:-127.0.0.1}, ${OVERSIGHT_PORT:-8000}
    assert web["numprocs"] == "3"  # --workers ${WEB_WORKERS:-2}: one supervised process each
    assert web["command"].endswith("--fd 0")
    assert "--workers" not in web["command"]
    assert "--port" not in web["command"]
    assert "--timeout-keep-alive 5" in web["command"]
    for name in ("scoring", "monitoring", "beat", "simulator"):
        program = conf[f"program:{name}"]
        assert program["autorestart"] == "true"
        assert Path(program["command"].split()[0]).is_absolute()
    assert "-n monitoring@%%h" in conf["program:monitoring"]["command"]  # supervisord's own % doubled
    assert conf["program:monitoring"]["stopasgroup"] == "true"  # the prefork pool child too
    priorities = [int(conf[s]["priority"]) for s in ("fcgi-program:web", "program:scoring", "program:beat")]
    assert priorities == sorted(priorities)  # web starts first and stops last
    with pytest.raises(ValueError, match="not in Procfile: nope"):
        supervise.render(["web", "nope"], env, supervise.Layout(tmp_path))


def test_the_log_listener_prints_each_line_with_its_program_name() -> None:
    def event(name: str, data: str) -> str:
        payload = f"processname:{name} groupname:{name} pid:7 channel:stdout\n{data}"
        header = "ver:3.0 server:oversight serial:1 pool:logs poolserial:1 eventname:PROCESS_LOG_STDOUT"
        return f"{header} len:{len(payload)}\n{payload}"

    events = event("web-0", "Started ✓\nhalf a ") + event("monitoring", "ready\n") + event("web-0", "line\n")
    stdin = io.StringIO(events)
    stdout, out = io.StringIO(), io.StringIO()
    supervise.log_listener(stdin, stdout, out)
    assert out.getvalue().splitlines() == [
        "web-0       | Started ✓", "monitoring  | ready", "web-0       | half a line"]
    assert stdout.getvalue() == "READY\nRESULT 2\nOK" * 3 + "READY\n"  # supervisord's listener protocol


# --- a running runner ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """The runner with two web processes and the monitoring worker on the test database and Redis."""
    env = {**conftest.test_database_env(), "WEB_WORKERS": "2"}
    r = start_runner(env, ["web", "monitoring"], tmp_path_factory.mktemp("supervise"))
    try:
        wait_for("/healthz", lambda: healthz(r.port) == 200, 30, r.log)
        wait_for("the monitoring worker's answer", lambda: worker_pid(MONITORING_NODE) == r.running("monitoring"),
                 30, r.log)
    except BaseException:
        kill_leftovers(r, r.tree() if r.proc.poll() is None else [])
        raise
    yield r
    # SIGTERM with the services given: every process goes (the embedded case: the last test)
    procs = r.tree() if r.proc.poll() is None else []
    try:
        assert terminate(r) == 0
        assert gone(procs) == [], [p.cmdline() for p in gone(procs)]
    finally:
        kill_leftovers(r, procs)


def started_lines(runner: Runner, name: str) -> int:
    """How many times the web process ``name`` said it serves (its log is appended to across restarts)."""
    log = runner.layout.dir / f"{name}.log"
    return log.read_text().count("Uvicorn running on socket") if log.exists() else 0


@pytest.mark.worker
def test_a_killed_monitoring_worker_comes_back_while_the_web_answers_throughout(runner: Runner) -> None:
    old = runner.running("monitoring")
    pool = psutil.Process(old).children()
    assert old
    assert pool
    with Poller(runner.port) as poller:
        started = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = wait_for("a new monitoring process", lambda: runner.running("monitoring", not_pid=old), 20, runner.log)
        wait_for("the new worker's answer", lambda: worker_pid(MONITORING_NODE) == new, 30, runner.log)
        back_in = time.monotonic() - started
    assert new != old
    assert gone(pool) == []  # the orphaned pool child went with its parent
    assert poller.failed == []
    assert poller.retried == 0
    assert poller.answered > 20
    assert "exited: monitoring (terminated by SIGKILL; not expected)" in runner.log.read_text()
    print(f"monitoring worker answering again {back_in:.1f}s after SIGKILL; {poller.answered} /healthz answered, "
          f"slowest {poller.slowest * 1000:.0f} ms")


class DecisionSender:
    """A client service under load: POSTs a decision every 20 ms and keeps the ids it was answered 201
    for (acknowledged). A connection the killed process held is reset: that decision was never
    acknowledged, and the client sends it again with the same idempotency key."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, n: int) -> None:
        import json as _json

        body = _json.dumps(conftest.decision_body(0.9, idempotency_key=f"load-{n}")).encode()
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/api/v1/systems/sup/decisions", body,
                             {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
                r = conn.getresponse()
                answer = r.read()
            except OSError:
                continue  # reset by the kill: not acknowledged, so send again
            finally:
                conn.close()
            if r.status in (200, 201):
                self.acknowledged.append(_json.loads(answer)["id"])
            else:
                self.errors.append(f"HTTP {r.status}: {answer[:200]!r}")
            return
        self.errors.append(f"decision {n}: no answer in three tries")

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self._send(n)
            n += 1
            self._stop.wait(0.02)

    def __enter__(self) -> DecisionSender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.worker
def test_a_killed_web_process_comes_back_and_the_other_serves_meanwhile(runner: Runner, tworld: Any) -> None:
    from oversight.models import Decision

    with Poller(runner.port) as poller, DecisionSender(runner.port, tworld.keys["sup"]) as load:
        for name, other in (("web-0", "web-1"), ("web-1", "web-0")):
            old, starts = runner.running(name), started_lines(runner, name)
            assert old
            assert runner.running(other)
            assert starts
            os.kill(old, signal.SIGKILL)  # the other one serves alone until this one is back
            wait_for(f"a new {name}", lambda name=name, old=old: runner.running(name, not_pid=old), 20, runner.log)
            wait_for(f"{name} serving", lambda name=name, n=starts: started_lines(runner, name) > n, 20, runner.log)
    # web-0 came back and then served alone while web-1 was down: every request was answered, a
    # request the killed process had already accepted at most once more
    assert poller.failed == [], poller.failed
    assert poller.retried <= 2
    assert poller.answered > 50
    assert healthz(runner.port) == 200
    # Under load: every decision the API acknowledged is stored, once (no acknowledged one lost).
    assert load.errors == []
    assert len(load.acknowledged) > 20
    stored = set(Decision.objects.filter(id__in=[a.removeprefix("dec_") for a in load.acknowledged])
                 .values_list("id", flat=True))
    assert {f"dec_{u.hex}" for u in stored} == set(load.acknowledged)
    print(f"{poller.answered} /healthz answered across two web kills, {poller.retried} sent twice, "
          f"slowest {poller.slowest * 1000:.0f} ms; {len(load.acknowledged)} decisions acknowledged, all stored")


# --- stopping ------------------------------------------------------------------------------------


@pytest.mark.worker
def test_sigterm_stops_every_process_and_the_embedded_servers_the_runner_started() -> None:
    """No DATABASE_URL / REDIS_URL: the runner starts embedded PostgreSQL and Redis (in a var
    directory of its own) and, on SIGTERM, stops its programs and then them."""
    var = BASE_DIR / "var" / f"test-supervise-{os.getpid()}"
    shutil.rmtree(var, ignore_errors=True)
    env = {k: v for k, v in conftest.test_database_env().items()
           if k not in ("DATABASE_URL", "REDIS_URL", "OVERSIGHT_EMBEDDED_STARTED", "OVERSIGHT_KEEP_SERVICES")}
    env |= {"OVERSIGHT_VAR_DIR": str(var), "WEB_WORKERS": "2"}
    r = start_runner(env, ["web", "monitoring"], var / "supervisor")
    procs: list[psutil.Process] = []
    servers: list[psutil.Process] = []
    try:
        # /readyz: the web processes reach the embedded PostgreSQL and Redis
        wait_for("/readyz", lambda: healthz(r.port, "/readyz") == 200, 45, r.log)
        wait_for("the monitoring pool", lambda: psutil.Process(r.running("monitoring")).children(), 30, r.log)
        servers = [psutil.Process(int((var / "pg" / "postmaster.pid").read_text().split()[0])),
                   psutil.Process(int((var / "redis" / "redis.pid").read_text().strip()))]
        procs = r.tree()
        names = [" ".join(p.cmdline()) for p in procs]
        assert sum("uvicorn" in n for n in names) == 2
        assert sum("worker -Q monitoring" in n for n in names) == 2
        assert sum("supervisord" in n for n in names) == 1
        assert sum("log-listener" in n for n in names) == 1
        started = time.monotonic()
        assert terminate(r) == 0
        took = time.monotonic() - started
        assert gone(procs) == [], [p.cmdline() for p in gone(procs)]
        assert gone(servers) == [], "embedded PostgreSQL / Redis still running"
        with pytest.raises(ConnectionRefusedError):
            healthz(r.port)
        log = r.log.read_text()
        assert "embedded PostgreSQL and Redis stopped" in log
        print(f"SIGTERM: {len(procs)} processes and the embedded servers gone in {took:.1f}s")
    finally:
        kill_leftovers(r, procs + servers)
        shutil.rmtree(var, ignore_errors=True)
