"""Hosted-scoring bench (issue 10): what the ``scoring`` queue costs a decision.

One run, against a database of its own (``oversight_bench_scoring``, recreated) and a Redis prefix
of its own (``oversight-bench-scoring``):

* uvicorn (``--workers``, default 2) serving ``oversight.asgi:application`` with the bench views on,
  twice: as deployed (the worker's answer on a Redis list, ``OVERSIGHT_SCORING_REPLY=list``) and with
  Celery's result backend carrying it (``=result``); two Celery workers on the ``scoring`` queue
  (``-c 1`` each: two scoring processes) serve both;
* a level-3 system ``bench-hosted`` with two hosted models (``bench/hosted_models.py``): a
  matrix-factorisation recommender over 5,000 items and a time-of-day context model that vetoes
  loud items at night;
* two kinds of request with the same bodies (a listener, an hour, features; no prediction):

  - **celery**: ``POST /api/v1/systems/bench-hosted/decisions?wait_ms=2000``, the API: a scoring
    job, the task on the queue, a worker asks the models, combines, gates and inserts, the web
    process answers when the worker's answer arrives on its list;
  - **celery-result**: the same, on the server whose web processes wait for Celery's result instead
    (the library's way; the list is a custom piece and stays only while it beats this);
  - **in-process**: ``POST /api/score-in-process/bench-hosted`` (``oversight/benchviews.py``): the
    worker's own steps (``scoring.score``, ``decisions.build``, ``bulk.insert_one``) in the request.

Two phases, each in interleaved blocks (the order rotates, then reverses) so all kinds see the same machine:
latency with one client sending back to back (p50/p99: the Celery overhead, target ≤ 5 ms p50 over
in-process), and throughput with ``--clients`` (default 8) keep-alive clients (decisions/s).

Prints a table, writes ``bench/results/scoring-<pool>.json``; exit status 0 either way (a measurement).

    python -m bench.scoring [--duration 5] [--blocks 6] [--clients 8] [--workers 2] [--pool prefork|solo]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.run import BASE_DIR, RESULTS_DIR, Conn, Server, log, prepare_environment, summarize

BENCH_DB = "oversight_bench_scoring"
PREFIX = "oversight-bench-scoring"
SLUG = "bench-hosted"
API_PATH = f"/api/v1/systems/{SLUG}/decisions?wait_ms=2000"
PATHS = {"celery": API_PATH, "celery-result": API_PATH, "in-process": f"/api/score-in-process/{SLUG}"}
KINDS = ("celery", "celery-result", "in-process")
TARGET_OVERHEAD_MS = 5.0

SETUP = """
import json
import django
django.setup()
from oversight import access, actions, hosted
access.ensure_groups()
s = actions.create_system(None, {"slug": "SLUG", "name": "Bench hosted", "level": 3, "fallback": {"items": ["top"]},
                                 "routing": {"wait_ms": 2000}})
_, key = actions.create_api_key(None, s, "bench")
hosted.register(None, s.slug, {"name": "collab", "kind": "python", "target": "bench.hosted_models:collab",
                               "weight": 2, "timeout_ms": 1000})
hosted.register(None, s.slug, {"name": "daypart", "kind": "python", "target": "bench.hosted_models:daypart",
                               "role": "context", "timeout_ms": 1000})
print("BENCH_SETUP " + json.dumps({"key": key}))
""".replace("SLUG", SLUG)


NOOP = """
import json, statistics, time
import django
django.setup()
from oversight.celery import app
ts = []
for i in range(400):
    t = time.perf_counter()
    r = app.send_task("celery.accumulate", args=(1,), queue="scoring")
    r.get(timeout=5)
    r.forget()
    ts.append((time.perf_counter() - t) * 1000)
ts = sorted(ts[50:])
print("NOOP " + json.dumps({"p50_ms": ts[len(ts) // 2], "p99_ms": ts[int(len(ts) * 0.99)], "n": len(ts)}))
"""


def noop_round_trip(env: dict[str, str]) -> dict[str, Any]:
    """Celery's own floor here: a task that does nothing (Celery's built-in ``celery.accumulate``),
    sent to the same scoring workers and waited for the same way, one after another."""
    out = subprocess.run([sys.executable, "-c", NOOP], cwd=BASE_DIR, env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("NOOP "))[5:])


def body(rng: random.Random) -> bytes:
    return json.dumps({"subject": f"listener-{rng.randrange(1000)}",
                       "context": {"hour": rng.randrange(24), "device": rng.choice(["phone", "speaker"])},
                       "features": {"tempo": round(rng.gauss(110, 20), 1)}}).encode()


def request_bytes(path: str, key: str, payload: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


async def block(port: int, kind: str, key: str, clients: int, duration: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    conns = [await Conn.open(port) for _ in range(clients)]
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    end = time.perf_counter() + duration

    async def client(conn: Conn) -> None:
        while time.perf_counter() < end:
            data = request_bytes(PATHS[kind], key, body(rng))
            t0 = time.perf_counter()
            status, answer = await conn.request(data)
            latencies.append(time.perf_counter() - t0)
            route = json.loads(answer).get("route", "?") if status in (200, 201) else f"http {status}"
            outcomes[route] = outcomes.get(route, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    took = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"kind": kind, "latencies": latencies, "outcomes": outcomes, "seconds": took}


def phase(ports: dict[str, int], key: str, clients: int, duration: float, blocks: int, seed: int
          ) -> dict[str, Any]:
    kinds = KINDS
    merged: dict[str, dict[str, Any]] = {k: {"latencies": [], "outcomes": {}, "seconds": 0.0} for k in kinds}
    per_block: list[dict[str, Any]] = []
    for b in range(blocks):
        shift = b % len(kinds)  # abc, bca, cab, then the same reversed
        order = kinds[shift:] + kinds[:shift]
        if (b // len(kinds)) % 2:
            order = order[::-1]
        for kind in order:
            r = asyncio.run(block(ports[kind], kind, key, clients, duration, seed + b))
            m = merged[kind]
            m["latencies"] += r["latencies"]
            m["seconds"] += r["seconds"]
            for k, v in r["outcomes"].items():
                m["outcomes"][k] = m["outcomes"].get(k, 0) + v
            per_block.append({"block": b, "kind": kind, "p50_ms": summarize(r["latencies"])["p50_ms"],
                              "n": len(r["latencies"])})
    out: dict[str, Any] = {"clients": clients, "blocks": per_block}
    for kind, m in merged.items():
        s = summarize(m["latencies"])
        out[kind] = {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "n": len(m["latencies"]),
                     "per_s": len(m["latencies"]) / m["seconds"] if m["seconds"] else 0.0, "outcomes": m["outcomes"]}
    return out


def start_workers(env: dict[str, str], pool: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in (1, 2):
        logf = open(RESULTS_DIR / f"scoring-worker-{i}.log", "wb")  # noqa: SIM115 - lives as long as the worker
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "oversight", "worker", "-Q", "scoring", "-c", "1", "--pool", pool,
             "-n", f"bench-scoring-{i}@%h", "--loglevel", "WARNING"],
            cwd=BASE_DIR, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per block")
    p.add_argument("--blocks", type=int, default=6, help="blocks per kind and phase")
    p.add_argument("--clients", type=int, default=8, help="clients in the throughput phase")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--pool", default="prefork", choices=("prefork", "solo"),
                   help="the scoring workers' pool (the Procfile's is prefork: a killed child's task is redelivered)")
    args = p.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    environment = prepare_environment(BENCH_DB, PREFIX)
    log(f"migrating {BENCH_DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR,
                   env=environment.env, check=True)
    out = subprocess.run([sys.executable, "-c", SETUP], cwd=BASE_DIR, env=environment.env, check=True,
                         capture_output=True, text=True)
    key = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_SETUP "))[12:])["key"]
    server = Server(environment, args.workers, {"OVERSIGHT_SCORING_REPLY": "list"})
    by_result = Server(environment, args.workers, {"OVERSIGHT_SCORING_REPLY": "result"})
    by_result.log_path = RESULTS_DIR / "server-result.log"
    workers = start_workers(environment.env, args.pool)
    try:
        server.start()
        by_result.start()
        ports = {"celery": server.port, "celery-result": by_result.port, "in-process": server.port}
        time.sleep(3)  # the workers connect to the broker
        log("warm-up")
        phase(ports, key, 2, 2.0, 2, args.seed)
        log("latency: one client, interleaved blocks")
        latency = phase(ports, key, 1, args.duration, args.blocks, args.seed + 100)
        log("Celery's floor: a no-op task's round trip")
        noop = noop_round_trip(environment.env)
        log(f"throughput: {args.clients} clients, interleaved blocks")
        throughput = phase(ports, key, args.clients, args.duration, max(2, args.blocks // 2), args.seed + 200)
    finally:
        server.stop()
        by_result.stop()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=20)
    overhead = latency["celery"]["p50_ms"] - latency["in-process"]["p50_ms"]
    spread = block_spread(latency)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(), "pool": args.pool,
        "latency": latency, "throughput": throughput, "noop_task": noop,
        "target": {"celery_p50_overhead_ms": overhead, "max_ms": TARGET_OVERHEAD_MS,
                   "pass": overhead <= TARGET_OVERHEAD_MS},
        "spread": spread,
    }
    (RESULTS_DIR / f"scoring-{args.pool}.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


def render(r: dict[str, Any]) -> str:
    lines = [f"scoring workers: 2 × {r['pool']} (-c 1)", "",
             f"{'phase':<28}{'kind':<12}{'p50 ms':>9}{'p99 ms':>9}{'dec/s':>9}{'n':>8}  routes"]
    for name, ph in (("latency (1 client)", r["latency"]), (f"throughput ({r['throughput']['clients']} clients)",
                                                             r["throughput"])):
        for kind in KINDS:
            k = ph[kind]
            lines.append(f"{name:<28}{kind:<12}{k['p50_ms']:>9.2f}{k['p99_ms']:>9.2f}{k['per_s']:>9.0f}{k['n']:>8}  "
                         f"{k['outcomes']}")
    t = r["target"]
    sp = r["spread"]
    lines.append(f"\nCelery overhead at p50 over in-process: {t['celery_p50_overhead_ms']:.2f} ms "
                 f"(target ≤ {t['max_ms']:.0f} ms): {'PASS' if t['pass'] else 'FAIL'}")
    lines.append(f"per-block overhead (celery − in-process p50): {sp['overhead_ms']} ms")
    lines.append(f"per-block overhead with Celery's result backend (celery-result − in-process p50): "
                 f"{sp['result_overhead_ms']} ms")
    lines.append(f"per-block gain of the answer list over the result backend (celery-result − celery p50): "
                 f"{sp['list_gain_ms']} ms")
    n = r["noop_task"]
    lines.append(f"Celery's floor, a no-op task's round trip on the same workers: p50 {n['p50_ms']:.2f} ms, "
                 f"p99 {n['p99_ms']:.2f} ms")
    return "\n".join(lines)


def block_spread(ph: dict[str, Any]) -> dict[str, Any]:
    """Per block, each Celery path's p50 minus the in-process one's (how much the figure moves), and the
    list's gain over the result backend."""
    by_block: dict[int, dict[str, float]] = {}
    for b in ph["blocks"]:
        by_block.setdefault(b["block"], {})[b["kind"]] = b["p50_ms"]
    return {"overhead_ms": [round(v["celery"] - v["in-process"], 2) for v in by_block.values()],
            "result_overhead_ms": [round(v["celery-result"] - v["in-process"], 2) for v in by_block.values()],
            "list_gain_ms": [round(v["celery-result"] - v["celery"], 2) for v in by_block.values()]}


if __name__ == "__main__":
    raise SystemExit(main())
