"""`make bench`: the decision endpoints under load, each next to its baselines, in one run.

* Single decisions: ``POST /api/v1/systems/<slug>/decisions`` at a fixed open-loop rate (default
  200/s), next to two baselines at the same rate (both in ``oversight/benchviews.py``, mounted
  only for the bench):

  - the *bare view* (``GET /api/bare``): a sync Django view answering a small ``JsonResponse``,
    behind the same middleware: what any request costs;
  - the *floor* (``POST /api/bare-insert``): a sync Django view that takes the same decision body
    as it comes (no authentication, no validation, no gate) and commits one raw ``INSERT`` of an
    equivalent decision row (autocommit: one statement, one durable commit): the floor for any
    durable decision.

  A fourth kind, *plain*, is the decision again with its body read by a2wsgi's own bridge instead
  of ``oversight.wsgibridge`` (the header ``X-Oversight-Bench-Body: plain``, honoured only by the
  bench's server): the custom piece's on/off switch, so its gain is measured in the same blocks.

  The four run in interleaved blocks whose order rotates per block (bare, floor, decision, plain;
  then floor, decision, plain, bare; ...; then the reversed rotations), so each runs in each
  position and after each other kind equally often: this is a shared 2-core VM whose speed drifts by tens of
  percent over a minute, and all sides of a ratio must see the same machine. Then a closed-loop
  run (16 clients) for the maximum decisions/s.
* Batches: ``POST …/decisions/batch`` with 1000 items per request, next to a raw psycopg ``COPY``
  of as many equivalent rows into the same table, committed per 1000 like the API does, in
  interleaved blocks (ABBA order).

Everything runs against a database of its own (``oversight_bench``, recreated per run) and a
Redis prefix of its own (``oversight-bench``), so the demo's data is never touched. The server
is plain uvicorn (``oversight.asgi:application``) in a subprocess; the load generator is this
process (an asyncio HTTP/1.1 client on keep-alive connections, with a timer thread that schedules
each request, so latencies are measured from the time a request was *due*, not from when it could
be sent: no coordinated omission). Client and server share the machine's cores, as the summary
says. An endpoint that errors is reported (errors per phase, failed targets), not fatal.

Targets (printed PASS/FAIL; the exit status is 0 either way, this is a measurement):
p50(decision) ≤ 2.5 × p50(bare view), p99(decision) ≤ 25 ms at 200/s, batch ≥ 25 % of the COPY
rate. Reported next to them, without a target: p50(decision) ÷ p50(floor), how far the decision
is from the cost of its one durable INSERT.

    python -m bench.run [--rate 200] [--duration 15] [--blocks 8] [--workers 2] [--batches 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import gc
import hashlib
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"
BENCH_DB = "oversight_bench"
BENCH_PREFIX = "oversight-bench"
SLUG = "bench-recs"  # oversight.benchviews.BENCH_SLUG: the floor looks this system up
BARE_PATH = "/api/bare"
FLOOR_PATH = "/api/bare-insert"
DECISION_PATH = f"/api/v1/systems/{SLUG}/decisions"
SYSTEM_SPEC = {
    "slug": SLUG,
    "name": "Benchmark recommendations",
    "level": 2,
    "confidence_threshold": 0.6,
    "audit_sample_rate": 0.05,
    "review_sla_s": 900,
    "fallback": {"items": ["editorial-calm-1"]},
}
TARGET_P50_RATIO = 2.5  # decision p50 / bare view p50
TARGET_P99_MS = 25.0
TARGET_BATCH_SHARE = 0.25
DECISION_COLUMNS = (
    "id", "system_id", "subject", "context", "features", "prediction", "model", "output", "confidence",
    "status", "route", "reasons", "audit", "idempotency_key", "request_hash", "policy_version",
    "occurred_at", "created_at", "released_at", "review",
)

# Runs in a subprocess with DATABASE_URL pointing at the bench database.
SETUP_SNIPPET = """
import json, sys
import django
django.setup()
from oversight import actions
system = actions.create_system(None, json.loads(sys.argv[1]), "bench setup")
_, secret = actions.create_api_key(None, system, "bench load generator")
print("BENCH_SETUP " + json.dumps({"slug": system.slug, "id": system.id, "key": secret,
                                   "policy_version": system.policy_version}))
"""

# The one custom piece left on the write path, measured against the library it stands in for:
# bulk.row (values as they are, JSON through orjson) against the ORM's own conversion of every
# field (get_db_prep_save, JSON through the standard library), for the same 1000 gated decisions,
# in ABBA blocks in one process.
ROWPREP_SNIPPET = """
import json, statistics, sys, time
import django
django.setup()
from django.db import connection
from oversight import bulk, config, decisions
from oversight.schemas import DecisionIn
entry = config.cache.current().systems_by_slug[sys.argv[1]]
items = [DecisionIn.model_validate(json.loads(x)) for x in json.loads(sys.stdin.read())]
rows = [decisions.build(entry, p, decisions.timezone.now()) for p in items]
fields = bulk.fields(type(rows[0]))
def orm():
    return [[f.get_db_prep_save(getattr(r, f.attname), connection) for f in fields] for r in rows]
def ours():
    return [bulk.row(r, connection) for r in rows]
assert [[str(v) for v in a] for a in orm()] == [[str(v) for v in b] for b in ours()]
times = {"orm": [], "bulk.row": []}
for block in range(8):
    for name in (("orm", "bulk.row") if block % 2 == 0 else ("bulk.row", "orm")):
        f = orm if name == "orm" else ours
        t = time.perf_counter()
        for _ in range(5):
            f()
        times[name].append((time.perf_counter() - t) / 5 * 1000)
print("ROWPREP " + json.dumps(times))
"""


def row_preparation(environment: Environment, n: int, seed: int) -> dict[str, Any] | None:
    """ms per ``n`` rows for the ORM's conversion and for ``bulk.row``, per block (no load running)."""
    rng = random.Random(seed)
    bodies = json.dumps([json.dumps(decision_body(rng, f"rowprep-{i}")) for i in range(n)])
    out = subprocess.run(
        [sys.executable, "-c", ROWPREP_SNIPPET, SLUG], input=bodies,
        cwd=BASE_DIR, env=environment.env, capture_output=True, text=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ROWPREP ")), None)
    if out.returncode != 0 or line is None:
        log(f"row preparation comparison failed:\n{out.stderr[-2000:]}")
        return None
    times = json.loads(line.removeprefix("ROWPREP "))
    return {name: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "blocks": v}
            for name, v in times.items()}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- environment: database, Redis, server -------------------------------------------------


@dataclass
class Environment:
    database_url: str  # the bench database
    redis_url: str
    embedded: bool
    env: dict[str, str]


def prepare_environment(bench_db: str = BENCH_DB, prefix: str = BENCH_PREFIX) -> Environment:
    """Embedded servers if needed, a fresh database of the bench's own (``oversight_bench``), a clean
    Redis prefix (``oversight-bench``); other benches pass their own names."""
    sys.path.insert(0, str(BASE_DIR))
    from oversight import embedded

    embedded_used = not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
    embedded.ensure_environment()
    base_url = os.environ["DATABASE_URL"]
    parsed = urlparse(base_url)
    bench_url = urlunparse(parsed._replace(path="/" + bench_db))
    # Connect to the URL's own database to create the bench's, or to "postgres" if that one does
    # not exist (yet) on this server.
    own_db = parsed.path.lstrip("/")
    candidates = [db for db in (own_db, "postgres") if db and db != bench_db]

    import psycopg

    conn = None
    for i, db in enumerate(candidates):
        try:
            conn = psycopg.connect(urlunparse(parsed._replace(path="/" + db)), autocommit=True)
            break
        except psycopg.OperationalError:
            if i == len(candidates) - 1:
                raise
    assert conn is not None
    with conn:
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
        except psycopg.errors.SyntaxError:  # PostgreSQL < 13
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (bench_db,))
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_db}"')
        conn.execute(f'CREATE DATABASE "{bench_db}"')

    import redis

    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    stale = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if stale:
        r.delete(*stale)
    r.close()

    env = os.environ.copy()
    env.update(DATABASE_URL=bench_url, OVERSIGHT_REDIS_PREFIX=prefix, PYTHONUNBUFFERED="1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    env.pop("OVERSIGHT_BENCH_BASELINE", None)
    return Environment(bench_url, os.environ["REDIS_URL"], embedded_used, env)


def migrate_and_seed(environment: Environment) -> dict[str, Any]:
    log(f"migrating {BENCH_DB}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR, env=environment.env, check=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", SETUP_SNIPPET, json.dumps(SYSTEM_SPEC)],
        cwd=BASE_DIR, env=environment.env, check=True, capture_output=True, text=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_SETUP ")), None)
    if line is None:
        raise SystemExit(f"bench setup printed no key:\n{out.stdout}\n{out.stderr}")
    return json.loads(line.removeprefix("BENCH_SETUP "))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn in a subprocess (its own session), stopped with SIGTERM like a process manager would."""

    def __init__(self, environment: Environment, workers: int, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.workers = workers
        self.env = {**environment.env, "OVERSIGHT_BENCH_BASELINE": "1", **extra_env}
        self.cmd = [
            sys.executable, "-m", "uvicorn", "oversight.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            "--lifespan", "off", "--no-access-log",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = RESULTS_DIR / "server.log"

    def start(self) -> None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd, cwd=BASE_DIR, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        ok = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"uvicorn exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status = _probe(self.port, BARE_PATH)
            except OSError:
                status = 0
            if status == 404:
                raise SystemExit(f"GET {BARE_PATH} is 404: OVERSIGHT_BENCH_BASELINE did not enable the baseline views")
            ok = ok + 1 if status == 200 else 0
            if ok >= 3 and len(self.worker_pids()) >= self.workers:
                floor = _probe(self.port, FLOOR_PATH)  # 405: it takes POST only
                if floor != 405:
                    raise SystemExit(f"GET {FLOOR_PATH} answered {floor}, not 405: is the floor view "
                                     "(oversight.benchviews.bare_insert) mounted?")
                return
            time.sleep(0.2)
        raise SystemExit(f"uvicorn did not answer within 60 s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        import psutil

        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        pids = [c.pid for c in children if "multiprocessing.resource_tracker" not in " ".join(_cmdline(c))]
        return pids if self.workers > 1 else [self.proc.pid]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log("uvicorn did not stop within 20 s of SIGTERM; killing its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def _cmdline(proc: Any) -> list[str]:
    try:
        return list(proc.cmdline())
    except Exception:
        return []


def _probe(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = s.recv(64)
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0


# --- CPU accounting -----------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by the client (this process), the server, PostgreSQL and Redis in a phase."""

    def __init__(self, server: Server, db_url: str, redis_url: str) -> None:
        import psutil

        self.psutil = psutil
        self.server = server
        self.pg_root = self._listener(urlparse(db_url).port or 5432, urlparse(db_url).hostname)
        self.redis_root = self._listener(urlparse(redis_url).port or 6379, urlparse(redis_url).hostname)

    def _listener(self, port: int, host: str | None) -> int | None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            return None
        with contextlib.suppress(Exception):
            for c in self.psutil.net_connections("tcp"):
                if c.status == "LISTEN" and c.laddr and c.laddr.port == port and c.pid:
                    return int(c.pid)
        return None

    def _tree(self, pid: int | None) -> list[Any]:
        if pid is None:
            return []
        try:
            root = self.psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except self.psutil.NoSuchProcess:
            return []

    def sample(self) -> dict[str, Any]:
        groups = {
            "client": [self.psutil.Process()],
            "server": self._tree(self.server.proc.pid if self.server.proc else None),
            "postgres": self._tree(self.pg_root),
            "redis": self._tree(self.redis_root),
        }
        out: dict[str, Any] = {"t": time.perf_counter(), "machine": self.psutil.cpu_times()}
        for name, procs in groups.items():
            per: dict[int, float] = {}
            for p in procs:
                with contextlib.suppress(self.psutil.Error):
                    t = p.cpu_times()
                    per[p.pid] = t.user + t.system
            out[name] = per
        return out

    async def wait_quiet(self, threshold: float, max_wait_s: float) -> float:
        """Wait (up to ``max_wait_s``) until other processes use less than ``threshold`` of the machine.

        Returns the share they used in the last second measured.
        """
        deadline = time.perf_counter() + max_wait_s
        announced = False
        while True:
            a = self.sample()
            await asyncio.sleep(1.0)
            d = self.delta(a, self.sample())
            share = d["other"] / (d["wall_s"] * (os.cpu_count() or 1))
            if share < threshold or time.perf_counter() >= deadline:
                if announced or share >= threshold:
                    log(f"other processes now use {share:.0%} of the machine; "
                        + ("going on" if share < threshold else "going on anyway (--wait-quiet ran out)"))
                return share
            if not announced:
                log(f"other processes use {share:.0%} of the machine (> {threshold:.0%}); "
                    f"waiting up to {max_wait_s:g} s for quiet")
                announced = True

    def delta(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        res: dict[str, float] = {"wall_s": b["t"] - a["t"]}
        for name in ("client", "server", "postgres", "redis"):
            res[name] = sum(v - a[name].get(pid, 0.0) for pid, v in b[name].items())
        ma, mb = a["machine"], b["machine"]
        idle = (mb.idle - ma.idle) + (getattr(mb, "iowait", 0.0) - getattr(ma, "iowait", 0.0))
        total = sum(mb) - sum(ma)
        res["machine_busy"] = 1.0 - idle / total if total > 0 else 0.0
        ours = res["client"] + res["server"] + res["postgres"] + res["redis"]
        res["other"] = max(0.0, (total - idle) - ours)  # CPU seconds of everything else on the machine
        return res


# --- a small HTTP/1.1 client on asyncio streams -------------------------------------------


KEEP_ALIVE_S = 4.0  # uvicorn closes a keep-alive connection after 5 s idle (--timeout-keep-alive)
RETRYABLE = (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)


class Conn:
    __slots__ = ("closed", "last_used", "local_port", "reader", "uses", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.uses = 0
        self.last_used = time.perf_counter()
        sock = writer.get_extra_info("socket")
        self.local_port = int(sock.getsockname()[1]) if sock is not None else 0

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    @property
    def stale(self) -> bool:
        return (self.closed or self.reader.at_eof() or self.writer.is_closing()
                or time.perf_counter() - self.last_used > KEEP_ALIVE_S)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            n = int(lower[i + 17 : lower.index(b"\r\n", i + 2)])
            body = await self.reader.readexactly(n) if n else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            self.closed = True
        if b"\r\nconnection: close" in lower:
            self.closed = True
        self.last_used = time.perf_counter()
        self.uses += 1
        return status, body

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


class Balancer:
    """Opens keep-alive connections so that each uvicorn worker holds an equal share of them.

    uvicorn's workers share one listening socket; connections opened in a burst are mostly
    accepted by whichever worker wakes first, so a client pool can end up on one worker while
    the other idles (measured: 16/0). A load balancer spreading connections evenly is what a
    real deployment would have; this emulates it (``--no-balance`` shows the naive case).
    """

    def __init__(self, server: Server | None) -> None:
        self.server = server

    def owners(self) -> dict[int, int]:
        """client local port -> worker pid, for the connections the workers have accepted."""
        import psutil

        out: dict[int, int] = {}
        if self.server is None:
            return out
        for pid in self.server.worker_pids():
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections("tcp"):
                    if c.status == "ESTABLISHED" and c.laddr.port == self.server.port and c.raddr:
                        out[c.raddr.port] = pid
        return out

    async def open(self, port: int, n: int) -> list[Conn]:
        workers = self.server.worker_pids() if self.server is not None else []
        if len(workers) < 2:
            return list(await asyncio.gather(*(Conn.open(port) for _ in range(n))))
        quota = math.ceil(n / len(workers))
        counts = dict.fromkeys(workers, 0)
        kept: list[Conn] = []
        spare: list[Conn] = []
        for _ in range(n * 20):
            if len(kept) >= n:
                break
            c = await Conn.open(port)
            owner = None
            for _ in range(50):  # until a worker has accepted it
                await asyncio.sleep(0.002)
                owner = self.owners().get(c.local_port)
                if owner is not None:
                    break
            if owner is not None and counts.get(owner, quota) < quota:
                counts[owner] += 1
                kept.append(c)
            else:
                spare.append(c)
        for c in spare:
            c.close()
        kept.extend([await Conn.open(port) for _ in range(n - len(kept))])
        return kept


class Pool:
    """Keep-alive connections used round-robin; a request waits for one when ``max_size`` are busy."""

    def __init__(self, port: int, max_size: int) -> None:
        self.port = port
        self.max_size = max_size
        self.idle: collections.deque[Conn] = collections.deque()
        self.count = 0
        self.waiters: asyncio.Queue[Conn | None] = asyncio.Queue()
        self.nwaiting = 0
        self.opened = 0
        self.retries = 0

    async def fill(self, balancer: Balancer, n: int) -> None:
        conns = await balancer.open(self.port, n)
        self.count += len(conns)
        self.opened += len(conns)
        self.idle.extend(conns)

    async def _new(self) -> Conn:
        self.count += 1
        self.opened += 1
        try:
            return await Conn.open(self.port)
        except BaseException:
            self.count -= 1
            raise

    async def acquire(self) -> Conn:
        while self.idle:
            conn = self.idle.popleft()
            if not conn.stale:
                return conn
            conn.close()
            self.count -= 1
        if self.count < self.max_size:
            return await self._new()
        self.nwaiting += 1
        try:
            conn = await self.waiters.get()
        finally:
            self.nwaiting -= 1
        return await self._new() if conn is None else conn

    def release(self, conn: Conn) -> None:
        if conn.closed:
            self.count -= 1
            if self.nwaiting:
                self.waiters.put_nowait(None)
            return
        if self.nwaiting:
            self.waiters.put_nowait(conn)
        else:
            self.idle.append(conn)

    async def request(self, data: bytes, timeout_s: float) -> tuple[int, bytes, float]:
        """Send on a pooled connection; once more on a new one if a kept-alive one was closed under us."""
        conn = await self.acquire()
        sent = time.perf_counter()
        reused = conn.uses > 0
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    status, body = await conn.request(data)
                except RETRYABLE:
                    if not reused:
                        raise
                    conn.close()
                    self.release(conn)
                    self.retries += 1
                    conn = await self._new()
                    status, body = await conn.request(data)
        except BaseException:
            conn.close()
            self.release(conn)
            raise
        self.release(conn)
        return status, body, sent

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_STATUS_RE = re.compile(rb'"status":\s*"([a-z_]+)"')


def is_ok(outcome: str) -> bool:
    """Outcomes are a decision status (or "ok"); errors are "http-<code>" or an exception's class name."""
    return not (outcome.startswith(("http-", "connect-")) or outcome[:1].isupper())


def outcome_of(status: int, body: bytes) -> str:
    if 200 <= status < 300:
        m = _STATUS_RE.search(body)
        return m.group(1).decode() if m else "ok"
    return f"http-{status}"


# --- workloads ----------------------------------------------------------------------------

GENRES = ["metal", "ambient", "jazz", "pop", "classical", "lofi"]
DEVICES = ["phone", "speaker", "laptop"]


def decision_body(rng: random.Random, key: str) -> dict[str, Any]:
    """Like the demo's nightly-recs traffic: Beta(5, 2) confidence, so ~1 in 5 goes to a person at 0.6."""
    return {
        "subject": f"user-{rng.randint(1, 50_000)}",
        "context": {"hour": rng.randint(0, 23), "device": rng.choice(DEVICES)},
        "features": {"tempo": round(rng.uniform(60, 180), 1), "genre": rng.choice(GENRES)},
        "prediction": {
            "output": {"items": [f"t{rng.randint(1, 500)}" for _ in range(3)]},
            "confidence": round(rng.betavariate(5, 2), 3),
            "model": "collab-v3",
        },
        "idempotency_key": key,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[idx]


def summarize(latencies_s: Iterable[float]) -> dict[str, float]:
    v = sorted(latencies_s)
    return {
        "n": len(v),
        "p50_ms": percentile(v, 50) * 1e3,
        "p90_ms": percentile(v, 90) * 1e3,
        "p99_ms": percentile(v, 99) * 1e3,
        "p999_ms": percentile(v, 99.9) * 1e3,
        "max_ms": (v[-1] if v else float("nan")) * 1e3,
        "mean_ms": (sum(v) / len(v) if v else float("nan")) * 1e3,
    }


@dataclass
class PhaseResult:
    name: str
    kind: str  # open / closed / batch / copy
    params: dict[str, Any]
    role: str = ""  # bare / floor / decision (open and closed loop), batch / copy
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    rate: float = 0.0  # achieved requests (or rows) per second
    latency: dict[str, float] = field(default_factory=dict)  # from the scheduled send time
    service: dict[str, float] = field(default_factory=dict)  # from the actual send time
    send_lag: dict[str, float] = field(default_factory=dict)  # actual send - scheduled send
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Raw (due, sent, done, outcome) records of an open-loop block, for merging blocks; not saved.
    measured: list[tuple[float, float, float, str]] = field(default_factory=list, repr=False)


def merge_blocks(name: str, blocks: list[PhaseResult], params: dict[str, Any]) -> PhaseResult:
    """One phase from interleaved blocks of the same kind: latencies pooled, rates and CPU summed."""
    measured = [r for b in blocks for r in b.measured]
    res = _collect(name, "open", measured, params)
    spans = [max(r[2] for r in b.measured) - min(r[0] for r in b.measured) for b in blocks if b.measured]
    res.rate = res.ok / sum(spans) if sum(spans) > 0 else 0.0
    for key in ("connections_opened", "retried_on_closed_keepalive"):
        res.extra[key] = sum(b.extra.get(key, 0) for b in blocks)
    if blocks and "connections_per_worker" in blocks[0].extra:
        res.extra["connections_per_worker"] = blocks[0].extra["connections_per_worker"]
    cpus = [b.cpu for b in blocks if b.cpu]
    if cpus:
        wall = sum(c["wall_s"] for c in cpus)
        res.cpu = {k: sum(c[k] for c in cpus) for k in cpus[0] if k != "machine_busy"}
        res.cpu["machine_busy"] = sum(c["machine_busy"] * c["wall_s"] for c in cpus) / wall if wall else 0.0
    res.extra["blocks"] = len(blocks)
    res.extra["block_p50_ms"] = [b.latency.get("p50_ms") for b in blocks]
    return res


def _scheduler(loop: asyncio.AbstractEventLoop, start: Callable[[int, float], None], t0: float, n: int,
               interval: float, stop: threading.Event) -> None:
    """A timer thread: nanosleep-precise, unlike the event loop's millisecond timers."""
    perf, sleep = time.perf_counter, time.sleep
    for i in range(n):
        if stop.is_set():
            return
        due = t0 + i * interval
        wait = due - perf()
        if wait > 0:
            sleep(wait)
        loop.call_soon_threadsafe(start, i, due)


async def open_loop(name: str, port: int, requests: list[bytes], rate: float, warmup_s: float, duration_s: float,
                    meter: CpuMeter | None, balancer: Balancer, timeout_s: float = 30.0, pool_size: int = 32,
                    pool_max: int = 256, probe: Callable[[], Any] | None = None) -> PhaseResult:
    """Send ``requests`` at ``rate``/s on schedule, whatever the server's pace (open loop)."""
    loop = asyncio.get_running_loop()
    n_warm = int(rate * warmup_s)
    n = n_warm + int(rate * duration_s)
    assert len(requests) >= n
    interval = 1.0 / rate
    pool = Pool(port, pool_max)
    await pool.fill(balancer, pool_size)
    records: list[tuple[float, float, float, str] | None] = [None] * n
    inflight: set[asyncio.Task[None]] = set()
    all_started = asyncio.Event()
    started = 0

    async def one(i: int, due: float) -> None:
        try:
            status, body, sent = await pool.request(requests[i], timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            now = time.perf_counter()
            records[i] = (due, now, now, type(exc).__name__)
            return
        records[i] = (due, sent, time.perf_counter(), outcome_of(status, body))

    def start(i: int, due: float) -> None:
        nonlocal started
        task = loop.create_task(one(i, due))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        started += 1
        if started == n:
            all_started.set()

    # Who holds which connection: asked before the schedule starts (psutil is slow and would stall the loop).
    probed = await asyncio.to_thread(probe) if probe is not None else None
    stop = threading.Event()
    t0 = time.perf_counter() + 0.05
    cpu_a: dict[str, Any] | None = None
    thread = threading.Thread(target=_scheduler, args=(loop, start, t0, n, interval, stop), daemon=True)
    thread.start()
    try:
        if meter is not None:
            await asyncio.sleep(max(0.0, t0 + warmup_s - time.perf_counter()))
            cpu_a = await asyncio.to_thread(meter.sample)
        await all_started.wait()
        if inflight:
            await asyncio.wait(set(inflight))
    finally:
        stop.set()
        thread.join()
        pool.close()
    cpu_b = await asyncio.to_thread(meter.sample) if meter is not None else None

    measured = [r for r in records[n_warm:] if r is not None]
    res = _collect(name, "open", measured, {"rate": rate, "warmup_s": warmup_s, "duration_s": duration_s})
    res.measured = measured
    if measured:
        span = max(r[2] for r in measured) - min(r[0] for r in measured)
        res.rate = res.ok / span if span > 0 else 0.0
    res.extra["connections_opened"] = pool.opened
    res.extra["retried_on_closed_keepalive"] = pool.retries
    if probed is not None:
        res.extra["connections_per_worker"] = probed
    if meter is not None and cpu_a is not None and cpu_b is not None:
        res.cpu = meter.delta(cpu_a, cpu_b)
    return res


def _collect(name: str, kind: str, measured: list[tuple[float, float, float, str]],
             params: dict[str, Any]) -> PhaseResult:
    res = PhaseResult(name, kind, params)
    res.sent = len(measured)
    for r in measured:
        bucket = res.outcomes if is_ok(r[3]) else res.error_kinds
        bucket[r[3]] = bucket.get(r[3], 0) + 1
    res.ok = sum(res.outcomes.values())
    res.errors = res.sent - res.ok
    # Latency over every request (errors included: a fast 500 must not flatter the numbers).
    res.latency = summarize(r[2] - r[0] for r in measured)
    res.service = summarize(r[2] - r[1] for r in measured)
    res.send_lag = summarize(r[1] - r[0] for r in measured)
    return res


async def closed_loop(name: str, port: int, make: Callable[[int], bytes], clients: int, warmup_s: float,
                      duration_s: float, meter: CpuMeter | None, balancer: Balancer,
                      probe: Callable[[], Any] | None = None) -> PhaseResult:
    """``clients`` connections, each sending its next request as soon as the last one is answered."""
    counter = iter(range(10**9))
    conns = await balancer.open(port, clients)
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    records: list[tuple[float, float, float, str]] = []

    async def client(conn: Conn) -> None:
        try:
            while True:
                data = make(next(counter))
                sent = time.perf_counter()
                if sent >= t_end:
                    return
                try:
                    status, body = await asyncio.wait_for(conn.request(data), 30)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    records.append((sent, sent, time.perf_counter(), type(exc).__name__))
                    conn.close()
                    conn = await Conn.open(port)
                    continue
                if sent >= t_measure:
                    records.append((sent, sent, time.perf_counter(), outcome_of(status, body)))
                if conn.closed:
                    conn = await Conn.open(port)
        finally:
            conn.close()

    cpu: dict[str, float] = {}
    probed: list[Any] = []

    async def metered() -> None:
        await asyncio.sleep(warmup_s)
        if probe is not None:
            probed.append(await asyncio.to_thread(probe))
        if meter is None:
            return
        a = await asyncio.to_thread(meter.sample)
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        cpu.update(meter.delta(a, await asyncio.to_thread(meter.sample)))

    await asyncio.gather(metered(), *(client(c) for c in conns))
    res = _collect(name, "closed", records, {"clients": clients, "warmup_s": warmup_s, "duration_s": duration_s})
    # Throughput: answers completed within the measured window.
    res.rate = sum(1 for r in records if r[2] <= t_end and is_ok(r[3])) / duration_s
    res.send_lag = {}
    res.cpu = cpu
    if probed:
        res.extra["connections_per_worker"] = probed[0]
    return res


def _sum_cpu(cpus: list[dict[str, float]]) -> dict[str, float]:
    cpus = [c for c in cpus if c]
    if not cpus:
        return {}
    wall = sum(c["wall_s"] for c in cpus)
    out = {k: sum(c[k] for c in cpus) for k in cpus[0] if k != "machine_busy"}
    out["machine_busy"] = sum(c["machine_busy"] * c["wall_s"] for c in cpus) / wall if wall else 0.0
    return out


class BatchLoad:
    """Batch requests built up front; ``run(n)`` sends the next ``n`` and times them."""

    def __init__(self, port: int, key: str, batches: int, size: int, concurrency: int, rng: random.Random) -> None:
        self.port, self.size, self.concurrency = port, size, concurrency
        self.path = f"/api/v1/systems/{SLUG}/decisions/batch"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.bodies = [
            json.dumps({"items": [decision_body(rng, f"batch-{b}-{i}-{uuid.uuid4().hex[:8]}") for i in range(size)]},
                       separators=(",", ":")).encode()
            for b in range(batches)
        ]
        self.queue = [http_request("POST", self.path, port, self.headers, body) for body in reversed(self.bodies)]
        self.warm_body = json.dumps(
            {"items": [decision_body(rng, f"batch-warm-{i}-{uuid.uuid4().hex[:8]}") for i in range(size)]}
        ).encode()
        self.times: list[float] = []
        self.answers: list[tuple[int, bytes]] = []
        self.walls: list[float] = []
        self.cpus: list[dict[str, float]] = []

    async def warm(self) -> None:
        """One batch (not counted) to warm the code path."""
        conn = await Conn.open(self.port)
        try:
            status, _ = await asyncio.wait_for(
                conn.request(http_request("POST", self.path, self.port, self.headers, self.warm_body)), 120)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            status = type(exc).__name__
        finally:
            conn.close()
        if status != 200:
            log(f"warning: the warm-up batch answered {status}")

    async def run(self, n: int, meter: CpuMeter | None) -> None:
        batch_requests = [self.queue.pop() for _ in range(min(n, len(self.queue)))][::-1]

        async def worker() -> None:
            c: Conn | None = None
            try:
                while batch_requests:
                    data = batch_requests.pop()
                    t = time.perf_counter()
                    try:
                        if c is None or c.closed:
                            c = await Conn.open(self.port)
                        self.answers.append(await asyncio.wait_for(c.request(data), 120))
                    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                        # A dropped or timed-out request is an answer too: all its items are errors.
                        self.answers.append((0, type(exc).__name__.encode()))
                        if c is not None:
                            c.close()
                        c = None
                    self.times.append(time.perf_counter() - t)
            finally:
                if c is not None:
                    c.close()

        a = meter.sample() if meter else None
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.walls.append(time.perf_counter() - t0)
        self.cpus.append(meter.delta(a, meter.sample()) if meter and a else {})

    def result(self) -> PhaseResult:
        # Answers are read after the clock stops: the client's own JSON parsing (~4 ms per 1000-item
        # answer) is not the server's time, as making the rows is not counted for the COPY baseline.
        outcomes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for status, body in self.answers:
            if status != 200:
                kind = f"http-{status}" if status else body.decode()
                errors[kind] = errors.get(kind, 0) + self.size
                continue
            try:
                items = json.loads(body)["results"]
            except (ValueError, KeyError, TypeError):
                errors["unreadable-answer"] = errors.get("unreadable-answer", 0) + self.size
                continue
            for item in items:
                k = item.get("status") or item.get("error", {}).get("code", "?")
                if "error" in item:
                    errors[k] = errors.get(k, 0) + 1
                else:
                    outcomes[k] = outcomes.get(k, 0) + 1
        batches = len(self.answers)
        res = PhaseResult(f"batch POST {batches}x{self.size}", "batch",
                          {"batches": batches, "size": self.size, "concurrency": self.concurrency})
        res.cpu = _sum_cpu(self.cpus)
        res.sent = batches * self.size
        res.ok = sum(outcomes.values())
        res.errors = sum(errors.values())
        res.outcomes, res.error_kinds = outcomes, errors
        wall = sum(self.walls)
        res.rate = res.ok / wall if wall else 0.0
        res.latency = summarize(self.times)
        res.extra = {"wall_s": wall, "request_bytes": sum(len(b) for b in self.bodies) // max(1, len(self.bodies)),
                     "blocks": len(self.walls)}
        return res


def copy_rows(system_id: int, policy_version: int, n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """Rows with every column the ORM writes, as the gate would have filled them."""
    rows = []
    for i in range(n):
        body = decision_body(rng, f"copy-{i}-{uuid.uuid4().hex[:8]}")
        pred = body["prediction"]
        conf = pred["confidence"]
        now = datetime.now(UTC)
        released = conf >= SYSTEM_SPEC["confidence_threshold"]
        reasons = [f"confidence {conf:.2f} ≥ threshold 0.60"] if released else [
            f"confidence {conf:.2f} < threshold 0.60: a person decides"]
        request_hash = hashlib.sha256(json.dumps({k: v for k, v in body.items() if k != "idempotency_key"},
                                                 sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        rows.append((
            uuid.uuid4(), system_id, body["subject"], json.dumps(body["context"]), json.dumps(body["features"]),
            json.dumps(pred), pred["model"], json.dumps(pred["output"]) if released else None, conf,
            "released" if released else "pending_review", "auto" if released else "human", json.dumps(reasons),
            released and rng.random() < SYSTEM_SPEC["audit_sample_rate"], body["idempotency_key"], request_hash,
            policy_version, datetime.fromisoformat(body["occurred_at"]), now, now if released else None, None,
        ))
    return rows


class CopyLoad:
    """The baseline: the same kind of rows by raw psycopg COPY into the same table, in batches."""

    SQL = f"COPY oversight_decision ({', '.join(DECISION_COLUMNS)}) FROM STDIN"

    def __init__(self, db_url: str, system_id: int, policy_version: int, batches: int, size: int,
                 rng: random.Random) -> None:
        import psycopg

        self.size, self.batches = size, batches
        t = time.perf_counter()
        self.rows = copy_rows(system_id, policy_version, batches * size, rng)
        self.gen_s = time.perf_counter() - t
        self.done = 0
        self.conn = psycopg.connect(db_url)
        # Warm the connection and the table's pages the same way the API's warm-up batch did.
        self.conn.execute("SELECT count(*) FROM oversight_decision")
        self.conn.commit()
        self.times: list[float] = []
        self.walls: list[float] = []
        self.cpus: list[dict[str, float]] = []

    def run(self, n: int, meter: CpuMeter | None) -> None:
        a = meter.sample() if meter else None
        t0 = time.perf_counter()
        for _ in range(min(n, self.batches - self.done)):
            b = self.done
            tb = time.perf_counter()
            with self.conn.cursor() as cur, cur.copy(self.SQL) as copy:
                for row in self.rows[b * self.size : (b + 1) * self.size]:
                    copy.write_row(row)
            self.conn.commit()
            self.times.append(time.perf_counter() - tb)
            self.done += 1
        self.walls.append(time.perf_counter() - t0)
        self.cpus.append(meter.delta(a, meter.sample()) if meter and a else {})

    def result(self) -> PhaseResult:
        stored = self.conn.execute(
            "SELECT count(*) FROM oversight_decision WHERE idempotency_key LIKE 'copy-%'"
        ).fetchone()
        self.conn.close()
        res = PhaseResult(f"raw COPY {self.done}x{self.size}", "copy", {"batches": self.done, "size": self.size})
        res.sent = self.done * self.size
        res.ok = int(stored[0]) if stored else 0
        res.errors = res.sent - res.ok
        wall = sum(self.walls)
        res.rate = res.ok / wall if wall else 0.0
        res.latency = summarize(self.times)
        res.cpu = _sum_cpu(self.cpus)
        res.extra = {"wall_s": wall, "row_generation_s": self.gen_s, "blocks": len(self.walls)}
        return res


async def bulk_phases(args: argparse.Namespace, server: Server, setup: dict[str, Any], db_url: str,
                      meter: CpuMeter | None) -> list[PhaseResult]:
    """Batches through the API and the raw COPY baseline, in interleaved blocks (ABBA order), so
    both see the same machine: this VM's speed drifts by 20-30 % within a minute."""
    batches = BatchLoad(server.port, setup["key"], args.batches, args.batch_size, args.batch_concurrency,
                        random.Random(args.seed))
    copies = CopyLoad(db_url, setup["id"], setup["policy_version"], args.batches, args.batch_size,
                      random.Random(args.seed + 1))
    await batches.warm()
    analyze(db_url)
    k = max(1, min(args.bulk_blocks, args.batches))
    per_block = [args.batches // k + (1 if i < args.batches % k else 0) for i in range(k)]
    log(f"phases 5-6/6: {args.batches} batches of {args.batch_size} through the API and {args.batches} raw psycopg "
        f"COPYs of {args.batch_size} rows, in {k} interleaved blocks")
    for block, n in enumerate(per_block):
        for kind in ("batch", "copy") if block % 2 == 0 else ("copy", "batch"):
            if kind == "batch":
                await batches.run(n, meter)
            else:
                copies.run(n, meter)
    results = [batches.result(), copies.result()]
    results[0].role, results[1].role = "batch", "copy"
    return results


def analyze(db_url: str) -> None:
    """Refresh the planner's statistics of the bench database, as autovacuum does on its own.

    Some PostgreSQL servers run with autovacuum off (this machine's does): on a database created
    minutes ago the planner then believes the decisions table is nearly empty, and the batch's
    idempotency-key lookup (1 ms on an analysed table) scans every row of the system instead
    (20-30 ms per 1000-item batch, growing with the table)."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


# --- the run ------------------------------------------------------------------------------


def connections_per_worker(server: Server) -> dict[str, int]:
    import psutil

    out: dict[str, int] = {}
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            conns = psutil.Process(pid).net_connections("tcp")
            out[str(pid)] = sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr.port == server.port)
    return out


# The open-loop kinds, in the order of the first block (see block_orders).
OPEN_KINDS = ("bare", "floor", "decision", "plain")
#: The decision again, its body read by a2wsgi's own bridge (``oversight.benchviews.body_switch``):
#: what the body read on the event loop (``oversight.wsgibridge``) gains, measured in the same blocks.
PLAIN_BODY_HEADERS = {"X-Oversight-Bench-Body": "plain"}


def block_orders(kinds: tuple[str, ...], blocks: int) -> list[tuple[str, ...]]:
    """The order of the kinds in each interleaved block: the rotations of ``kinds``, then the
    rotations of its reverse (for two kinds: AB, BA, AB, ...; for three: abc, bca, cab, cba, bac,
    acb). Over len(kinds) * 2 blocks each kind runs in each position equally often, and just
    after each other kind equally often, so a slow spell of the machine, or the leftover work of
    the kind before, lands on every kind alike."""
    n = len(kinds)
    rotations = [kinds[i:] + kinds[:i] for i in range(n)]
    back = kinds[::-1]
    rotations += [back[i:] + back[:i] for i in range(n)]
    seen: list[tuple[str, ...]] = []
    for r in rotations:  # two kinds: AB, BA, BA, AB -> AB, BA
        if r not in seen:
            seen.append(r)
    return [seen[b % len(seen)] for b in range(blocks)]


def _answers(res: PhaseResult) -> str:
    counts = {**res.outcomes, **res.error_kinds}
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "no answers"


async def run_load(args: argparse.Namespace, server: Server, setup: dict[str, Any],
                   meter: CpuMeter | None) -> list[PhaseResult]:
    port = server.port
    rng = random.Random(args.seed)
    auth = {"Authorization": f"Bearer {setup['key']}"}
    results: list[PhaseResult] = []

    async def quiet() -> None:
        if meter is not None and args.wait_quiet > 0:
            await meter.wait_quiet(args.quiet_threshold / 100, args.wait_quiet)
        else:
            await asyncio.sleep(1)

    def probe() -> dict[str, int]:
        return connections_per_worker(server)

    def body_req(target: str, tag: str, extra: dict[str, str] | None = None) -> Callable[[int], bytes]:
        """Decision bodies with unique idempotency keys, to ``target``; the floor gets the very same
        kind of request as the endpoint (its Authorization header included, though it ignores it)."""
        headers = {**auth, **(extra or {})}

        def make(i: int) -> bytes:
            body = json.dumps(decision_body(rng, f"{tag}-{i}-{uuid.uuid4().hex[:12]}"), separators=(",", ":"))
            return http_request("POST", target, port, headers, body.encode())

        return make

    decision_req = functools.partial(body_req, DECISION_PATH)
    floor_req = functools.partial(body_req, FLOOR_PATH)

    # Prime every worker (imports, URL resolver, schema caches, the floor's system lookup) before
    # anything is measured. An endpoint that errors is reported, not fatal: the baselines still run.
    balancer = Balancer(server if args.balance else None)
    for kind, make_prime in (("decision", decision_req("prime")), ("floor", floor_req("prime-floor")),
                             ("plain", decision_req("prime-plain", PLAIN_BODY_HEADERS))):
        primed = await open_loop(f"prime {kind}", port, [make_prime(i) for i in range(100)], 50, 0, 2, None,
                                 balancer)
        if primed.errors or not primed.sent:
            log(f"warning: priming the {kind} path: {primed.errors} of {primed.sent} requests failed "
                f"({_answers(primed)}); going on, its figures will show the errors")

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        bare = http_request("GET", BARE_PATH, port, {})
        makers: dict[str, Callable[[int], bytes]] = {
            "bare": lambda i: bare, "floor": floor_req("floor"), "decision": decision_req("open"),
            "plain": decision_req("plain", PLAIN_BODY_HEADERS),
        }
        labels = {
            "bare": f"bare GET {BARE_PATH}", "floor": f"floor POST {FLOOR_PATH}", "decision": "decision POST",
            "plain": "decision POST, body read by a2wsgi",
        }
        # Interleaved blocks in rotating order: all three see the same machine, so a neighbour's
        # load on this shared host moves every figure, not their ratios.
        k = max(1, args.blocks)
        block_s = args.duration / k
        n_block = int(args.rate * (args.warmup / k + block_s)) + 1
        log(f"phases 1-3/6: bare GET {BARE_PATH}, floor POST {FLOOR_PATH} (one INSERT), POST decisions, and POST "
            "decisions with the body read by a2wsgi's own bridge, at "
            f"{args.rate:g}/s each, {k} interleaved blocks of {block_s:g}s each (+{args.warmup / k:g}s warm-up "
            "per block), order rotating per block")
        blocks: dict[str, list[PhaseResult]] = {kind: [] for kind in OPEN_KINDS}
        await quiet()
        for order in block_orders(OPEN_KINDS, k):
            for kind in order:
                blocks[kind].append(await open_loop(
                    f"{kind} block", port, [makers[kind](i) for i in range(n_block)], args.rate, args.warmup / k,
                    block_s, meter, balancer, pool_size=args.pool, probe=probe,
                ))
        params = {"rate": args.rate, "warmup_s": args.warmup, "duration_s": args.duration, "blocks": k,
                  "order": ["".join(kind[0] for kind in o) for o in block_orders(OPEN_KINDS, k)]}
        for kind in OPEN_KINDS:
            res = merge_blocks(f"{labels[kind]} @{args.rate:g}/s", blocks[kind], params)
            res.role = kind
            results.append(res)
        await quiet()

        log(f"phase 4/6: POST decisions closed loop, {args.clients} clients for {args.closed_duration:g}s")
        r = await closed_loop(f"decision POST closed c={args.clients}", port, decision_req("closed"), args.clients,
                              1.0 if not args.quick else 0.5, args.closed_duration, meter, balancer, probe=probe)
        r.role = "decision"
        results.append(r)
        await quiet()
    finally:
        gc.enable()
        gc.unfreeze()
    return results


def fmt_ms(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def render(results: dict[str, Any]) -> str:
    ph = {p["kind"] + ":" + str(i): p for i, p in enumerate(results["phases"])}
    cfg = results["config"]
    lines = [
        "",
        f"Oversight bench  {results['started_at']}  {cfg['cpus']} CPUs  python {cfg['python']}",
        f"server: uvicorn --workers {cfg['workers']} (uvloop/httptools), DATABASE_POOL_MAX={cfg['db_pool_max']}, "
        f"db {cfg['database']}  redis prefix {cfg['redis_prefix']}  (client and server share the cores)",
        "",
        f"{'phase':<38}{'sent':>7}{'ok':>7}{'err':>5}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}",
    ]
    for p in ph.values():
        if p["kind"] in ("open", "closed"):
            lat = p["latency"]
            lines.append(
                f"{p['name']:<38}{p['sent']:>7}{p['ok']:>7}{p['errors']:>5}{p['rate']:>9.1f}"
                f"{fmt_ms(lat['p50_ms']):>9}{fmt_ms(lat['p90_ms']):>9}{fmt_ms(lat['p99_ms']):>9}"
                f"{fmt_ms(lat['max_ms']):>9}"
            )
    lines.append("")
    lines.append(f"{'bulk':<38}{'rows':>7}{'ok':>7}{'err':>5}{'rows/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
                 f"{'max ms':>9}   (per 1000-row request / COPY+commit)")
    for p in ph.values():
        if p["kind"] in ("batch", "copy"):
            lat = p["latency"]
            lines.append(
                f"{p['name']:<38}{p['sent']:>7}{p['ok']:>7}{p['errors']:>5}{p['rate']:>9.0f}"
                f"{fmt_ms(lat['p50_ms']):>9}{fmt_ms(lat['p90_ms']):>9}{fmt_ms(lat['p99_ms']):>9}"
                f"{fmt_ms(lat['max_ms']):>9}"
            )
    lines.append("")
    lines.append("open-loop latency is measured from each request's scheduled send time; "
                 "client send lag p50/p99 (ms):")
    for p in ph.values():
        if p["kind"] == "open":
            lines.append(f"  {p['name']:<36} {fmt_ms(p['send_lag']['p50_ms'])} / {fmt_ms(p['send_lag']['p99_ms'])}"
                         f"   service time from actual send p50/p99: {fmt_ms(p['service']['p50_ms'])} / "
                         f"{fmt_ms(p['service']['p99_ms'])}")
    for p in ph.values():
        spread = p.get("extra", {}).get("connections_per_worker")
        if spread:
            lines.append(f"  {p['name']:<36} keep-alive connections per uvicorn worker: "
                         + " / ".join(str(v) for v in spread.values()))
    lines.append("")
    lines.append(f"{'CPU ms per request (per row for bulk)':<40}{'client':>8}{'server':>8}{'postgres':>9}"
                 f"{'redis':>7}{'machine busy':>14}{'other procs':>13}")
    ncpu = cfg["cpus"] or 1
    noisy = False
    for p in ph.values():
        cpu = p.get("cpu") or {}
        done = p["ok"] + p["errors"] if p["kind"] in ("open", "closed") else p["ok"]
        if not cpu or not done:
            continue
        if p["kind"] == "closed":
            done = max(1, round(p["rate"] * cpu["wall_s"]))
        per = 1e3 / done
        lines.append(
            f"  {p['name']:<38}{cpu['client'] * per:>8.3f}{cpu['server'] * per:>8.3f}{cpu['postgres'] * per:>9.3f}"
            f"{cpu['redis'] * per:>7.3f}{cpu['machine_busy'] * 100:>13.0f}%"
            f"{cpu.get('other', 0.0) / max(cpu['wall_s'], 1e-9) / ncpu * 100:>12.0f}%"
        )
        noisy = noisy or cpu.get("other", 0.0) / max(cpu["wall_s"], 1e-9) / ncpu > 0.10
    if noisy:
        lines.append("  WARNING: other processes used >10 % of the machine during a phase: the numbers are disturbed")
    lines.append("")
    for p in results["phases"]:
        if p["kind"] == "copy":
            continue
        parts = [", ".join(f"{k}={v}" for k, v in sorted(p["outcomes"].items()))]
        if p["error_kinds"]:
            parts.append("errors: " + ", ".join(f"{k}={v}" for k, v in sorted(p["error_kinds"].items())))
        lines.append(f"  answers {p['name']}: {'; '.join(x for x in parts if x) or 'none'}")
    lines.append("")
    sm = results.get("summary") or {}
    if any(role in sm for role in OPEN_KINDS):
        lines.append(f"single decisions at {cfg['rate']:g}/s, open loop, {cfg.get('blocks', '?')} interleaved blocks"
                     f"{'p50 ms':>12}{'p99 ms':>9}{'errors':>8}{'p50 / bare':>12}")
        described = {
            "bare": f"bare view (GET {BARE_PATH})",
            "floor": f"floor: bare + 1 INSERT (POST {FLOOR_PATH})",
            "decision": "decision (POST .../decisions)",
            "plain": "decision, body read by a2wsgi's own bridge",
        }
        width = len(f"single decisions at {cfg['rate']:g}/s, open loop, {cfg.get('blocks', '?')} interleaved blocks")
        for role in OPEN_KINDS:
            f = sm.get(role)
            if f is None:
                continue
            over_bare = _ratio(f["p50_ms"], (sm.get("bare") or {}).get("p50_ms"))
            lines.append(f"  {described[role]:<{width - 2}}{fmt_ms(f['p50_ms']):>12}{fmt_ms(f['p99_ms']):>9}"
                         f"{f['errors']:>8}{_x(over_bare):>12}")
        lines.append(f"  decision p50 / floor p50: {_x(sm.get('decision_over_floor_p50'))}   "
                     f"(floor p50 / bare p50: {_x(sm.get('floor_over_bare_p50'))})")
        bf = sm.get("body_first")
        if bf and bf["blocks"]:
            lines += [
                "  custom piece: the request body read on the event loop (oversight.wsgibridge) against a2wsgi's "
                "own read from the request's thread",
                f"    gain per block (a2wsgi p50 - ours, ms): {' '.join(f'{g:+.2f}' for g in bf['gains_ms'])}",
                f"    median gain {bf['median_gain_ms']:+.2f} ms, faster in {bf['faster_blocks']} of {bf['blocks']} "
                "blocks; it stays only while it is faster in 3 blocks of 4 or more: "
                + ("yes" if bf["keep"] else "NO: drop it"),
            ]
        by_role = _open_by_role(results["phases"])
        for role in OPEN_KINDS:
            p = by_role.get(role)
            if p is not None and p["errors"]:
                kinds = ", ".join(f"{k}={v}" for k, v in sorted(p["error_kinds"].items()))
                lines.append(f"  WARNING: {described[role]} answered {p['errors']} errors of {p['sent']} ({kinds}): "
                             "its figures time the errors, they do not measure the endpoint")
        lines.append("")
    lines.append("targets")
    for t in results["targets"]:
        verdict = "    " if t["pass"] is None else "PASS" if t["pass"] else "FAIL"
        lines.append(f"  {verdict}  {t['name']:<46} {t['value']:>10}   (target {t['target']})")
    rp = results.get("row_preparation")
    if rp:
        orm, ours = rp["orm"], rp["bulk.row"]
        lines += [
            "",
            "custom piece: bulk.row against the ORM's get_db_prep_save, per 1000 rows, 8 ABBA blocks in one process",
            f"  ORM conversion   median {orm['median_ms']:.2f} ms  (blocks {orm['min_ms']:.2f}-{orm['max_ms']:.2f})",
            f"  bulk.row         median {ours['median_ms']:.2f} ms  (blocks {ours['min_ms']:.2f}-{ours['max_ms']:.2f})",
            f"  bulk.row takes {ours['median_ms'] / orm['median_ms']:.2f}x the ORM's time; it stays only while its "
            "slowest block beats the ORM's fastest: "
            + ("yes" if ours["max_ms"] < orm["min_ms"] else "NO: drop it"),
        ]
    lines.append("")
    return "\n".join(lines)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _open_by_role(phases: list[PhaseResult] | list[dict[str, Any]]) -> dict[str, Any]:
    """The open-loop phases by role (bare, floor, decision), and the batch and COPY phases."""
    out: dict[str, Any] = {}
    for p in phases:
        kind, role = (p["kind"], p.get("role", "")) if isinstance(p, dict) else (p.kind, p.role)
        if kind == "open" and role:
            out[role] = p
        elif kind in ("batch", "copy"):
            out[kind] = p
    return out


def summary(phases: list[PhaseResult]) -> dict[str, Any]:
    """The single-decision figures side by side: each kind's p50/p99/errors and the p50 ratios."""
    by = _open_by_role(phases)
    out: dict[str, Any] = {}
    for role in OPEN_KINDS:
        p = by.get(role)
        if p is not None:
            out[role] = {"path": {"bare": BARE_PATH, "floor": FLOOR_PATH, "decision": DECISION_PATH,
                                  "plain": DECISION_PATH}[role],
                         "p50_ms": p.latency.get("p50_ms"), "p99_ms": p.latency.get("p99_ms"), "sent": p.sent,
                         "errors": p.errors, "rate": p.rate}
    p50 = {role: out[role]["p50_ms"] for role in out}
    out["decision_over_bare_p50"] = _ratio(p50.get("decision"), p50.get("bare"))
    out["decision_over_floor_p50"] = _ratio(p50.get("decision"), p50.get("floor"))
    out["floor_over_bare_p50"] = _ratio(p50.get("floor"), p50.get("bare"))
    dec, plain = by.get("decision"), by.get("plain")
    if dec is not None and plain is not None:
        out["body_first"] = body_first_gain(dec.extra.get("block_p50_ms") or [], plain.extra.get("block_p50_ms") or [])
    return out


def body_first_gain(ours: list[float], plain: list[float]) -> dict[str, Any]:
    """What the body read on the event loop gains per block (a2wsgi's p50 minus ours, same block).
    It stays only while it is faster in at least three blocks of four, by a median gain above zero."""
    gains = [p - o for o, p in zip(ours, plain, strict=False) if _finite(o) and _finite(p)]
    faster = sum(g > 0 for g in gains)
    median = statistics.median(gains) if gains else None
    return {"gains_ms": gains, "median_gain_ms": median, "faster_blocks": faster, "blocks": len(gains),
            "keep": bool(gains) and median is not None and median > 0 and faster * 4 >= 3 * len(gains)}


def targets(phases: list[PhaseResult], rate: float) -> list[dict[str, Any]]:
    """PASS/FAIL (``pass`` None: reported, no target). A figure with errors behind it does not pass:
    latencies include the errors' (a fast 500 must not flatter the numbers)."""
    by = _open_by_role(phases)
    out: list[dict[str, Any]] = []
    bare, floor, dec = by.get("bare"), by.get("floor"), by.get("decision")

    def errs(*ps: PhaseResult) -> str:
        n = sum(p.errors for p in ps)
        return f" ({n} errors)" if n else ""

    if dec is not None:
        if bare is not None:
            ratio = _ratio(dec.latency.get("p50_ms"), bare.latency.get("p50_ms"))
            out.append({"name": "p50 decision / p50 bare view", "value": _x(ratio) + errs(dec, bare),
                        "target": f"<= {TARGET_P50_RATIO:.1f}x",
                        "pass": ratio is not None and ratio <= TARGET_P50_RATIO and dec.errors + bare.errors == 0,
                        "ratio": ratio})
        p99 = dec.latency.get("p99_ms")
        ok = _finite(p99) and p99 <= TARGET_P99_MS and dec.errors == 0 and dec.rate >= 0.95 * rate
        out.append({"name": f"p99 decision at {rate:g}/s (no errors, rate held)",
                    "value": (f"{p99:.1f} ms" if _finite(p99) else "-") + errs(dec),
                    "target": f"<= {TARGET_P99_MS:g} ms", "pass": ok, "p99_ms": p99 if _finite(p99) else None})
        if floor is not None:
            ratio = _ratio(dec.latency.get("p50_ms"), floor.latency.get("p50_ms"))
            out.append({"name": "p50 decision / p50 floor (bare + 1 INSERT)", "value": _x(ratio) + errs(dec, floor),
                        "target": "reported", "pass": None, "ratio": ratio})
    batch, copy = by.get("batch"), by.get("copy")
    if batch is not None and copy is not None:
        share = batch.rate / copy.rate if copy.rate else None
        out.append({"name": "batch decisions/s / raw COPY rows/s",
                    "value": ("-" if share is None else f"{share * 100:.1f} %") + errs(batch, copy),
                    "target": f">= {TARGET_BATCH_SHARE * 100:.0f} %",
                    "pass": share is not None and share >= TARGET_BATCH_SHARE and batch.errors == 0,
                    "share": share})
    return out


def _json_safe(v: Any) -> Any:
    """NaN (a phase with no answers) as null: the file stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0],
        epilog=(f"Open loop: the bare view (GET {BARE_PATH}), the floor (POST {FLOOR_PATH}: the bare view plus one "
                f"committed INSERT of a decision row), POST decisions, and POST decisions with the body read by "
                f"a2wsgi's own bridge (the custom piece's switch), each at --rate, in --blocks interleaved "
                f"blocks of rotating order. Targets: p50 decision <= {TARGET_P50_RATIO:g}x p50 bare view, p99 "
                f"decision <= {TARGET_P99_MS:g} ms (no errors, rate held), batch >= "
                f"{TARGET_BATCH_SHARE * 100:.0f} % of the raw COPY rate; p50 decision / p50 floor is reported. "
                "Results go to --output (bench/results/latest.json)."),
    )
    p.add_argument("--rate", type=float, default=200.0,
                   help="open-loop requests/s, the same for the bare view, the floor and decisions (default 200)")
    p.add_argument("--duration", type=float, default=15.0,
                   help="measured seconds per open-loop phase: each of bare, floor, decision, plain (default 15)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="unmeasured seconds per open-loop phase, spread over its blocks (default 3)")
    p.add_argument("--blocks", type=int, default=8,
                   help="interleaved blocks the bare, floor, decision and plain phases are split into, their order "
                        "rotating per block (default 8: each order of the rotations and of their reverse once)")
    p.add_argument("--closed-duration", type=float, default=10.0, help="closed-loop measured seconds (default 10)")
    p.add_argument("--clients", type=int, default=16, help="closed-loop concurrent clients (default 16)")
    p.add_argument("--pool", type=int, default=32, help="open-loop keep-alive connections opened up front (default 32)")
    p.add_argument("--no-balance", dest="balance", action="store_false",
                   help="do not spread the client's connections evenly over the uvicorn workers")
    p.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    p.add_argument("--db-pool-max", type=int, default=None,
                   help="DATABASE_POOL_MAX for the server (default: the app's default)")
    p.add_argument("--batches", type=int, default=20, help="batch requests of --batch-size items (default 20)")
    p.add_argument("--batch-size", type=int, default=1000, help="items per batch request (default 1000, the max)")
    p.add_argument("--batch-concurrency", type=int, default=1, help="concurrent batch requests (default 1)")
    p.add_argument("--bulk-blocks", type=int, default=10,
                   help="interleaved blocks of batches and COPYs, ABBA order (default 10: 2 of each per block)")
    p.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                   help="before each phase wait up to S seconds for other processes to calm down (0: don't)")
    p.add_argument("--quiet-threshold", type=float, default=10.0, metavar="PCT",
                   help="'quiet' means other processes use less than PCT %% of the machine (default 10)")
    p.add_argument("--seed", type=int, default=20260315)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 3 s per open-loop phase (1 s warm-up), 3 s closed loop, 3 batches")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json",
                   help="where the results go as JSON (default bench/results/latest.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.closed_duration = min(args.duration, 3.0), 1.0, min(args.closed_duration, 3.0)
        args.batches = min(args.batches, 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    environment = prepare_environment()
    setup = migrate_and_seed(environment)
    extra_env = {"DATABASE_POOL_MAX": str(args.db_pool_max)} if args.db_pool_max is not None else {}
    server = Server(environment, args.workers, extra_env)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    log(f"starting {' '.join(server.cmd[1:])}")
    server.start()
    phases: list[PhaseResult] = []
    try:
        try:
            meter: CpuMeter | None = CpuMeter(server, environment.database_url, environment.redis_url)
        except ImportError:
            meter = None
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            phases = runner.run(run_load(args, server, setup, meter))
            phases += runner.run(bulk_phases(args, server, setup, environment.database_url, meter))
    finally:
        rc = server.stop()
        log(f"uvicorn stopped (exit {rc})")
    log("row preparation: the ORM's conversion against bulk.row, 8 ABBA blocks, in one process")
    rowprep = row_preparation(environment, args.batch_size, args.seed + 2)

    try:
        import django

        versions = {"django": django.get_version()}
    except ImportError:
        versions = {}
    results = {
        "started_at": started_at,
        "config": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "workers": args.workers,
            "db_pool_max": args.db_pool_max or int(os.environ.get("DATABASE_POOL_MAX") or 10),
            "server_cmd": " ".join(server.cmd[1:]),
            "database": f"{BENCH_DB} ({'embedded' if environment.embedded else 'DATABASE_URL'})",
            "redis_prefix": BENCH_PREFIX,
            "settings": environment.env["DJANGO_SETTINGS_MODULE"],
            "rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup, "blocks": args.blocks,
            "bulk_blocks": args.bulk_blocks,
            "closed_clients": args.clients, "closed_duration_s": args.closed_duration,
            "batches": args.batches, "batch_size": args.batch_size, "batch_concurrency": args.batch_concurrency,
            "quick": args.quick, "seed": args.seed, **versions,
        },
        "phases": [{k: v for k, v in p.__dict__.items() if k != "measured"} for p in phases],
        "summary": summary(phases),
        "targets": targets(phases, args.rate),
        "row_preparation": rowprep,
    }
    print(render(results), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(_json_safe(results), indent=2, default=str, allow_nan=False))
    shown = args.output.relative_to(BASE_DIR) if args.output.is_relative_to(BASE_DIR) else args.output
    log(f"results written to {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
