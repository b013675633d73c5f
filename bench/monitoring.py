"""Monitoring bench (issue 8): one monitoring tick over many systems' stored decisions, from the
database to stored results.

A tick is what Celery beat runs every minute: ``dashboards.drift_job.run_all()`` then
``dashboards.performance_job.run_all()``, in this process, against a database of its own
(``oversight_bench_monitoring``, recreated per run; Redis prefix ``oversight-bench-monitoring``).

**Data.** ``--systems`` systems (time windows of one hour), each with a 10,000-row uploaded
reference (``dashboards.references.store_upload``: ``x`` normal, ``y`` log-normal, ``color`` of
three, ``prediction.confidence``) and ``--decisions`` stored decisions spread evenly over ``--days``
days that end an hour before the current hour: the same features (``x`` moved by 0.5 std in the
last tenth of the days, so drift alerts open), an output of three items of a 500-item catalogue
(popularity ∝ 1/rank^0.8), 50,000 subjects per system, ``created_at`` half a second at most after
``occurred_at``, UUIDv7 ids from ``created_at`` (as the gate makes them). ``--outcome-share`` of them
get an outcome (a 0/1 reward more likely at high confidence) observed 1 to 30 minutes later.
Rows are made in time order across all systems (as live traffic interleaves them) by a loader
process of its own (numpy, one text block per 20,000 rows) and written with ``COPY``, then the
database is analysed (autovacuum is off on this machine's PostgreSQL).

**Ticks**, each measured on its own:

1. *first*: no watermark yet, every window of every system is computed;
2. *steady*: after one more hour of decisions (and their outcomes) per system arrives with
   ``created_at`` = now: only the windows holding changes since the watermark (minus the jobs'
   5-minute overlap) are computed;
3. *nothing new*: the next tick, with no new rows. It still recomputes the windows holding the
   newest 5 minutes of changes (the overlap is counted back from the watermark, the newest
   ``created_at`` seen, not from the time of the last run): one window per system and job here.

Time windows cost per window and the cost of a window grows with its rows: to measure a smaller
database with the full size's windows, keep ``--decisions / (--days · 24)`` (1,389 for the issue's
1,000,000 over 30 days), e.g. ``--decisions 200000 --days 6``.

Measured per tick and per job: wall time, this process's CPU time, the CPU of the PostgreSQL
backends of the bench database and of every PostgreSQL process (psutil), the share of the
machine other processes used, SQL statements sent (and the time spent in ``execute``), blocks read
and hit (``pg_stat_database``), windows computed, results stored, and memory: this process's RSS
sampled every 10 ms (the tick's peak and its growth) and ``ru_maxrss`` (the lifetime peak; loading
runs in another process so it does not count). Also per system and per stored decision.

    python -m bench.monitoring [--systems 20] [--decisions 1000000] [--days 30] [--outcome-share 0.2] [--keep]

Environment: ``DATABASE_URL`` (any database on the server; the bench creates its own beside it)
and ``REDIS_URL``, or neither (the embedded servers under var/).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"
BENCH_DB = "oversight_bench_monitoring"
BENCH_PREFIX = "oversight-bench-monitoring"
WINDOW_SECONDS = 3600
REFERENCE_ROWS = 10_000
BLOCK_ROWS = 20_000  # rows generated (and written) at a time by the loader
SLAB_BLOCKS = 10  # blocks per transaction
ITEMS = 500
SUBJECTS = 50_000
MODEL = "rec-v3"
NULL = "\\N"
SHIFT = 0.5  # x moves by this many std in the last tenth of the days
# Disk per stored row with its indexes, measured with this bench's rows (the smoke run's sizes
# plus a margin): used only to refuse a run that would fill the disk.
BYTES_PER_DECISION = 650
BYTES_PER_OUTCOME = 170


def log(msg: str) -> None:
    print(f"[monitoring bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the rows --------------------------------------------------------------------------------------


def _timestamps(us: np.ndarray) -> list[str]:
    """Microseconds since the epoch as PostgreSQL timestamptz text."""
    return np.strings.add(np.datetime_as_string(us.astype("datetime64[us]"), unit="us"), "+00").tolist()


def _uuid7(created_us: np.ndarray, rng: np.random.Generator) -> list[str]:
    """UUIDv7 (48-bit ms timestamp, version, variant, random bits) as 32 hex digits (PostgreSQL takes them)."""
    n = created_us.size
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    ms = (created_us // 1000).astype(np.uint64)
    for i in range(6):
        b[:, i] = ((ms >> np.uint64(8 * (5 - i))) & np.uint64(0xFF)).astype(np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x70
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    h = b.tobytes().hex()
    return [h[i:i + 32] for i in range(0, 32 * n, 32)]


def _features(rng: np.random.Generator, n: int, shifted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    x = rng.normal(0.0, 1.0, n)
    if shifted is not None:
        x[shifted] += SHIFT
    return {
        "x": np.round(x, 4),
        "y": np.round(rng.lognormal(0.0, 0.5, n), 4),
        "color": np.array(["red", "green", "blue"])[rng.choice(3, n, p=[0.5, 0.3, 0.2])],
        "confidence": np.round(rng.beta(5.0, 2.0, n), 4),
    }


_POPULARITY = 1.0 / np.arange(1, ITEMS + 1) ** 0.8
_POPULARITY /= _POPULARITY.sum()


def make_block(rng: np.random.Generator, columns: list[str], system_ids: list[int], per_system: int,
               t_lo: int, t_hi: int, created_at: int | None, shift_from: int, outcome_share: float,
               observed_max: int) -> tuple[str, str, int, int]:
    """``per_system`` decisions of each system with ``occurred_at`` in [t_lo, t_hi) (µs), in time
    order, as COPY text in ``columns`` order, and their outcomes' COPY text. ``created_at`` None:
    each decision's own (≤ 0.5 s after it occurred), else that instant for every row."""
    system = np.repeat(np.asarray(system_ids, dtype=np.int64), per_system)
    n = system.size
    occurred = rng.integers(t_lo, t_hi, n)
    order = np.argsort(occurred, kind="stable")
    occurred, system = occurred[order], system[order]
    created = occurred + rng.integers(0, 500_000, n) if created_at is None else np.full(n, created_at)
    f = _features(rng, n, occurred >= shift_from)
    items = [[f"i{k}" for k in row] for row in rng.choice(ITEMS, size=(n, 3), p=_POPULARITY).tolist()]
    outputs = [f'{{"items": ["{a}", "{b}", "{c}"]}}' for a, b, c in items]
    confidence = f["confidence"].tolist()
    ids = _uuid7(created, rng)
    created_s = _timestamps(created)
    hashes = rng.bytes(32 * n).hex()
    values: dict[str, Any] = {
        "id": ids,
        "system_id": system.astype(str).tolist(),
        "subject": [f"u{k}" for k in rng.integers(0, SUBJECTS, n).tolist()],
        "context": itertools.repeat("{}"),
        "features": [f'{{"x": {x}, "y": {y}, "color": "{c}"}}'
                     for x, y, c in zip(f["x"].tolist(), f["y"].tolist(), f["color"].tolist(), strict=True)],
        "prediction": [f'{{"output": {o}, "confidence": {c}}}' for o, c in zip(outputs, confidence, strict=True)],
        "model": itertools.repeat(MODEL),
        "output": outputs,
        "confidence": [str(c) for c in confidence],
        "status": itertools.repeat("released"),
        "route": itertools.repeat("auto"),
        "reasons": itertools.repeat("[]"),
        "audit": itertools.repeat("f"),
        "idempotency_key": itertools.repeat(NULL),
        "request_hash": [hashes[i:i + 64] for i in range(0, 64 * n, 64)],
        "policy_version": itertools.repeat("1"),
        "occurred_at": _timestamps(occurred),
        "created_at": created_s,
        "released_at": created_s,
        "review": itertools.repeat(NULL),
    }
    unknown = [c for c in columns if c not in values]
    if unknown:
        raise SystemExit(f"the decision table has columns this bench does not fill: {unknown}")
    decisions = "\n".join(map("\t".join, zip(*(values[c] for c in columns), strict=False))) + "\n"

    chosen = np.flatnonzero(rng.random(n) < outcome_share)
    m = chosen.size
    reward = (rng.random(m) < 0.2 + 0.6 * f["confidence"][chosen]).astype(np.int64)
    observed = np.minimum(occurred[chosen] + rng.integers(60_000_000, 1_800_000_000, m), observed_max)
    if created_at is None:
        o_created = np.minimum(observed + rng.integers(0, 1_000_000, m), observed_max)
    else:
        o_created = np.full(m, created_at)
    outcomes = "".join(
        f"{ids[i]}\t{NULL}\t{r}\t{o}\t{c}\n"
        for i, r, o, c in zip(chosen.tolist(), reward.tolist(), _timestamps(observed), _timestamps(o_created),
                              strict=True)
    )
    return decisions, outcomes, n, m


def load(db_url: str, columns: list[str], system_ids: list[int], per_system: int, start: int, end: int,
         created_at: int | None, shift_from: int, outcome_share: float, observed_max: int, seed: int,
         quiet: bool = False) -> dict[str, Any]:
    """Write ``per_system`` decisions per system over [start, end) (µs) with COPY: run in a process of
    its own. Blocks of ~BLOCK_ROWS rows in time order; one transaction per SLAB_BLOCKS blocks, the
    decisions' COPY left open across a slab's blocks (so PostgreSQL ingests one block while the
    next is made), the slab's outcomes copied after them."""
    import psycopg
    from psycopg.copy import QueuedLibpqWriter

    rng = np.random.default_rng(seed)
    total = per_system * len(system_ids)
    blocks = max(1, math.ceil(total / BLOCK_ROWS))
    t_edges = np.linspace(start, end, blocks + 1).astype(np.int64)
    cum = np.round(np.arange(blocks + 1) * per_system / blocks).astype(np.int64)
    decision_sql = f"COPY oversight_decision ({', '.join(columns)}) FROM STDIN"  # noqa: S608
    outcome_sql = "COPY oversight_outcome (decision_id, label, reward, observed_at, created_at) FROM STDIN"
    made_s = 0.0
    n_dec = n_out = 0
    text_bytes = 0
    t0 = time.perf_counter()
    next_report = 0.1
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        for slab in range(0, blocks, SLAB_BLOCKS):
            pending: list[str] = []
            with cur.copy(decision_sql, writer=QueuedLibpqWriter(cur)) as copy:
                for b in range(slab, min(slab + SLAB_BLOCKS, blocks)):
                    tm = time.perf_counter()
                    dec, out, n, m = make_block(rng, columns, system_ids, int(cum[b + 1] - cum[b]), int(t_edges[b]),
                                                int(t_edges[b + 1]), created_at, shift_from, outcome_share,
                                                observed_max)
                    made_s += time.perf_counter() - tm
                    copy.write(dec)
                    pending.append(out)
                    n_dec, n_out, text_bytes = n_dec + n, n_out + m, text_bytes + len(dec) + len(out)
            with cur.copy(outcome_sql) as copy:
                for out in pending:
                    copy.write(out)
            conn.commit()
            if not quiet and n_dec >= next_report * total:
                s = time.perf_counter() - t0
                log(f"  loaded {n_dec:,} / {total:,} decisions, {n_out:,} outcomes in {s:.0f} s "
                    f"({n_dec / s:,.0f} decisions/s)")
                next_report += 0.1
    return {"decisions": n_dec, "outcomes": n_out, "seconds": time.perf_counter() - t0, "generate_s": made_s,
            "text_mb": text_bytes / 1e6}


def reference_csv(seed: int) -> bytes:
    """REFERENCE_ROWS rows of the decisions' features before the shift, as the upload takes them."""
    rng = np.random.default_rng(seed)
    f = _features(rng, REFERENCE_ROWS)
    lines = ["x,y,color,prediction.confidence"]
    lines += [f"{x},{y},{c},{p}" for x, y, c, p in zip(f["x"].tolist(), f["y"].tolist(), f["color"].tolist(),
                                                        f["confidence"].tolist(), strict=True)]
    return ("\n".join(lines) + "\n").encode()


# --- the database ------------------------------------------------------------------------------------


def _admin_url() -> str:
    return os.environ["DATABASE_URL"]


def _admin_connect() -> Any:
    """A connection to the server's own database (the URL's, or ``postgres``), not the bench's."""
    import psycopg

    parsed = urlparse(_admin_url())
    own = parsed.path.lstrip("/")
    candidates = [db for db in (own, "postgres") if db and db != BENCH_DB]
    for i, db in enumerate(candidates):
        try:
            return psycopg.connect(urlunparse(parsed._replace(path="/" + db)), autocommit=True)
        except psycopg.OperationalError:
            if i == len(candidates) - 1:
                raise
    raise SystemExit("no database to connect to")


def create_database() -> str:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return urlunparse(urlparse(_admin_url())._replace(path="/" + BENCH_DB))


def drop_database() -> None:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def clear_redis_prefix() -> None:
    import redis

    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    stale = list(r.scan_iter(match=f"{BENCH_PREFIX}:*", count=1000))
    if stale:
        r.delete(*stale)
    r.close()


def sizes(db_url: str) -> dict[str, float]:
    """MB on disk: the database, and each big table with and without its indexes."""
    import psycopg

    out: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        out["database_mb"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e6
        for table in ("oversight_decision", "oversight_outcome", "dashboards_driftresult", "dashboards_metricpoint"):
            heap, total = conn.execute(
                "SELECT pg_table_size(%s), pg_total_relation_size(%s)", (table, table)
            ).fetchone()
            out[f"{table}_mb"] = heap / 1e6
            out[f"{table}_indexes_mb"] = (total - heap) / 1e6
    return out


# --- measuring ------------------------------------------------------------------------------------------


class RssSampler:
    """This process's RSS every ``interval`` seconds in a thread: the peak since ``start``."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def start(self) -> None:
        self.peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.rss())
        return self.peak


class PgCpu:
    """CPU seconds of the PostgreSQL processes on this machine: the bench database's backends, and all of them."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil

    def sample(self) -> dict[str, Any]:
        ours: dict[int, float] = {}
        every: dict[int, float] = {}
        for p in self.psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(self.psutil.Error):
                if p.info["name"] != "postgres":
                    continue
                t = p.cpu_times()
                every[p.pid] = t.user + t.system
                if BENCH_DB in " ".join(p.info["cmdline"] or []):
                    ours[p.pid] = every[p.pid]
        return {"ours": ours, "all": every, "machine": self.psutil.cpu_times(), "self": time.process_time()}

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        out = {k: sum(v - a[k].get(pid, 0.0) for pid, v in b[k].items()) for k in ("ours", "all")}
        ma, mb = a["machine"], b["machine"]
        idle = (mb.idle - ma.idle) + (getattr(mb, "iowait", 0.0) - getattr(ma, "iowait", 0.0))
        total = sum(mb) - sum(ma)
        busy = total - idle
        out["other_cpu_s"] = max(0.0, busy - out["all"] - (b["self"] - a["self"]))
        out["machine_busy"] = busy / total if total > 0 else 0.0
        return out


class Statements:
    """An ``execute_wrapper``: SQL statements sent through Django and the time spent in ``execute``."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.count += 1
            self.seconds += time.perf_counter() - t


def db_stats() -> dict[str, int]:
    """The bench database's counters (``pg_stat_database``), this backend's pending ones flushed first."""
    from django.db import connection

    with connection.cursor() as cur:
        with contextlib.suppress(Exception):
            cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute(
            "SELECT blks_read, blks_hit, tup_returned, tup_fetched, tup_inserted, tup_deleted, temp_bytes "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        row = cur.fetchone()
    keys = ("blks_read", "blks_hit", "tup_returned", "tup_fetched", "tup_inserted", "tup_deleted", "temp_bytes")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def run_job(name: str, fn: Callable[[], dict[str, Any]], sampler: RssSampler, pg: PgCpu) -> dict[str, Any]:
    """One job's run_all(), measured."""
    from django.db import connection

    gc.collect()
    stats0 = db_stats()
    rss0 = sampler.rss()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    statements = Statements()
    cpu0 = pg.sample()
    sampler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    with connection.execute_wrapper(statements):
        summary = fn()
    cpu_s = time.process_time() - c0
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    cpu = PgCpu.delta(cpu0, pg.sample())
    rss1 = sampler.rss()
    stats1 = db_stats()
    windows = summary.get("windows", 0)
    return {
        "job": name,
        "wall_s": wall,
        "cpu_s": cpu_s,
        "pg_backend_cpu_s": cpu["ours"],
        "pg_all_cpu_s": cpu["all"],
        "other_cpu_s": cpu["other_cpu_s"],
        "machine_busy": cpu["machine_busy"],
        "statements": statements.count,
        "execute_s": statements.seconds,
        "windows": windows,
        "stored": summary.get("results", summary.get("points", 0)),
        "alerts_opened": sum(s.get("alerts_opened", 0) for s in summary.get("systems", [])),
        "alerts_resolved": sum(s.get("alerts_resolved", 0) for s in summary.get("systems", [])),
        "failed": summary.get("failed", []),
        "rss_before_mb": rss0 / 1e6,
        "rss_peak_mb": peak / 1e6,
        "rss_after_mb": rss1 / 1e6,
        "ru_maxrss_before_mb": maxrss0 / 1e3,
        "ru_maxrss_after_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "db": {k: stats1[k] - stats0[k] for k in stats0},
        "ms_per_window": 1000 * wall / windows if windows else None,
    }


def tick(label: str, sampler: RssSampler, pg: PgCpu) -> dict[str, Any]:
    """drift_job.run_all() then performance_job.run_all(), as Celery beat runs them."""
    from dashboards import drift_job, performance_job

    load_before = os.getloadavg()[0]
    jobs = [run_job("drift", drift_job.run_all, sampler, pg),
            run_job("performance", performance_job.run_all, sampler, pg)]
    total: dict[str, Any] = {"tick": label, "jobs": jobs, "load_before": load_before,
                             "load_after": os.getloadavg()[0]}
    for k in ("wall_s", "cpu_s", "pg_backend_cpu_s", "pg_all_cpu_s", "other_cpu_s", "statements", "execute_s"):
        total[k] = sum(j[k] for j in jobs)
    total["rss_before_mb"] = jobs[0]["rss_before_mb"]
    total["rss_peak_mb"] = max(j["rss_peak_mb"] for j in jobs)
    total["rss_after_mb"] = jobs[-1]["rss_after_mb"]
    total["rss_growth_mb"] = total["rss_after_mb"] - total["rss_before_mb"]
    total["rss_peak_growth_mb"] = total["rss_peak_mb"] - total["rss_before_mb"]
    total["ru_maxrss_mb"] = jobs[-1]["ru_maxrss_after_mb"]
    for j in jobs:
        failed = f", FAILED systems {j['failed']}" if j["failed"] else ""
        log(f"  {label}: {j['job']} job {j['wall_s']:.2f} s wall, {j['cpu_s']:.2f} s CPU, "
            f"{j['pg_backend_cpu_s']:.2f} s PostgreSQL backend CPU; {j['windows']} windows, "
            f"{j['stored']} rows stored, {j['statements']} statements; RSS {j['rss_before_mb']:.0f} → peak "
            f"{j['rss_peak_mb']:.0f} → {j['rss_after_mb']:.0f} MB{failed}")
    return total


# --- the run ----------------------------------------------------------------------------------------------


def setup_django(bench_url: str) -> None:
    """Point the settings at the bench database and Redis prefix (read at import), migrate."""
    sys.path.insert(0, str(BASE_DIR))
    os.environ["DATABASE_URL"] = bench_url
    os.environ["OVERSIGHT_REDIS_PREFIX"] = BENCH_PREFIX
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def create_systems(n: int, seed: int) -> list[int]:
    from dashboards import references
    from oversight import actions

    ids = []
    for i in range(n):
        system = actions.create_system(None, {"slug": f"bench-{i}", "level": 3,
                                              "window": {"kind": "time", "seconds": WINDOW_SECONDS}})
        references.store_upload(system, reference_csv(seed + 1000 + i), "csv", None, note="monitoring bench")
        ids.append(system.id)
    return ids


def run_loader(**kwargs: Any) -> dict[str, Any]:
    """:func:`load` in a process of its own, so its memory is not this process's."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(load, **kwargs).result()


def _us(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def render(result: dict[str, Any]) -> str:
    a = result["args"]
    stored = result["stored_decisions"]
    sz = result["sizes"]
    decision_mb = sz["oversight_decision_mb"] + sz["oversight_decision_indexes_mb"]
    lines = [
        "",
        f"Monitoring bench  {result['started_at']}  {os.cpu_count()} CPUs  python {platform.python_version()}  "
        f"PostgreSQL {result['postgres']}",
        f"  data: {a['systems']} systems × {a['decisions']:,} decisions over {a['days']:g} days "
        f"({stored:,} decisions, {result['load']['outcomes']:,} outcomes; "
        f"{result['rows_per_window']:,.0f} decisions per one-hour window, "
        f"{result['windows_per_system']} windows per system)",
        f"  load: {result['load']['seconds']:.1f} s ({stored / result['load']['seconds']:,.0f} decisions/s, "
        f"generating {result['load']['generate_s']:.1f} s of it in the loader process), "
        f"ANALYZE {result['analyze_s']:.1f} s",
        f"  disk: database {sz['database_mb']:,.0f} MB; decisions {sz['oversight_decision_mb']:,.0f} MB + "
        f"{sz['oversight_decision_indexes_mb']:,.0f} MB of indexes ({1e6 * decision_mb / stored:.0f} bytes per "
        f"decision); outcomes {sz['oversight_outcome_mb'] + sz['oversight_outcome_indexes_mb']:,.0f} MB",
        f"  steady tick's new rows: {result['steady_load']['decisions']:,} decisions, "
        f"{result['steady_load']['outcomes']:,} outcomes (one hour per system, created_at = now)",
        "",
        f"  {'tick':<12} {'job':<12} {'wall s':>8} {'CPU s':>7} {'PG be s':>8} {'windows':>8} {'stmts':>7} "
        f"{'ms/window':>10} {'ms/system':>10} {'ns/stored':>10} {'RSS peak':>9} {'growth':>7}",
    ]
    for t in result["ticks"]:
        for j in [*t["jobs"], {**t, "job": "tick", "windows": sum(x["windows"] for x in t["jobs"])}]:
            per_window = f"{1000 * j['wall_s'] / j['windows']:.1f}" if j["windows"] else "-"
            growth = j["rss_after_mb"] - j["rss_before_mb"]
            lines.append(
                f"  {t['tick']:<12} {j['job']:<12} {j['wall_s']:>8.2f} {j['cpu_s']:>7.2f} "
                f"{j['pg_backend_cpu_s']:>8.2f} {j['windows']:>8} {j['statements']:>7} {per_window:>10} "
                f"{1000 * j['wall_s'] / a['systems']:>10.1f} "
                f"{1e9 * j['wall_s'] / stored:>10.1f} {j['rss_peak_mb']:>8.0f}M {growth:>6.1f}M"
            )
    lines += [
        "",
        "  wall/CPU: this process; PG be: CPU of the bench database's PostgreSQL backends; ns/stored: wall time per",
        "  stored decision; RSS peak: this process, sampled every 10 ms; growth: RSS after − before.",
        f"  ru_maxrss (lifetime peak of this process; loading ran elsewhere): before the first tick "
        f"{result['ru_maxrss_before_mb']:.0f} MB, at the end {result['ru_maxrss_end_mb']:.0f} MB",
    ]
    for t in result["ticks"]:
        db = {k: sum(j["db"][k] for j in t["jobs"]) for k in t["jobs"][0]["db"]}
        lines.append(
            f"  {t['tick']:<12} blocks read {db['blks_read']:,} hit {db['blks_hit']:,}, "
            f"temp {db['temp_bytes'] / 1e6:.0f} MB; all PostgreSQL CPU {t['pg_all_cpu_s']:.2f} s; "
            f"other processes {t['other_cpu_s']:.2f} s CPU; "
            f"load {t['load_before']:.2f} → {t['load_after']:.2f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=1_000_000, help="stored decisions per system")
    parser.add_argument("--days", type=float, default=30.0, help="the decisions' span, ending an hour ago")
    parser.add_argument("--outcome-share", type=float, default=0.2, help="share of decisions with an outcome")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "monitoring.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(BASE_DIR))
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        from oversight import embedded

        embedded.ensure_environment()
    stored = args.systems * args.decisions
    need = stored * (BYTES_PER_DECISION + args.outcome_share * BYTES_PER_OUTCOME)
    free = shutil.disk_usage(BASE_DIR).free
    log(f"{args.systems} systems × {args.decisions:,} decisions over {args.days:g} days: about "
        f"{need / 1e9:.1f} GB of disk needed, {free / 1e9:.0f} GB free here")
    if need > free - 5e9:
        raise SystemExit("not enough free disk for this size (keeping 5 GB spare): choose fewer decisions")

    started = datetime.now(UTC)
    bench_url = create_database()
    clear_redis_prefix()
    result: dict[str, Any] = {"started_at": started.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        t = time.perf_counter()
        setup_django(bench_url)
        from django.db import connection

        from oversight.models import Decision

        log(f"database {BENCH_DB} created and migrated in {time.perf_counter() - t:.1f} s")
        version = connection.cursor().connection.info.server_version
        result["postgres"] = f"{version // 10000}.{version % 10000}"
        t = time.perf_counter()
        system_ids = create_systems(args.systems, args.seed)
        log(f"{args.systems} systems with a {REFERENCE_ROWS:,}-row reference each in {time.perf_counter() - t:.1f} s")

        columns = [f.column for f in Decision._meta.concrete_fields]
        hour = started.replace(minute=0, second=0, microsecond=0)
        end = hour - timedelta(hours=1)  # the stored decisions end here; the steady tick's hour follows
        start = end - timedelta(days=args.days)
        span_h = (end - start) / timedelta(hours=1)
        result["windows_per_system"] = math.ceil(span_h)
        result["rows_per_window"] = args.decisions / span_h
        common = {"db_url": bench_url, "columns": columns, "system_ids": system_ids,
                  "outcome_share": args.outcome_share, "shift_from": _us(end - (end - start) / 10)}
        log(f"loading {stored:,} decisions from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
            f"(~{result['rows_per_window']:,.0f} per system and hour) in a loader process")
        result["load"] = run_loader(**common, per_system=args.decisions, start=_us(start), end=_us(end),
                                    created_at=None, observed_max=_us(end + timedelta(minutes=31)), seed=args.seed)
        ld = result["load"]
        log(f"loaded {ld['decisions']:,} decisions and {ld['outcomes']:,} outcomes in {ld['seconds']:.1f} s: "
            f"{ld['decisions'] / ld['seconds']:,.0f} decisions/s ({ld['text_mb'] / ld['seconds']:.1f} MB/s of COPY "
            f"text; {ld['generate_s']:.1f} s making rows)")
        t = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        result["analyze_s"] = time.perf_counter() - t
        result["sizes"] = sizes(bench_url)
        result["stored_decisions"] = ld["decisions"]
        log(f"ANALYZE in {result['analyze_s']:.1f} s; database {result['sizes']['database_mb']:,.0f} MB")

        sampler, pg = RssSampler(), PgCpu()
        gc.collect()
        result["ru_maxrss_before_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        ticks = []
        log("tick 1 (first: no watermark, every window)")
        ticks.append(tick("first", sampler, pg))

        per_hour = max(1, round(args.decisions / span_h))
        now = datetime.now(UTC)
        result["steady_load"] = run_loader(**common, per_system=per_hour, start=_us(end),
                                           end=_us(end + timedelta(hours=1)), created_at=_us(now),
                                           observed_max=_us(now), seed=args.seed + 1, quiet=True)
        log(f"one new hour per system: {result['steady_load']['decisions']:,} decisions, "
            f"{result['steady_load']['outcomes']:,} outcomes, created_at {now:%H:%M:%S}")
        log("tick 2 (steady: the new hour)")
        ticks.append(tick("steady", sampler, pg))
        log("tick 3 (nothing new)")
        ticks.append(tick("nothing new", sampler, pg))
        result["ticks"] = ticks
        result["ru_maxrss_end_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        result["sizes_after"] = sizes(bench_url)
        print(render(result))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, default=str))
        log(f"results in {args.output}")
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if args.keep:
            log(f"kept {BENCH_DB} ({bench_url})")
        else:
            drop_database()
            log(f"dropped {BENCH_DB}")
        clear_redis_prefix()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
