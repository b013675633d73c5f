"""Safety-controls bench (issue 9): how fast a kill switch and a circuit breaker reach every web
worker while decisions keep arriving, and what the breaker evaluation of a monitoring tick costs.

Everything runs against a database of its own (``oversight_bench_safety``, recreated per run) and
a Redis prefix of its own (``oversight-bench-safety``), so neither ``make bench`` nor the demo is
touched. Two parts, in this order, in one run:

1. **Breaker evaluation cost** (in a subprocess with ``DATABASE_URL`` at the bench database):
   ``--systems`` systems (default 100), each with a closed system breaker and ``--models`` closed
   model breakers (``m0``..``m9``), and stored monitoring figures for 3 hourly windows (the metric
   points ``perf.outcomes``, ``perf.accuracy``, ``perf.mean_reward``, ``gate.error_rate``,
   ``gate.deadline_miss_rate``, and primary ``psi`` drift results for 10 features, 2 of them
   drifted), all written with ``bulk_create`` and then analysed. Then
   ``dashboards.breaker_job.run_all()`` is timed: one warm-up tick, ``--ticks`` ticks where nothing
   changes (median and max), and one tick after the newest window's accuracy of every tenth system
   fell to 0.80 (100 outcomes): exactly 10 % of the breakers must open; then another tenth (so a
   one-off cost of the first changes in a process, such as the channel layer's connection, shows)
   and one more tick (nothing changes). Target: ≤ 100 ms per tick.
2. **Propagation under load**: uvicorn with ``--workers`` (default 4) serving
   ``oversight.asgi:application``; a level-2 system (threshold 0.6) with an API key, and an admin
   with a personal token. This process posts decisions (confidence 0.9: released, route ``auto``)
   open-loop at ``--rate`` per second (default 200) on ``--connections`` keep-alive connections
   spread evenly over the workers (``bench.run.Balancer``), recording each decision's due, send and
   receive time (``time.perf_counter``) and its ``route``. Meanwhile the admin flips, every
   ``--interval`` seconds (default 0.3), ``--flips`` times (default 100) the system's kill switch
   (engage, release, ...) and then ``--flips`` times the system's breaker by hand (open, close, ...),
   round-robin over one connection per worker, recording when each flip was sent and when its
   answer came back. Per phase:

   a. *propagation*: from a flip's answer coming back to the receive time of the first decision
      *sent* after that moment whose route honours the new state (``killed`` / ``breaker_open``, or
      neither after a release); p50 / p99 / max over the flips. Target: p99 ≤ 100 ms.
   b. *violations*: decisions sent after a flip's answer came back whose route does not honour it
      (must be 0: the product promises the very next decision). A decision that was still in flight
      when a later flip was sent may honour either state; those are counted ("straddling") and
      accepted with either route.
   c. the decision rate achieved and the decisions' latency (from the time each was due, so a
      slow client is not hidden, and from the time it was sent) during the phase.

   Also the CPU share other processes took during each phase (the machine is shared).

Prints a table and writes ``bench/results/safety.json`` (the server's log:
``bench/results/safety-server.log``). The exit status is 0 either way: this is a measurement.

    python -m bench.safety [--rate 200] [--flips 100] [--interval 0.3] [--workers 4]
                           [--connections 8] [--systems 100] [--models 10] [--ticks 20]
                           [--warmup 3] [--baseline 3] [--wait-quiet 30] [--seed 9]
                           [--skip-eval] [--skip-load]

Before the load, it waits up to ``--wait-quiet`` seconds for other processes to use less than
25 % of the machine; then ``--warmup`` seconds of load, ``--baseline`` seconds of load measured
without flips (the "no flips" row), and the two phases.

Environment: ``DATABASE_URL`` (any database on the server; the bench creates its own beside it)
and ``REDIS_URL``, or neither (the embedded servers under var/).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bench import run
from bench.run import (
    BASE_DIR,
    RESULTS_DIR,
    RETRYABLE,
    Balancer,
    Conn,
    CpuMeter,
    Environment,
    Pool,
    Server,
    decision_body,
    http_request,
    log,
    percentile,
    summarize,
)

BENCH_DB = "oversight_bench_safety"
BENCH_PREFIX = "oversight-bench-safety"
SLUG = "bench-safety"
SYSTEM_SPEC = {
    "slug": SLUG,
    "name": "Safety bench",
    "level": 2,
    "confidence_threshold": 0.6,
    "audit_sample_rate": 0.05,
    "review_sla_s": 900,
    "fallback": {"items": ["editorial-calm-1"]},
}
TARGET_PROPAGATION_P99_MS = 100.0
TARGET_TICK_MS = 100.0
RESULTS_FILE = RESULTS_DIR / "safety.json"
SERVER_LOG = RESULTS_DIR / "safety-server.log"

SETUP_SNIPPET = """
import json, sys
import django
django.setup()
from django.contrib.auth.models import Group, User
from oversight import access, actions
system = actions.create_system(None, json.loads(sys.argv[1]), "bench setup")
_, key = actions.create_api_key(None, system, "safety bench load generator")
access.ensure_groups()
admin = User.objects.create_user("bench-safety-admin", email="", password=None)
admin.groups.add(Group.objects.get(name=access.ADMIN))
_, token = actions.create_personal_token(admin, "safety bench flips")
print("SAFETY_SETUP " + json.dumps({"slug": system.slug, "id": system.id, "key": key, "token": token}))
"""

# Part 1, in a subprocess with DATABASE_URL at the bench database.
EVAL_SNIPPET = """
import json, statistics, sys, time
from datetime import timedelta
import django
django.setup()
from django.db import connection
from django.utils import timezone
from dashboards import breaker_job
from dashboards.models import DriftResult, MetricPoint
from oversight.models import AISystem, Breaker

n, n_models, ticks = (int(x) for x in sys.argv[1:4])
FEATURES, DRIFTED = 10, 2
t_load = time.perf_counter()
now = timezone.now()
hour = now.replace(minute=0, second=0, microsecond=0)
windows = [hour - timedelta(hours=k) for k in (3, 2, 1)]
systems = AISystem.objects.bulk_create([
    AISystem(slug=f"eval-{i:03d}", name=f"Breaker eval {i}", level=2, confidence_threshold=0.6,
             fallback={"items": ["editorial-calm-1"]}) for i in range(n)])
Breaker.objects.bulk_create([
    Breaker(system=s, model=m, state="closed", changed_at=now - timedelta(days=1))
    for s in systems for m in ["", *(f"m{j}" for j in range(n_models))]])
healthy = {"perf.outcomes": 100.0, "perf.accuracy": 0.95, "perf.mean_reward": 0.93,
           "gate.error_rate": 0.01, "gate.deadline_miss_rate": 0.005}
MetricPoint.objects.bulk_create([
    MetricPoint(system=s, name=name, t=w, value=v) for s in systems for w in windows for name, v in healthy.items()],
    batch_size=5000)
DriftResult.objects.bulk_create([
    DriftResult(system=s, window_start=w, window_end=w + timedelta(hours=1), feature=f"f{j}", method="psi",
                statistic=0.3 if j < DRIFTED else 0.02, threshold=0.2, drifted=j < DRIFTED,
                severity=1.5 if j < DRIFTED else 0.1, primary=True, rows=1000)
    for s in systems for w in windows for j in range(FEATURES)], batch_size=5000)
with connection.cursor() as cur:
    for table in ("oversight_aisystem", "oversight_breaker", "dashboards_metricpoint", "dashboards_driftresult",
                  "dashboards_alert"):
        cur.execute(f"ANALYZE {table}")
loaded_s = time.perf_counter() - t_load

statements = []
def counting(execute, sql, params, many, context):
    statements.append(sql)
    return execute(sql, params, many, context)

def tick():
    statements.clear()
    with connection.execute_wrapper(counting):
        t = time.perf_counter()
        out = breaker_job.run_all()
        ms = (time.perf_counter() - t) * 1000
    return ms, out, len(statements)

warm_ms, warm, _ = tick()
steady, steady_changes, steady_queries = [], 0, []
for _ in range(ticks):
    ms, out, q = tick()
    steady.append(ms)
    steady_changes += len(out["changes"])
    steady_queries.append(q)
tripped_ids = [s.id for i, s in enumerate(systems) if i % 10 == 0]
MetricPoint.objects.filter(system_id__in=tripped_ids, name="perf.accuracy", t=windows[-1]).update(value=0.80)
trip_ms, trip, trip_q = tick()
changed = sorted(c["system_id"] for c in trip["changes"])
# Once more with another tenth: shows whether the first tick paid one-off costs of this process
# (the channel layer's connection for the live pushes), which a long-lived beat worker pays once.
again_ids = [s.id for i, s in enumerate(systems) if i % 10 == 5]
MetricPoint.objects.filter(system_id__in=again_ids, name="perf.accuracy", t=windows[-1]).update(value=0.80)
again_ms, again, _ = tick()
after_ms, after, _ = tick()
print("SAFETY_EVAL " + json.dumps({
    "systems": trip["systems"], "models_per_system": n_models,
    "rows": {"breakers": Breaker.objects.count(), "metric_points": MetricPoint.objects.count(),
             "drift_results": DriftResult.objects.count()},
    "load_s": round(loaded_s, 2),
    "warmup_tick_ms": warm_ms, "warmup_changes": len(warm["changes"]),
    "steady": {"ticks": ticks, "median_ms": statistics.median(steady), "max_ms": max(steady),
               "min_ms": min(steady), "all_ms": steady, "changes": steady_changes,
               "statements": max(steady_queries)},
    "trip": {"ms": trip_ms, "changes": len(changed), "expected": len(tripped_ids),
             "exact": changed == sorted(tripped_ids), "statements": trip_q,
             "to": sorted({c["to"] for c in trip["changes"]})},
    "second_trip": {"ms": again_ms, "changes": len(again["changes"]),
                    "exact": sorted(c["system_id"] for c in again["changes"]) == sorted(again_ids)},
    "after_trip": {"ms": after_ms, "changes": len(after["changes"])},
}))
"""

ROUTES = ("auto", "human", "fallback", "killed", "breaker_open")  # oversight.gate.Route
ROUTE_RE = re.compile(rb'"route":\s*"([a-z_]+)"')


# --- environment ---------------------------------------------------------------------------


def prepare_environment() -> Environment:
    """Embedded servers if needed, a fresh ``oversight_bench_safety`` database, a clean Redis prefix
    (``bench.run.prepare_environment`` with this bench's names)."""
    return run.prepare_environment(BENCH_DB, BENCH_PREFIX)


def migrate_and_seed(environment: Environment) -> dict[str, Any]:
    log(f"migrating {BENCH_DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                   cwd=BASE_DIR, env=environment.env, check=True)
    out = subprocess.run([sys.executable, "-c", SETUP_SNIPPET, json.dumps(SYSTEM_SPEC)],
                         cwd=BASE_DIR, env=environment.env, check=True, capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SAFETY_SETUP ")), None)
    if line is None:
        raise SystemExit(f"safety bench setup printed nothing:\n{out.stdout}\n{out.stderr}")
    return dict(json.loads(line.removeprefix("SAFETY_SETUP ")))


def breaker_evaluation(environment: Environment, args: argparse.Namespace) -> dict[str, Any] | None:
    log(f"breaker evaluation: {args.systems} systems × {args.models} model breakers, {args.ticks} ticks")
    out = subprocess.run(
        [sys.executable, "-c", EVAL_SNIPPET, str(args.systems), str(args.models), str(args.ticks)],
        cwd=BASE_DIR, env=environment.env, capture_output=True, text=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SAFETY_EVAL ")), None)
    if out.returncode != 0 or line is None:
        log(f"breaker evaluation failed:\n{out.stderr[-3000:]}")
        return None
    return dict(json.loads(line.removeprefix("SAFETY_EVAL ")))


# --- the load and the flips ------------------------------------------------------------------


@dataclass
class Decision:
    i: int
    due: float
    sent: float
    recv: float
    route: str  # the answer's route, or "http-<code>" / an exception's name
    port: int  # the client's local port (-> the worker that answered)
    retried: bool = False  # sent twice (the first connection was closed under it): not checked


@dataclass
class Flip:
    kind: str  # "kill" or "breaker"
    n: int
    stops: bool  # engaged / opened (True) or released / closed (False)
    sent: float
    ret: float
    status: int
    port: int


def expected_route(kill: bool, breaker_open: bool) -> str:
    return "killed" if kill else "breaker_open" if breaker_open else "auto"


async def run_load(args: argparse.Namespace, server: Server, setup: dict[str, Any],
                   environment: Environment) -> dict[str, Any]:
    port = server.port
    rng = random.Random(args.seed)
    run_id = f"{int(time.time())}-{os.getpid()}"
    decision_path = f"/api/v1/systems/{setup['slug']}/decisions"
    auth = {"Authorization": f"Bearer {setup['key']}"}
    admin = {"Authorization": f"Token {setup['token']}"}
    balancer = Balancer(server)
    pool = Pool(port, max_size=args.connections * 4)
    await pool.fill(balancer, args.connections)
    admin_conns = await balancer.open(port, args.workers)
    meter = CpuMeter(server, environment.database_url, environment.redis_url)

    decisions: list[Decision] = []
    flips: list[Flip] = []
    tasks: set[asyncio.Task[None]] = set()
    dropped: list[dict[str, Any]] = []  # kept-alive connections the server closed under a request
    t_start = time.perf_counter()
    stop = asyncio.Event()

    def body(i: int) -> bytes:
        b = decision_body(rng, f"safety-{run_id}-{i}")
        b["prediction"]["confidence"] = 0.9
        return http_request("POST", decision_path, port, auth, json.dumps(b).encode())

    async def one(i: int, due: float) -> None:
        data = body(i)
        conn = await pool.acquire()
        # bench.run.Pool hands a connection parked for a waiter over without its staleness check
        # (two releases can park two connections for one waiter): check it here.
        while conn.stale:
            conn.close()
            pool.release(conn)
            conn = await pool.acquire()
        sent = time.perf_counter()
        retried = False
        try:
            async with asyncio.timeout(10):
                try:
                    status, answer = await conn.request(data)
                except RETRYABLE as e:
                    # A kept-alive connection closed under us: once more on a new one (same
                    # idempotency key). The first send time is kept, which can only hide a
                    # violation, never make one up.
                    if conn.uses == 0:
                        raise
                    dropped.append({"decision": i, "error": type(e).__name__, "uses": conn.uses,
                                    "idle_s": round(sent - conn.last_used, 3), "at_s": round(sent - t_start, 3)})
                    conn.close()
                    pool.release(conn)
                    conn = await pool._new()
                    retried = True
                    status, answer = await conn.request(data)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            conn.close()
            pool.release(conn)
            decisions.append(Decision(i, due, sent, time.perf_counter(), type(e).__name__, conn.local_port, retried))
            return
        recv = time.perf_counter()
        pool.release(conn)
        m = ROUTE_RE.search(answer) if 200 <= status < 300 else None
        route = m.group(1).decode() if m else f"http-{status}"
        decisions.append(Decision(i, due, sent, recv, route, conn.local_port, retried))

    async def generator() -> None:
        t0 = time.perf_counter() + 0.05
        i = 0
        while not stop.is_set():
            due = t0 + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1

    async def flip(kind: str, n: int, stops: bool) -> None:
        if kind == "kill":
            path = "/api/v1/killswitches"
            payload: dict[str, Any] = {"scope": "system", "system": setup["slug"], "engaged": stops, "reason": "bench"}
        else:
            path = f"/api/v1/systems/{setup['slug']}/breakers"
            payload = {"state": "open" if stops else "closed", "reason": "bench"}
        data = http_request("POST", path, port, admin, json.dumps(payload).encode())
        k = n % len(admin_conns)
        conn = admin_conns[k]
        if conn.stale:
            conn.close()
            conn = admin_conns[k] = await Conn.open(port)
        sent = time.perf_counter()
        status, answer = await conn.request(data)
        ret = time.perf_counter()
        if status != 200:
            log(f"{kind} flip {n} answered {status}: {answer[:300]!r}")
        flips.append(Flip(kind, n, stops, sent, ret, status, conn.local_port))

    async def flipper(kind: str) -> tuple[float, float]:
        start = time.perf_counter()
        for n in range(args.flips):
            target = start + n * args.interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await flip(kind, n, n % 2 == 0)
        await asyncio.sleep(args.interval)  # the last flip's own 300 ms
        return start, time.perf_counter()

    if args.wait_quiet > 0:
        await meter.wait_quiet(0.25, args.wait_quiet)
    gen = asyncio.create_task(generator())
    log(f"load: {args.rate:g} decisions/s on {args.connections} connections, {args.workers} workers; "
        f"warming up {args.warmup:g} s, then {args.baseline:g} s without flips")
    await asyncio.sleep(args.warmup)
    phases: dict[str, dict[str, Any]] = {}
    a = meter.sample()
    start = time.perf_counter()
    await asyncio.sleep(args.baseline)
    phases["no flips"] = {"start": start, "end": time.perf_counter(), "cpu": meter.delta(a, meter.sample())}
    for kind in ("kill", "breaker"):
        log(f"phase {kind}: {args.flips} flips, one every {args.interval * 1000:.0f} ms")
        a = meter.sample()
        start, end = await flipper(kind)
        cpu = meter.delta(a, meter.sample())
        phases[kind] = {"start": start, "end": end, "cpu": cpu}
    stop.set()
    await gen
    owners = balancer.owners()
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    pool.close()
    for c in admin_conns:
        c.close()
    return {"decisions": decisions, "flips": flips, "phases": phases, "owners": owners, "dropped": dropped}


def analyse(load: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    decisions: list[Decision] = sorted(load["decisions"], key=lambda d: d.sent)
    flips: list[Flip] = sorted(load["flips"], key=lambda f: f.ret)
    owners: dict[int, int] = load["owners"]
    ok_flips = [f for f in flips if f.status == 200]
    # The state after each flip (kill engaged, breaker open), in the order the answers came back.
    states: list[tuple[bool, bool]] = []
    kill, brk = False, False
    for f in ok_flips:
        if f.kind == "kill":
            kill = f.stops
        else:
            brk = f.stops
        states.append((kill, brk))
    rets = [f.ret for f in ok_flips]
    sends = [d.sent for d in decisions]

    per_phase: dict[str, dict[str, Any]] = {
        kind: {"checked": 0, "straddling": 0, "violations": []} for kind in ("kill", "breaker")
    }
    before_first = {"checked": 0, "violations": 0}
    for d in decisions:
        k = bisect.bisect_right(rets, d.sent) - 1
        if d.route not in ROUTES or d.retried:
            continue
        acceptable = {expected_route(*(states[k] if k >= 0 else (False, False)))}
        j = k + 1
        while j < len(ok_flips) and ok_flips[j].sent < d.recv:  # a later flip was on its way meanwhile
            acceptable.add(expected_route(*states[j]))
            j += 1
        if k < 0:
            before_first["checked"] += 1
            before_first["violations"] += d.route not in acceptable
            continue
        ph = per_phase[ok_flips[k].kind]
        ph["checked"] += 1
        ph["straddling"] += j > k + 1
        if d.route not in acceptable:
            f = ok_flips[k]
            ph["violations"].append({
                "decision": d.i, "route": d.route, "acceptable": sorted(acceptable),
                "flip": f"{f.kind} #{f.n} ({'stop' if f.stops else 'release'})",
                "sent_after_flip_ms": (d.sent - f.ret) * 1e3, "latency_ms": (d.recv - d.sent) * 1e3,
                "decision_worker": owners.get(d.port), "flip_worker": owners.get(f.port),
            })

    out: dict[str, Any] = {"before_first_flip": before_first}
    for kind, phase in load["phases"].items():
        start, end = phase["start"], phase["end"]
        in_phase = [d for d in decisions if start <= d.due < end]
        good = [d for d in in_phase if d.route in ROUTES]
        cpu = phase["cpu"]
        out[kind] = {
            "decisions": len(in_phase),
            "errors": len(in_phase) - len(good),
            "routes": dict(sorted(_count(d.route for d in in_phase).items())),
            "rate_per_s": sum(1 for d in decisions if start <= d.recv < end and d.route in ROUTES) / (end - start),
            "latency_from_due_ms": summarize(d.recv - d.due for d in good),
            "latency_from_sent_ms": summarize(d.recv - d.sent for d in good),
            "latency_from_sent_ms_by_route": {
                r: summarize(d.recv - d.sent for d in good if d.route == r) for r in sorted({d.route for d in good})},
            "duration_s": end - start,
            "other_cpu_share": cpu["other"] / (cpu["wall_s"] * (os.cpu_count() or 1)),
            "cpu_s": {k: cpu[k] for k in ("client", "server", "postgres", "redis", "other")},
        }
    for kind in ("kill", "breaker"):
        if kind not in out:
            continue
        ph = per_phase[kind]
        kind_flips = [(i, f) for i, f in enumerate(ok_flips) if f.kind == kind]
        prop: list[float] = []
        waits: list[float] = []  # flip answered -> that decision sent
        own: list[float] = []  # that decision's own latency (it reloads the worker's snapshot)
        next_honoured = 0
        next_not: list[dict[str, Any]] = []
        missing = 0
        for idx, f in kind_flips:
            want = expected_route(*states[idx])
            limit = ok_flips[idx + 1].ret if idx + 1 < len(ok_flips) else float("inf")
            first = bisect.bisect_left(sends, f.ret)
            if first < len(decisions) and decisions[first].route == want:
                next_honoured += 1
            elif first < len(decisions):
                d = decisions[first]
                later = ok_flips[idx + 1].sent if idx + 1 < len(ok_flips) else float("inf")
                next_not.append({"flip": f"{kind} #{f.n}", "want": want, "route": d.route,
                                 "sent_after_flip_ms": (d.sent - f.ret) * 1e3, "latency_ms": (d.recv - d.sent) * 1e3,
                                 "answered_after_next_flip_sent": d.recv > later})
            hit = next((d for d in decisions[first:] if d.sent < limit and d.route == want), None)
            if hit is None:
                missing += 1
            else:
                prop.append(hit.recv - f.ret)
                waits.append(hit.sent - f.ret)
                own.append(hit.recv - hit.sent)
        prop_sorted = sorted(prop)
        gaps = [b.sent - a.sent for (_, a), (_, b) in zip(kind_flips, kind_flips[1:], strict=False)]
        out[kind].update({
            "flips": len([f for f in flips if f.kind == kind]),
            "flips_ok": len(kind_flips),
            "flip_answer_ms": summarize(f.ret - f.sent for _, f in kind_flips),
            "flip_interval_ms_median": statistics.median(gaps) * 1e3 if gaps else float("nan"),
            "propagation_ms": {
                "n": len(prop), "missing": missing,
                "p50": percentile(prop_sorted, 50) * 1e3, "p99": percentile(prop_sorted, 99) * 1e3,
                "max": (prop_sorted[-1] * 1e3) if prop_sorted else float("nan"),
                "all": [round(v * 1e3, 2) for v in prop],
                "wait_until_sent": summarize(waits),
                "decision_latency": summarize(own),
            },
            "next_decision_honoured": next_honoured,
            "next_decision_not_honoured": next_not,
            "checked": ph["checked"], "straddling": ph["straddling"],
            "violations": len(ph["violations"]), "violation_details": ph["violations"][:50],
        })
    out["dropped_connections"] = load["dropped"]
    out["retried_not_checked"] = sum(1 for d in decisions if d.retried)
    out["workers_seen"] = len({owners.get(d.port) for d in decisions if owners.get(d.port) is not None})
    return out


def _count(items: Any) -> dict[str, int]:
    c: dict[str, int] = {}
    for x in items:
        c[x] = c.get(x, 0) + 1
    return c


# --- report --------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else f"{v:.1f}"


def render(results: dict[str, Any]) -> str:
    lines = [f"Safety controls bench — {results['when']} — {results['machine']}"]
    ev = results.get("eval")
    if ev:
        lines += [
            "",
            f"Breaker evaluation (dashboards.breaker_job.run_all), {ev['systems']} systems (incl. the load's) × "
            f"{ev['models_per_system']} model breakers ({ev['rows']['breakers']} breaker rows, "
            f"{ev['rows']['metric_points']} metric points, {ev['rows']['drift_results']} drift results):",
            f"  warm-up tick {fmt(ev['warmup_tick_ms'])} ms",
            f"  {ev['steady']['ticks']} ticks, nothing changes: median {fmt(ev['steady']['median_ms'])} ms, "
            f"max {fmt(ev['steady']['max_ms'])} ms ({ev['steady']['statements']} SQL statements, "
            f"{ev['steady']['changes']} changes)",
            f"  tick where 10 % trip:  {fmt(ev['trip']['ms'])} ms, {ev['trip']['changes']} changed "
            f"(expected {ev['trip']['expected']}, exactly those: {ev['trip']['exact']}; "
            f"{ev['trip']['statements']} SQL statements)",
            f"  another 10 % trip (second): {fmt(ev['second_trip']['ms'])} ms, {ev['second_trip']['changes']} changed "
            f"(exactly those: {ev['second_trip']['exact']})",
            f"  next tick: {fmt(ev['after_trip']['ms'])} ms, {ev['after_trip']['changes']} changes",
        ]
    ld = results.get("load")
    if ld:
        lines += [
            "",
            f"Propagation: {results['params']['workers']} uvicorn workers, {results['params']['rate']:g} "
            f"decisions/s offered, a flip every {results['params']['interval'] * 1000:.0f} ms",
            f"{'phase':<9}{'flips':>6}{'prop p50':>10}{'p99':>8}{'max':>8}{'missed':>7}{'viol.':>6}"
            f"{'checked':>9}{'dec/s':>8}{'dec p50':>9}{'p99':>8}{'flip p50':>9}{'other CPU':>10}",
        ]
        nf = ld.get("no flips")
        if nf:
            lines.append(
                f"{'no flips':<9}{'—':>6}{'':>10}{'':>8}{'':>8}{'':>7}{'':>6}{'':>9}{fmt(nf['rate_per_s']):>8}"
                f"{fmt(nf['latency_from_due_ms']['p50_ms']):>9}{fmt(nf['latency_from_due_ms']['p99_ms']):>8}"
                f"{'':>9}{nf['other_cpu_share']:>10.0%}")
        for kind in ("kill", "breaker"):
            p = ld[kind]
            lines.append(
                f"{kind:<9}{p['flips_ok']:>6}{fmt(p['propagation_ms']['p50']):>10}{fmt(p['propagation_ms']['p99']):>8}"
                f"{fmt(p['propagation_ms']['max']):>8}{p['propagation_ms']['missing']:>7}{p['violations']:>6}"
                f"{p['checked']:>9}{fmt(p['rate_per_s']):>8}{fmt(p['latency_from_due_ms']['p50_ms']):>9}"
                f"{fmt(p['latency_from_due_ms']['p99_ms']):>8}{fmt(p['flip_answer_ms']['p50_ms']):>9}"
                f"{p['other_cpu_share']:>10.0%}"
            )
        lines.append("(prop: flip answered -> first decision sent after it with the new route received; "
                     "dec p50/p99 from the time each decision was due; ms)")
        for kind in ("kill", "breaker"):
            p = ld[kind]
            lines.append(f"  {kind}: routes {p['routes']}, errors {p['errors']}, median flip interval "
                         f"{fmt(p['flip_interval_ms_median'])} ms, decision p50/p99 from sending "
                         f"{fmt(p['latency_from_sent_ms']['p50_ms'])}/{fmt(p['latency_from_sent_ms']['p99_ms'])} ms, "
                         f"straddling a later flip "
                         f"{p['straddling']}, very next decision honoured {p['next_decision_honoured']}"
                         f"/{p['flips_ok']}")
            pw, pd = p["propagation_ms"]["wait_until_sent"], p["propagation_ms"]["decision_latency"]
            lines.append(f"    propagation = wait until the next decision is sent (p50 {fmt(pw['p50_ms'])}, p99 "
                         f"{fmt(pw['p99_ms'])} ms) + that decision's latency (p50 {fmt(pd['p50_ms'])}, p99 "
                         f"{fmt(pd['p99_ms'])} ms)")
            for v in p["violation_details"][:5]:
                lines.append(f"    VIOLATION {v}")
    lines += ["", "Targets:"]
    for t in results["targets"]:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']}")
    lines.append(f"load average {results['loadavg_before']} before, {results['loadavg_after']} after")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ld = results.get("load")
    if ld:
        for kind in ("kill", "breaker"):
            p = ld[kind]
            p99 = p["propagation_ms"]["p99"]
            out.append({"name": f"{kind} propagation p99 ≤ {TARGET_PROPAGATION_P99_MS:g} ms",
                        "value": f"{fmt(p99)} ms ({p['propagation_ms']['missing']} flips never seen)",
                        "pass": p99 == p99 and p99 <= TARGET_PROPAGATION_P99_MS
                        and p["propagation_ms"]["missing"] == 0})
            out.append({"name": f"{kind}: 0 decisions sent after a flip's answer that ignore it",
                        "value": f"{p['violations']} of {p['checked']}", "pass": p["violations"] == 0})
    ev = results.get("eval")
    if ev:
        size = f"{results['params']['systems']} systems × {results['params']['models']} models"
        out.append({"name": f"breaker evaluation ≤ {TARGET_TICK_MS:g} ms per tick, nothing changing ({size})",
                    "value": f"median {fmt(ev['steady']['median_ms'])} ms, max {fmt(ev['steady']['max_ms'])} ms",
                    "pass": ev["steady"]["max_ms"] <= TARGET_TICK_MS})
        out.append({"name": f"breaker evaluation ≤ {TARGET_TICK_MS:g} ms per tick, 10 % tripping",
                    "value": f"{fmt(ev['trip']['ms'])} ms (first), {fmt(ev['second_trip']['ms'])} ms (second)",
                    "pass": max(ev["trip"]["ms"], ev["second_trip"]["ms"]) <= TARGET_TICK_MS})
        out.append({"name": "trip tick changes exactly the 10 % tripped",
                    "value": f"{ev['trip']['changes']} changed, exact {ev['trip']['exact']}",
                    "pass": bool(ev["trip"]["exact"]) and bool(ev["second_trip"]["exact"])
                    and ev["steady"]["changes"] == 0 and ev["after_trip"]["changes"] == 0})
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.safety", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--rate", type=float, default=200.0, help="decisions per second offered (open loop)")
    p.add_argument("--flips", type=int, default=100, help="flips per phase (kill switch, then breaker)")
    p.add_argument("--interval", type=float, default=0.3, help="seconds between flips")
    p.add_argument("--workers", type=int, default=4, help="uvicorn worker processes")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections for the decisions")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before anything is measured")
    p.add_argument("--baseline", type=float, default=3.0, help="seconds measured under load without flips")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="wait up to this many seconds for other processes to use < 25%% of the machine")
    p.add_argument("--systems", type=int, default=100, help="systems for the breaker evaluation")
    p.add_argument("--models", type=int, default=10, help="model breakers per system")
    p.add_argument("--ticks", type=int, default=20, help="evaluation ticks where nothing changes")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--skip-eval", action="store_true", help="leave out the breaker evaluation")
    p.add_argument("--skip-load", action="store_true", help="leave out the propagation phases")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "params": vars(args),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    environment = prepare_environment()
    setup = migrate_and_seed(environment)
    if not args.skip_eval:
        results["eval"] = breaker_evaluation(environment, args)
    if not args.skip_load:
        server = Server(environment, args.workers, {})
        server.log_path = SERVER_LOG
        log(f"starting uvicorn with {args.workers} workers")
        server.start()
        try:
            load = asyncio.run(run_load(args, server, setup, environment))
        finally:
            rc = server.stop()
            log(f"uvicorn stopped ({rc})")
        results["load"] = analyse(load, args)
        results["flips"] = [asdict(f) for f in sorted(load["flips"], key=lambda f: f.ret)]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - started
    print()
    print(render(results))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(_json_safe(results), indent=1, default=str))
    log(f"wrote {RESULTS_FILE.relative_to(BASE_DIR)} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
