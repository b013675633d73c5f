"""Audit chain bench (issue 9): what the hash chain costs per audited action, and verification speed.

Against a database of its own (``oversight_bench_audit``, recreated per run), in one process:

* **one writer**: ``--blocks`` blocks of ``--block`` audited actions each way, interleaved (the
  order alternates per block pair), each action in its own transaction as a write path runs it:
  - *chain*: ``oversight.audit.record`` (lock + next id + chain head, hash, INSERT, COMMIT);
  - *plain*: the same event as ``record`` wrote it before the chain, ``AuditEvent.objects.create``
    with the same content (its two hash columns filled with a constant: no lock, no read, no hash).
  Per action: wall time (median of the blocks, and the mean) and this process's CPU time.
* **concurrent writers**: ``--threads`` threads, each with its own connection, writing ``--block``
  actions each, chain and plain in turn (``--rounds`` rounds): the chain's lock serialises the
  audited transactions from ``record`` to commit, so this is where it shows.
* **verification**: the table emptied, ``--verify-rows`` chained events loaded with COPY (the
  hashes made in Python as ``record`` makes them), then ``audit.verify_log()`` timed (streamed).

    python -m bench.audit [--block 200] [--blocks 10] [--threads 4] [--rounds 3] [--verify-rows 100000]

Environment: ``DATABASE_URL`` (any database on the server) and ``REDIS_URL``, or neither.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DB = "oversight_bench_audit"
DATA = {"version": 7, "changes": {"level": {"from": 2, "to": 1}, "confidence_threshold": {"from": 0.6, "to": 0.7}}}
REASON = "tighten after incident 7"


def log(msg: str) -> None:
    print(f"[audit bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def create_database() -> str:
    import psycopg

    url = urlparse(os.environ["DATABASE_URL"])
    own = url.path.lstrip("/")
    for db in [d for d in (own, "postgres") if d and d != BENCH_DB]:  # the URL's database, else postgres
        try:
            conn = psycopg.connect(urlunparse(url._replace(path="/" + db)), autocommit=True)
        except psycopg.OperationalError:
            continue
        with conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        break
    else:
        raise SystemExit("no database to connect to on the server")
    return urlunparse(url._replace(path="/" + BENCH_DB))


def setup_django(bench_url: str) -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ["DATABASE_URL"] = bench_url
    os.environ["OVERSIGHT_REDIS_PREFIX"] = "oversight-bench-audit"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# --- the two ways of writing an event ---------------------------------------------------------------


def chain_action(user: Any, system: Any) -> None:
    from django.db import transaction

    from oversight import audit

    with transaction.atomic():
        audit.record(user, "policy.change", system=system, target=system.slug, reason=REASON, data=DATA)


def plain_action(user: Any, system: Any) -> None:
    from django.db import transaction
    from django.utils import timezone

    from oversight import audit
    from oversight.models import AuditEvent

    with transaction.atomic():
        AuditEvent.objects.create(actor=user, actor_label=user.get_username(), action="policy.change", system=system,
                                  target=system.slug, reason=REASON, data=audit.as_stored(DATA),
                                  created_at=timezone.now(), prev_hash="-" * 64, hash="-" * 64)


WAYS = {"chain": chain_action, "plain": plain_action}


def block(way: str, n: int, user: Any, system: Any) -> tuple[float, float]:
    action = WAYS[way]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        action(user, system)
    return time.perf_counter() - wall, time.process_time() - cpu


def one_writer(args: argparse.Namespace, user: Any, system: Any) -> dict[str, Any]:
    for way in WAYS:  # warm up: connections, statement paths, caches
        block(way, 50, user, system)
    times: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
    for i in range(args.blocks):
        for way in (("chain", "plain") if i % 2 == 0 else ("plain", "chain")):
            times[way].append(block(way, args.block, user, system))
    out: dict[str, Any] = {}
    for way, runs in times.items():
        per = [w / args.block * 1e3 for w, _ in runs]
        out[way] = {"median_ms": statistics.median(per), "mean_ms": statistics.fmean(per), "min_ms": min(per),
                    "cpu_ms": statistics.fmean(c / args.block * 1e3 for _, c in runs)}
    out["ratio_median"] = out["chain"]["median_ms"] / out["plain"]["median_ms"]
    out["extra_ms"] = out["chain"]["median_ms"] - out["plain"]["median_ms"]
    return out


def threaded(args: argparse.Namespace, user: Any, system: Any) -> dict[str, Any]:
    from django.db import connection

    def run(way: str) -> float:
        start = threading.Barrier(args.threads + 1)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                start.wait()
                block(way, args.block, user, system)
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=work) for _ in range(args.threads)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return args.threads * args.block / (time.perf_counter() - t0)

    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    for i in range(args.rounds):
        for way in (("chain", "plain") if i % 2 == 0 else ("plain", "chain")):
            rates[way].append(run(way))
    out: dict[str, Any] = {w: {"median_per_s": statistics.median(r), "all_per_s": r} for w, r in rates.items()}
    out["ratio_median"] = out["plain"]["median_per_s"] / out["chain"]["median_per_s"]
    return out


def verification(rows: int, user: Any, system: Any) -> dict[str, Any]:
    from django.db import connection

    from oversight import audit

    with connection.cursor() as cur:
        cur.execute("TRUNCATE oversight_auditevent")
    t0 = time.perf_counter()
    prev, start = audit.GENESIS, datetime.now(UTC) - timedelta(days=30)
    data = audit.as_stored(DATA)
    columns = ("id", "created_at", "actor_id", "actor_label", "action", "system_id", "target", "reason", "data",
               "prev_hash", "hash")
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cur, cur.copy(f"COPY oversight_auditevent ({', '.join(columns)}) FROM STDIN") as copy:
        for i in range(1, rows + 1):
            row = audit.ChainRow(i, start + timedelta(seconds=i), user.pk, user.get_username(), "policy.change",
                                 system.pk, system.slug, REASON, data)
            digest = audit.event_hash(prev, row)
            copy.write_row((*row[:8], json.dumps(data), prev, digest))
            prev = digest
    with connection.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('oversight_auditevent', 'id'), %s)", [rows])
        cur.execute("ANALYZE oversight_auditevent")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = audit.verify_log()
    verify_s = time.perf_counter() - t0
    if not (report.intact and report.count == rows and report.last_hash == prev):
        raise SystemExit(f"the loaded chain does not verify: {report.message}")
    return {"rows": rows, "load_s": load_s, "verify_s": verify_s, "verify_per_s": rows / verify_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--block", type=int, default=200)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--verify-rows", type=int, default=100_000)
    args = p.parse_args(argv)
    sys.path.insert(0, str(BASE_DIR))
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        from oversight import embedded

        embedded.ensure_environment()
    setup_django(create_database())
    from django.contrib.auth import get_user_model

    from oversight import actions

    user = get_user_model().objects.create_user("bench-admin", is_superuser=True)
    system = actions.create_system(None, {"slug": "bench", "name": "Bench", "level": 2})
    load = os.getloadavg()
    log(f"{platform.node()}, {os.cpu_count()} CPUs, load {load[0]:.2f}; one writer: {args.blocks} blocks of "
        f"{args.block} actions each way, interleaved")
    one = one_writer(args, user, system)
    for way in WAYS:
        r = one[way]
        log(f"  {way}: {r['median_ms']:.3f} ms per action (median of blocks; mean {r['mean_ms']:.3f}, "
            f"best {r['min_ms']:.3f}), this process's CPU {r['cpu_ms']:.3f} ms")
    log(f"  the chain: +{one['extra_ms']:.3f} ms per action, ×{one['ratio_median']:.2f}")
    log(f"{args.threads} writers at once, {args.block} actions each, {args.rounds} rounds each way")
    many = threaded(args, user, system)
    for way in WAYS:
        log(f"  {way}: {many[way]['median_per_s']:,.0f} actions/s (median; "
            f"{', '.join(f'{r:,.0f}' for r in many[way]['all_per_s'])})")
    log(f"  plain/chain throughput ×{many['ratio_median']:.2f}")
    log(f"verification: {args.verify_rows:,} chained events loaded, then audit.verify_log()")
    ver = verification(args.verify_rows, user, system)
    log(f"  verified in {ver['verify_s']:.2f} s: {ver['verify_per_s']:,.0f} events/s (load {ver['load_s']:.1f} s)")
    log(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
