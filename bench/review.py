"""`make bench-review`: the review queue with 1,000,000 waiting items (issue 11), in one run.

Against a database of its own (``oversight_bench_review`` on ``DATABASE_URL``'s server, created
and dropped by the run; ``--keep`` keeps it), migrated, with four systems and 32 operators:

* **load**: 1,000,000 waiting review items and their decisions, written with psycopg's COPY
  (``cursor.copy``) with the tables' secondary indexes dropped, then rebuilt: four systems (levels
  1, 2, 2, 3) in shares 10/40/35/15 %, gate items, after-the-fact audits and ~3 % second opinions,
  confidences spread per level (2 % none), ~250,000 distinct subjects, the gate's reasons (2 % a
  drift hold), made over the last 7 days (most past their SLA). Items carry their copies of the
  subject and reasons (``reviewqueue`` migration 0008) as the trigger would write them.
* **queue page, before**: the list's first page (``/review/``) without the two trigram indexes
  (``review_subject_trgm``, ``review_reasons_trgm``): unfiltered, by system, level, reason text
  (rare and common), subject search (any part, any case), decision id, and level 1 + reason;
  then the indexes are built (timed) and **after**: the same pages. Each page is requested
  through Django's test ``Client`` with a logged-in operator (server time: middleware, view,
  queries, template; no network), round-robin over the variants (first round discarded), next
  to the *bare view* (``GET /api/bare``: a tiny ``JsonResponse`` through the same client).
* **decision inserts**: ``decisions.submit_one`` (the API's single-decision path minus HTTP: gate,
  one ``INSERT`` of the decision with its item, durable commit) before and after the trigram
  indexes, and with the item trigger on and off in interleaved blocks (what copying the subject
  and reasons costs).
* **claim-next**: ``reviewqueue.actions.claim_next`` (the production code: SKIP LOCKED, lease,
  the ``lease.claim`` audit record) next to a *raw claim* (psycopg, no ORM, no audit: ``SELECT id
  … ORDER BY level, due_at, confidence, id LIMIT 1 FOR UPDATE SKIP LOCKED``, ``UPDATE``,
  ``COMMIT``). Each claimer is a **process** of its own (forked after setup) with its own database
  connection; after each claim it marks the item resolved with one ``UPDATE`` (not timed), as a
  person resolves before taking the next. Modes: 1 claimer (ORM and raw in interleaved blocks;
  and ORM with the filter "level 1, reason contains 'drift'"); 32 closed-loop claimers (each
  claims again at once: on this 2-core machine they queue for the CPUs and the audit chain's
  lock); 32 claimers with think time (each starts at a random moment in its first second, holds
  its item ~1 s, uniform 0.5–1.5 s, like a person, then claims again), in four interleaved blocks:
  claim_next as it runs, and claim_next with its statement compiled by the ORM on every claim
  (``reviewqueue.claim_statement.CACHE`` off: what the statement cache gains). Every claimed id is
  collected: a **double claim** is an id handed out twice (and the database is asked how many
  items were resolved: one per claim). The raw claim runs in each mode too (think time: half as long).

Targets (issue 11), printed PASS/FAIL (the exit status is 0 either way, this is a measurement):
claim-next p99 ≤ 10 ms with 32 concurrent claimers and 0 double claims; the list's first page,
filtered, ≤ 100 ms of server time (judged on the worst filter's p50 and p95; the max is shown).
Writes ``bench/results/review.json`` (with the plans of the text filters' first pages).

    python -m bench.review [--items 1000000] [--claims 2000] [--claimers 32] [--think-s 1.0]
                           [--think-duration 40] [--rounds 15] [--keep] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"
BENCH_DB = "oversight_bench_review"
PREFIX = "oversight-bench-review"
TARGET_CLAIM_P99_MS = 10.0
TARGET_PAGE_MS = 100.0
TRIGRAM_INDEXES = ("review_subject_trgm", "review_reasons_trgm")
DAY_S = 86_400

# slug, level, share of the items, SLA (s), threshold, subject prefix, subjects
SYSTEMS = (
    ("credit-limits", 1, 0.10, 300, 0.7, "applicant", 40_000),
    ("support-replies", 2, 0.40, 900, 0.6, "customer", 100_000),
    ("music-recs", 2, 0.35, 1800, 0.5, "listener", 80_000),
    ("fraud-flags", 3, 0.15, 3600, 0.8, "account", 30_000),
)
DRIFT = "input drift on {f} (PSI {v:.2f}): held for a person"
FEATURES = ("tempo", "amount", "hour", "country", "basket_size", "account_age")
MODELS = ("collab-v3", "collab-v4", "gbm-2024-11", "llm-reply-7b", "rules-v12")


def log(msg: str) -> None:
    print(f"[review bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the database ---------------------------------------------------------------------------------


def _admin_url() -> str:
    url = urlparse(os.environ["DATABASE_URL"])
    own = url.path.lstrip("/")
    return urlunparse(url._replace(path="/" + (own if own and own != BENCH_DB else "postgres")))


def create_database() -> str:
    import psycopg

    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return urlunparse(urlparse(os.environ["DATABASE_URL"])._replace(path="/" + BENCH_DB))


def drop_database() -> None:
    import psycopg

    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def setup_django(bench_url: str) -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ["DATABASE_URL"] = bench_url
    os.environ["OVERSIGHT_REDIS_PREFIX"] = PREFIX
    os.environ["OVERSIGHT_BENCH_BASELINE"] = "1"  # GET /api/bare, the bare view
    # No connection pool: the claimers are forked processes, each opening its own connection (a
    # pool's threads do not survive a fork); this process keeps one connection open instead.
    os.environ["DATABASE_POOL_MAX"] = "0"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver,localhost"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    connections["default"].settings_dict["CONN_MAX_AGE"] = None  # kept across requests, as a pooled one is
    call_command("migrate", verbosity=0, interactive=False)


def make_world(claimers: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from oversight import access, actions

    access.ensure_groups()
    operators = Group.objects.get(name=access.OPERATOR)
    systems = {}
    for slug, level, _, sla, threshold, _, _ in SYSTEMS:
        s = actions.create_system(None, {"slug": slug, "name": slug.replace("-", " ").title(), "level": level,
                                         "confidence_threshold": threshold, "review_sla_s": sla,
                                         "audit_sample_rate": 0.05, "fallback": {"items": ["safe"]}},
                                  readiness_rule=False)
        systems[slug] = s.id
    users = []
    for i in range(claimers + 1):
        u = get_user_model().objects.create_user(f"operator{i}")
        u.groups.add(operators)
        users.append(u.id)
    return {"systems": systems, "users": users}


# --- the data ---------------------------------------------------------------------------------------

NULL = r"\N"


def _uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 for the millisecond ``ms`` (rows are written in time order: the primary keys append)."""
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
                        | rng.getrandbits(62)))


def _ts(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _copy_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _reasons(rng: random.Random, level: int, threshold: float, conf: float | None, kind: str) -> list[str]:
    out: list[str] = []
    r = rng.random()
    if r < 0.01:
        out.append("circuit breaker half-open: in the 10% canary share")
    elif r < 0.02:
        out.append(f"model {rng.choice(MODELS)} left out: kill switch engaged (incident {rng.randint(1, 99)})")
    if kind == "audit":
        if level == 3:
            if rng.random() < 0.2:
                out += [f"guardrail: output item blocked by rule r{rng.randint(1, 40)}",
                        "answered with the system's fallback output; queued for a person"]
            else:
                out += ["level 3 (autonomous): released", "sampled for after-the-fact audit (share 0.05)"]
        else:
            out += [f"confidence {conf or 0:.2f} ≥ threshold {threshold:.2f}",
                    "sampled for after-the-fact audit (share 0.05)"]
        return out
    if rng.random() < 0.02:  # a drift hold: what the reason filter's rare example looks for
        out.append(DRIFT.format(f=rng.choice(FEATURES), v=rng.uniform(0.2, 0.6)))
    elif level == 1:
        out.append("level 1 (critical): a person approves every decision")
    elif conf is None:
        out.append("no confidence given: a person decides")
    else:
        out.append(f"confidence {conf:.2f} < threshold {threshold:.2f}: a person decides")
    if rng.random() < 0.03:
        out.append(f"suggested output: editor block {rng.randint(1, 500)}: item i{rng.randint(1, 9999)} removed")
    return out


def generate(n_items: int, system_ids: dict[str, int], seed: int, now_us: int, chunk: int = 20_000,
             ) -> Iterator[tuple[str, str, int, int, list[tuple[str, str, str]]]]:
    """COPY text for decisions and their items, in time order, ``chunk`` items at a time, until
    ``n_items`` items. Yields (decisions, items, n_decisions, n_items, samples)."""
    rng = random.Random(seed)
    shares = [s[2] for s in SYSTEMS]
    span_us = 7 * DAY_S * 1_000_000
    made = 0
    while made < n_items:
        n = min(chunk, n_items - made)
        # Creation times for this chunk: a slice of the 7 days, sorted (ids follow them).
        lo = now_us - span_us + made * span_us // n_items
        hi = now_us - span_us + (made + n) * span_us // n_items
        times = sorted(rng.randrange(lo, hi) for _ in range(n))
        dec_lines: list[str] = []
        item_lines: list[str] = []
        samples: list[tuple[str, str, str]] = []
        i = 0
        while i < n:
            slug, level, _, sla, threshold, prefix, subjects = rng.choices(SYSTEMS, shares)[0]
            sid = system_ids[slug]
            created = times[i]
            ms = created // 1000
            kind = "audit" if level == 3 or rng.random() < 0.03 else "gate"
            if rng.random() < 0.02:
                conf: float | None = None
            elif kind == "audit":
                conf = round(rng.uniform(threshold, 0.99), 4)
            elif level == 1:
                conf = round(rng.uniform(0.3, 0.99), 4)
            else:
                conf = round(rng.uniform(0.05, threshold), 4)
            did = _uuid7(ms, rng)
            subject = f"{prefix}-{rng.randrange(subjects)}"
            model = rng.choice(MODELS)
            items_out = json.dumps({"items": [f"i{rng.randrange(5000)}" for _ in range(3)]})
            conf_text = NULL if conf is None else repr(conf)
            prediction = (f'{{"output": {items_out}, "confidence": {"null" if conf is None else conf}, '
                          f'"model": "{model}"}}')
            reasons = _reasons(rng, level, threshold, conf, kind)
            ts = _ts(created)
            released = kind == "audit"
            values = {
                "id": did, "system_id": str(sid), "subject": subject, "context": '{"channel": "web"}',
                "features": f'{{"{rng.choice(FEATURES)}": {rng.random():.3f}}}', "prediction": prediction,
                "model": model, "output": items_out if released else NULL, "confidence": conf_text,
                "status": "released" if released else "pending_review", "route": "auto" if released else "human",
                "reasons": _copy_text(json.dumps(reasons, ensure_ascii=False)), "audit": "t" if released else "f",
                "idempotency_key": NULL, "request_hash": "", "policy_version": "1", "occurred_at": ts,
                "created_at": ts, "released_at": ts if released else NULL, "review": NULL, "failure": "",
            }
            dec_lines.append("\t".join(values[c] for c in DECISION_COLUMNS))
            due = _ts(created + sla * 1_000_000)
            reasons_text = _copy_text("\n".join(reasons))
            kinds = [kind] + (["second"] if kind == "gate" and rng.random() < 0.03 and i + 1 < n else [])
            for k in kinds:
                item = {
                    "id": _uuid7(ms, rng), "kind": k, "status": "open", "lease_expires_at": NULL,
                    "resolved_at": NULL, "action": "", "note": "", "output": NULL, "due_at": due, "created_at": ts,
                    "claimed_by_id": NULL, "decision_id": did, "resolved_by_id": NULL, "system_id": str(sid),
                    "confidence": conf_text, "level": str(level), "agrees": NULL, "claimed_at": NULL,
                    "subject": subject, "reasons_text": reasons_text,
                }
                item_lines.append("\t".join(item[c] for c in ITEM_COLUMNS))
                i += 1
            if rng.random() < 0.001:
                samples.append((did, subject, slug))
        made += n
        yield "\n".join(dec_lines) + "\n", "\n".join(item_lines) + "\n", len(dec_lines), len(item_lines), samples


DECISION_COLUMNS: tuple[str, ...] = ()
ITEM_COLUMNS: tuple[str, ...] = ()


def _columns(cur: Any, table: str) -> tuple[str, ...]:
    cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,))
    return tuple(r[0] for r in cur.fetchall())


def _secondary_indexes(cur: Any, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, definition) of the tables' indexes that back no constraint (those stay)."""
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = (quote_ident(i.indexname))::regclass)",
        (list(tables),))
    return list(cur.fetchall())


def load(bench_url: str, n_items: int, system_ids: dict[str, int], seed: int) -> dict[str, Any]:
    """COPY the decisions and items with the secondary indexes dropped (and the item trigger and
    foreign-key checks off: the rows carry their copies and reference each other), then rebuild
    the indexes but the trigram ones, then VACUUM ANALYZE."""
    global DECISION_COLUMNS, ITEM_COLUMNS
    import psycopg

    tables = ("oversight_decision", "reviewqueue_reviewitem")
    out: dict[str, Any] = {"index_build_s": {}}
    with psycopg.connect(bench_url) as conn, conn.cursor() as cur:
        DECISION_COLUMNS = _columns(cur, "oversight_decision")
        ITEM_COLUMNS = _columns(cur, "reviewqueue_reviewitem")
        known_d = {"id", "system_id", "subject", "context", "features", "prediction", "model", "output", "confidence",
                   "status", "route", "reasons", "audit", "idempotency_key", "request_hash", "policy_version",
                   "occurred_at", "created_at", "released_at", "review", "failure"}
        known_i = {"id", "kind", "status", "lease_expires_at", "resolved_at", "action", "note", "output", "due_at",
                   "created_at", "claimed_by_id", "decision_id", "resolved_by_id", "system_id", "confidence", "level",
                   "agrees", "claimed_at", "subject", "reasons_text"}
        unknown = (set(DECISION_COLUMNS) - known_d) | (set(ITEM_COLUMNS) - known_i)
        if unknown:
            raise SystemExit(f"the tables have columns this bench does not fill: {sorted(unknown)}")
        indexes = _secondary_indexes(cur, tables)
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        cur.execute("SET session_replication_role = replica")  # no FK checks, no item trigger: rows are complete
        t0 = time.perf_counter()
        now_us = int(time.time() * 1e6)
        n_dec = n_item = 0
        samples: list[tuple[str, str, str]] = []
        gen_s = 0.0
        d_sql = f"COPY oversight_decision ({', '.join(DECISION_COLUMNS)}) FROM STDIN"
        i_sql = f"COPY reviewqueue_reviewitem ({', '.join(ITEM_COLUMNS)}) FROM STDIN"
        pending_items: list[str] = []
        next_report = 0.2
        with cur.copy(d_sql) as copy:
            tg = time.perf_counter()
            for dec, items, nd, ni, smp in generate(n_items, system_ids, seed, now_us):
                gen_s += time.perf_counter() - tg
                copy.write(dec)
                pending_items.append(items)
                n_dec, n_item = n_dec + nd, n_item + ni
                samples += smp
                if n_item >= next_report * n_items:
                    log(f"  {n_item:,} items, {n_dec:,} decisions made and sent in {time.perf_counter() - t0:.0f} s")
                    next_report += 0.2
                tg = time.perf_counter()
        with cur.copy(i_sql) as copy:
            for items in pending_items:
                copy.write(items)
        cur.execute("SET session_replication_role = DEFAULT")
        conn.commit()
        out.update(decisions=n_dec, items=n_item, copy_s=time.perf_counter() - t0, generate_s=gen_s)
        log(f"  COPY done: {n_dec:,} decisions, {n_item:,} items in {out['copy_s']:.0f} s "
            f"(of which making the text {gen_s:.0f} s)")
        cur.execute("SET maintenance_work_mem = '256MB'")
        t_idx = time.perf_counter()
        later = []
        for name, definition in indexes:
            if name in TRIGRAM_INDEXES:
                later.append((name, definition))
                continue
            t = time.perf_counter()
            cur.execute(definition)
            conn.commit()
            out["index_build_s"][name] = time.perf_counter() - t
        out["indexes_s"] = time.perf_counter() - t_idx
        out["trigram_definitions"] = later
        out["samples"] = samples
    vacuum_analyze(bench_url, tables)
    out["vacuum_s"] = time.perf_counter() - t_idx - out["indexes_s"]
    log(f"  indexes rebuilt in {out['indexes_s']:.0f} s (trigram ones left for later), "
        f"VACUUM ANALYZE {out['vacuum_s']:.0f} s")
    return out


def vacuum_analyze(bench_url: str, tables: tuple[str, ...]) -> None:
    import psycopg

    with psycopg.connect(bench_url, autocommit=True) as conn:
        for t in tables:
            conn.execute(f"VACUUM (ANALYZE) {t}")


def build_trigram(bench_url: str, definitions: list[tuple[str, str]]) -> dict[str, float]:
    import psycopg

    took = {}
    with psycopg.connect(bench_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name, definition in definitions:
            t = time.perf_counter()
            conn.execute(definition)
            took[name] = time.perf_counter() - t
        conn.execute("ANALYZE reviewqueue_reviewitem")  # statistics on the indexed expressions
    return took


# --- measurements ---------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in seconds]
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99),
            "max_ms": max(ms) if ms else float("nan"), "mean_ms": statistics.fmean(ms) if ms else float("nan")}


# The queue page's variants: name, query.
def page_variants(samples: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    did, subject, _ = samples[len(samples) // 2]
    number = subject.rsplit("-", 1)[1]
    return [
        ("unfiltered", ""),
        ("system (music-recs, 35 %)", "?system=music-recs"),
        ("level 1 (10 %)", "?level=1"),
        ("reason 'drift' (2 %)", "?reason=drift"),
        ("reason 'threshold' (~65 %)", "?reason=threshold"),
        (f"subject search '{subject.upper()}'", f"?q={subject.upper()}"),
        (f"subject part '{number[-4:]}'", f"?q={number[-4:]}"),
        ("decision id search", f"?q=dec_{uuid.UUID(did).hex}"),
        ("level 1 + reason 'drift'", "?level=1&reason=drift"),
        ("system + kind + older than 60 min", "?system=support-replies&kind=gate&older=60"),
    ]


def page_phase(operator_id: int, variants: list[tuple[str, str]], rounds: int, warm: int = 1) -> dict[str, Any]:
    """Each variant requested once per round, in a rotating order; the first ``warm`` rounds not kept."""
    import re

    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(pk=operator_id))
    every = [("bare view (/api/bare)", "/api/bare"), *((n, "/review/" + q) for n, q in variants)]
    for path in ("/api/bare", "/review/"):  # the first requests import and compile: not measured
        client.get(path)
    times: dict[str, list[float]] = {n: [] for n, _ in every}
    shown: dict[str, Any] = {}
    for r in range(warm + rounds):
        order = every[r % len(every):] + every[: r % len(every)]
        for name, path in order:
            t0 = time.perf_counter()
            resp = client.get(path)
            dt = time.perf_counter() - t0
            if resp.status_code != 200:
                raise SystemExit(f"{path}: HTTP {resp.status_code}")
            if r >= warm:
                times[name].append(dt)
            if name not in shown and path.startswith("/review/"):
                html = resp.content.decode()
                total = re.search(r'<strong id="queue-total">([^<]+)</strong>', html)
                shown[name] = {"rows": html.count("<tr data-item="), "total": total.group(1) if total else "?"}
    return {name: {**summary_ms(v), **shown.get(name, {})} for name, v in times.items()}


def explain(query: str) -> str:
    """The plan of the list's first page for a query string (as the view runs it), first lines."""
    from django.http import QueryDict
    from django.utils import timezone

    from reviewqueue import triage
    from reviewqueue.views import QueueFilterForm

    f = QueueFilterForm(QueryDict(query.lstrip("?"))).filters()
    qs = triage.apply(triage.pending(), f, timezone.now()).select_related("decision", "system", "claimed_by")
    return qs.order_by(*triage.ORDER)[:50].explain()


def insert_phase(slug: str, n: int, seed: int, trigger_blocks: int = 0) -> dict[str, Any]:
    """``decisions.submit_one`` for ``n`` decisions a person must see (each with its item), one
    durable commit each. With ``trigger_blocks``: alternate blocks with the item trigger on and off."""
    from django.db import connection

    from oversight import config, decisions
    from oversight.schemas import DecisionIn

    rng = random.Random(seed)
    entry = config.cache.current().systems_by_slug[slug]

    def body(i: int) -> DecisionIn:
        return DecisionIn.model_validate({
            "subject": f"listener-new-{seed}-{i}", "context": {"channel": "web"}, "features": {"tempo": rng.random()},
            "prediction": {"output": {"items": [f"i{rng.randrange(5000)}" for _ in range(3)]},
                           "confidence": round(rng.uniform(0.05, 0.45), 3), "model": "collab-v3"}})

    def run(count: int, start: int) -> list[float]:
        out = []
        for i in range(start, start + count):
            payload = body(i)
            t0 = time.perf_counter()
            decisions.submit_one(entry, payload)
            out.append(time.perf_counter() - t0)
        return out

    run(20, -20)  # warm: statement preparation, caches
    if not trigger_blocks:
        return summary_ms(run(n, 0))
    per = max(1, n // trigger_blocks)
    got: dict[str, list[float]] = {"trigger on": [], "trigger off": []}
    for b in range(trigger_blocks):
        for state in (("on", "off") if b % 2 == 0 else ("off", "on")):
            with connection.cursor() as cur:
                cur.execute(f"ALTER TABLE reviewqueue_reviewitem {'ENABLE' if state == 'on' else 'DISABLE'} "
                            "TRIGGER reviewitem_decision_text")
            got[f"trigger {state}"] += run(per, b * 2 * per + (0 if state == "on" else per))
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE reviewqueue_reviewitem ENABLE TRIGGER reviewitem_decision_text")
        # The items made with the trigger off get their copies, as the trigger would have written them.
        cur.execute("UPDATE reviewqueue_reviewitem i SET subject = d.subject, reasons_text = array_to_string("
                    "ARRAY(SELECT jsonb_array_elements_text(d.reasons)), E'\\n') "
                    "FROM oversight_decision d WHERE d.id = i.decision_id AND i.subject IS NULL")
    return {k: summary_ms(v) for k, v in got.items()}


# --- claimers: processes ---------------------------------------------------------------------------

RAW_CLAIM = """
SELECT id FROM reviewqueue_reviewitem
 WHERE status = 'open' OR (status = 'claimed' AND lease_expires_at < now())
 ORDER BY level, due_at, confidence NULLS LAST, id
 LIMIT 1 FOR UPDATE SKIP LOCKED"""
RAW_TAKE = ("UPDATE reviewqueue_reviewitem SET status = 'claimed', claimed_by_id = %s, claimed_at = now(), "
            "lease_expires_at = now() + interval '5 minutes' WHERE id = %s")
DONE = ("UPDATE reviewqueue_reviewitem SET status = 'resolved', resolved_by_id = %s, resolved_at = now(), "
        "action = 'approve', lease_expires_at = NULL WHERE id = %s")


def _claimer(way: str, user_id: int, bench_url: str, claims: int, duration_s: float, think_s: float,
             filters: dict[str, Any], seed: int, start: Any, results: Any, slot: int) -> None:
    """One claimer process: claim (timed), think, mark the item resolved (not timed), again."""
    out: dict[str, Any] = {"slot": slot, "lat": [], "ids": [], "error": None}
    try:
        import psycopg
        from django.contrib.auth import get_user_model
        from django.db import connection

        from reviewqueue import actions, claim_statement, triage

        claim_statement.CACHE = way != "orm-compiled"  # compiled per claim: the statement cache's baseline
        rng = random.Random(seed)
        user = get_user_model().objects.get(pk=user_id)
        f = triage.Filters(**filters) if filters else None
        raw = psycopg.connect(bench_url) if way == "raw" else None

        def claim() -> str | None:
            if raw is not None:
                with raw.transaction():
                    row = raw.execute(RAW_CLAIM, prepare=True).fetchone()
                    if row is None:
                        return None
                    raw.execute(RAW_TAKE, (user_id, row[0]), prepare=True)
                    return str(row[0])
            item = actions.claim_next(user, filters=f)
            return None if item is None else str(item.id)

        def done(item_id: str) -> None:
            if raw is not None:
                with raw.transaction():
                    raw.execute(DONE, (user_id, item_id), prepare=True)
            else:
                with connection.cursor() as cur:
                    cur.execute(DONE, (user_id, item_id))

        if raw is not None:
            connection.close()  # one connection per claimer
        for _ in range(3):  # warm: connection, prepared statements (counted for double claims)
            got = claim()
            if got:
                out["ids"].append(got)
                done(got)
        start.wait()
        end = time.monotonic() + duration_s if duration_s else None
        if think_s:
            time.sleep(rng.uniform(0, think_s))  # people do not all start at the same instant
        while (end is None and len(out["lat"]) < claims) or (end is not None and time.monotonic() < end):
            t0 = time.perf_counter()
            got = claim()
            dt = time.perf_counter() - t0
            if got is None:
                break
            out["lat"].append(dt)
            out["ids"].append(got)
            if think_s:
                time.sleep(rng.uniform(0.5, 1.5) * think_s)
            done(got)
        if raw is not None:
            raw.close()
        connection.close()
    except BaseException as exc:  # reported by the parent
        out["error"] = repr(exc)
        start.abort()  # the others (and the parent) stop waiting
    results.put(out)


def claim_phase(way: str, users: list[int], bench_url: str, claims: int = 0, duration_s: float = 0.0,
                think_s: float = 0.0, filters: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """``len(users)`` claimer processes at once; returns latencies, claims/s and double claims."""
    from django.db import connections

    connections.close_all()  # nothing of this process's connection crosses the fork
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(users) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(way, u, bench_url, claims, duration_s, think_s, filters or {},
                                                seed * 1000 + k, start, results, k))
             for k, u in enumerate(users)]
    for p in procs:
        p.start()
    try:
        start.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass  # a claimer failed: its error comes with the results
    t0 = time.perf_counter()
    got = [results.get(timeout=600 + duration_s) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        raise SystemExit(f"claimers failed: {errors[:3]}")
    lat = [v for g in got for v in g["lat"]]
    ids = [i for g in got for i in g["ids"]]
    return {"way": way, "claimers": len(users), "think_s": think_s, "wall_s": wall,
            "claims_per_s": len(lat) / wall if wall else 0.0, "double_claims": len(ids) - len(set(ids)),
            "claimed": len(ids), **summary_ms(lat), "ids": ids, "lat_s": lat}


def verify_no_double(bench_url: str, ids: list[str]) -> dict[str, int]:
    """Against the database: every id handed out is one item, resolved by the one person who claimed it."""
    import psycopg

    with psycopg.connect(bench_url) as conn:
        n_resolved = conn.execute("SELECT count(*) FROM reviewqueue_reviewitem WHERE status = 'resolved'").fetchone()
        claims = conn.execute("SELECT count(*) FROM oversight_auditevent WHERE action = 'lease.claim'").fetchone()
    return {"handed_out": len(ids), "distinct": len(set(ids)), "resolved_rows": int(n_resolved[0]) if n_resolved else 0,
            "lease_claim_audits": int(claims[0]) if claims else 0}


# --- report ------------------------------------------------------------------------------------------------


def _f(v: float) -> str:
    return "—" if v != v else (f"{v:.1f}" if v < 100 else f"{v:,.0f}")


def _x(a: float, b: float) -> str:
    return "—" if not b or a != a or b != b else f"×{a / b:.1f}"


def render(res: dict[str, Any]) -> str:
    lines = [
        "", f"Review queue bench — {res['host']}, {res['cpus']} CPUs, PostgreSQL {res['postgres']}, "
        f"{res['items']:,} waiting items ({res['decisions']:,} decisions), {res['started']}",
        f"load: COPY {res['load']['copy_s']:.0f} s, indexes {res['load']['indexes_s']:.0f} s, "
        f"trigram indexes {sum(res['trigram_build_s'].values()):.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in res['trigram_build_s'].items())})",
        "",
        "claim-next (each claimer a process with its own connection; p50/p99 of the claim call, ms)",
        f"{'':58} {'claims':>7} {'p50':>7} {'p99':>7} {'max':>7} {'claims/s':>9} {'double':>7} "
        f"{'p50 vs raw':>10} {'p99 vs raw':>10}",
    ]
    raw_for = {"1": res["claims"].get("1 claimer: raw"), "32": res["claims"].get("32 closed-loop: raw"),
               "think": next((v for k, v in res["claims"].items() if "think" in k and k.endswith("raw")), None)}
    for name, r in res["claims"].items():
        which = "think" if "think" in name else "32" if name.startswith("32 closed") else "1"
        base = raw_for[which] if "claim_next" in name else None
        vs50 = _x(r["p50_ms"], base["p50_ms"]) if base else ""
        vs99 = _x(r["p99_ms"], base["p99_ms"]) if base else ""
        lines.append(
            f"{name:58} {r['n']:>7,} {_f(r['p50_ms']):>7} {_f(r['p99_ms']):>7} {_f(r['max_ms']):>7} "
            f"{r['claims_per_s']:>9,.0f} {r['double_claims']:>7} {vs50:>10} {vs99:>10}")
    for name, r in res["claims"].items():
        if "block_p99_ms" in r:
            lines.append(f"  {name}: p99 per block {', '.join(f'{v:.1f}' for v in r['block_p99_ms'])} ms")
    lines += ["", "queue page, first page (server time through the test Client, ms; rows shown, total shown)",
              f"{'':44} {'before p50':>10} {'after p50':>9} {'p95':>6} {'max':>6} {'p50 vs bare':>11} {'rows':>5} "
              f"{'total':>7}"]
    bare = res["pages_after"]["bare view (/api/bare)"]["p50_ms"]
    for name, a in res["pages_after"].items():
        b = res["pages_before"].get(name, {})
        lines.append(f"{name[:44]:44} {_f(b.get('p50_ms', float('nan'))):>10} {_f(a['p50_ms']):>9} "
                     f"{_f(a['p95_ms']):>6} {_f(a['max_ms']):>6} {_x(a['p50_ms'], bare):>11} {a.get('rows', ''):>5} "
                     f"{a.get('total', ''):>7}")
    ins = res["inserts"]
    on, off = ins["trigger"]["trigger on"], ins["trigger"]["trigger off"]
    lines += ["", "decision inserts (decisions.submit_one: gate + one INSERT with its item + commit; ms)",
              f"  before trigram indexes p50 {_f(ins['before']['p50_ms'])} p99 {_f(ins['before']['p99_ms'])}; "
              f"after p50 {_f(ins['after']['p50_ms'])} p99 {_f(ins['after']['p99_ms'])} (one after the other)",
              f"  item trigger on/off, interleaved: on p50 {_f(on['p50_ms'])} p99 {_f(on['p99_ms'])}; "
              f"off p50 {_f(off['p50_ms'])} p99 {_f(off['p99_ms'])}", "", "targets (issue 11)"]
    for t in res["targets"]:
        lines.append(f"  {'PASS' if t['ok'] else 'FAIL'}  {t['what']}: {t['got']}")
    lines.append(f"  double claims checked against the database: {res['double_check']}")
    return "\n".join(lines)


def _by(key: str) -> Callable[[tuple[str, dict[str, Any]]], float]:
    return lambda kv: float(kv[1][key])


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    closed = res["claims"]["32 closed-loop: claim_next"]
    think = res["claims"].get("32 with ~1 s think time: claim_next")
    out.append({"what": f"claim-next p99 ≤ {TARGET_CLAIM_P99_MS:g} ms, 32 closed-loop claimers",
                "ok": closed["p99_ms"] <= TARGET_CLAIM_P99_MS, "got": f"{closed['p99_ms']:.1f} ms"})
    if think:
        out.append({"what": f"claim-next p99 ≤ {TARGET_CLAIM_P99_MS:g} ms, 32 claimers with ~1 s think time",
                    "ok": think["p99_ms"] <= TARGET_CLAIM_P99_MS, "got": f"{think['p99_ms']:.1f} ms"})
    doubles = sum(r["double_claims"] for r in res["claims"].values())
    out.append({"what": "double claims = 0 (every phase)", "ok": doubles == 0, "got": str(doubles)})
    filtered = {k: v for k, v in res["pages_after"].items() if not k.startswith(("bare", "unfiltered"))}
    for stat in ("p50", "p95"):
        worst = max(((n, r) for n, r in filtered.items()), key=_by(f"{stat}_ms"))
        out.append({"what": f"queue page, first page, filtered ≤ {TARGET_PAGE_MS:g} ms (worst {stat} of the filters)",
                    "ok": worst[1][f"{stat}_ms"] <= TARGET_PAGE_MS,
                    "got": f"{worst[1][f'{stat}_ms']:.0f} ms ({worst[0]}; its max {worst[1]['max_ms']:.0f} ms)"})
    return out


# --- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--claims", type=int, default=2000, help="claims by the single claimer, each way")
    p.add_argument("--claimers", type=int, default=32)
    p.add_argument("--per-claimer", type=int, default=100, help="claims per closed-loop claimer")
    p.add_argument("--think-s", type=float, default=1.0)
    p.add_argument("--think-duration", type=float, default=40.0)
    p.add_argument("--rounds", type=int, default=25, help="rounds of queue pages after the indexes")
    p.add_argument("--before-rounds", type=int, default=2)
    p.add_argument("--inserts", type=int, default=600)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--keep", action="store_true", help="keep the bench database")
    p.add_argument("--quick", action="store_true", help="100,000 items and fewer rounds (a try-out)")
    p.add_argument("--load-only", action="store_true", help="load, build every index, keep the database, stop")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.claims, args.per_claimer, args.think_duration = 100_000, 400, 30, 10.0
        args.rounds, args.inserts = 5, 200
    sys.path.insert(0, str(BASE_DIR))
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        from oversight import embedded

        embedded.ensure_environment()
    bench_url = create_database()
    log(f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; database {BENCH_DB}")
    try:
        setup_django(bench_url)
        res = run(args, bench_url)
    finally:
        from django.db import connections

        connections.close_all()
        if not (args.keep or args.load_only):
            drop_database()
            log(f"dropped {BENCH_DB}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "review.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    print(render(res))
    log(f"results in {path.relative_to(BASE_DIR)}")
    return 0


def run(args: argparse.Namespace, bench_url: str) -> dict[str, Any]:
    import psycopg

    world = make_world(args.claimers)
    log(f"loading {args.items:,} waiting items with their decisions (COPY)")
    loaded = load(bench_url, args.items, world["systems"], args.seed)
    if args.load_only:
        build_trigram(bench_url, loaded["trigram_definitions"])
        vacuum_analyze(bench_url, ("reviewqueue_reviewitem",))
        raise SystemExit(f"loaded; kept {BENCH_DB}; sample decisions: {loaded['samples'][:3]}")
    with psycopg.connect(bench_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    res: dict[str, Any] = {
        "host": platform.node(), "cpus": os.cpu_count(), "postgres": version[0] if version else "?",
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "items": loaded["items"],
        "decisions": loaded["decisions"], "load": {k: v for k, v in loaded.items() if k != "samples"},
        "load_avg_start": os.getloadavg()[0], "args": vars(args),
    }
    page_user = world["users"][-1]
    claimers = world["users"][: args.claimers]
    variants = page_variants(loaded["samples"])

    log(f"queue pages without the trigram indexes ({args.before_rounds} rounds)")
    res["pages_before"] = page_phase(page_user, variants, args.before_rounds, warm=0)
    _log_pages(res["pages_before"])
    log("decision inserts without the trigram indexes")
    before_ins = insert_phase("music-recs", args.inserts, seed=1)
    log(f"  p50 {before_ins['p50_ms']:.2f} ms, p99 {before_ins['p99_ms']:.2f} ms")

    log("building the trigram indexes")
    res["trigram_build_s"] = build_trigram(bench_url, loaded["trigram_definitions"])
    vacuum_analyze(bench_url, ("reviewqueue_reviewitem",))
    log(f"  {', '.join(f'{k} {v:.1f} s' for k, v in res['trigram_build_s'].items())}")
    res["plans"] = {name: explain(q) for name, q in variants if "reason" in name or "subject" in name}

    log(f"queue pages with the trigram indexes ({args.rounds} rounds)")
    res["pages_after"] = page_phase(page_user, variants, args.rounds)
    _log_pages(res["pages_after"])
    log("decision inserts with the trigram indexes; then the item trigger on/off in interleaved blocks")
    after_ins = insert_phase("music-recs", args.inserts, seed=2)
    trig = insert_phase("music-recs", args.inserts, seed=3, trigger_blocks=6)
    res["inserts"] = {"before": before_ins, "after": after_ins, "trigger": trig}
    log(f"  after p50 {after_ins['p50_ms']:.2f} ms, p99 {after_ins['p99_ms']:.2f} ms; trigger on/off p50 "
        f"{trig['trigger on']['p50_ms']:.2f}/{trig['trigger off']['p50_ms']:.2f} ms")

    claims: dict[str, Any] = {}
    log(f"claim-next, 1 claimer: claim_next and raw in interleaved blocks ({args.claims} claims each)")
    blocks = 4
    per = max(1, args.claims // blocks)
    one: dict[str, list[dict[str, Any]]] = {"claim_next": [], "raw": []}
    for b in range(blocks):
        for way in (("claim_next", "raw") if b % 2 == 0 else ("raw", "claim_next")):
            one[way].append(claim_phase("orm" if way == "claim_next" else "raw", claimers[:1], bench_url,
                                        claims=per, seed=b))
    for way, parts in one.items():
        claims[f"1 claimer: {way}"] = _merge(parts)
    log("claim-next, 1 claimer, filtered: level 1 + reason contains 'drift'")
    claims["1 claimer: claim_next, level 1 + reason 'drift'"] = claim_phase(
        "orm", claimers[:1], bench_url, claims=max(50, args.claims // 8), filters={"level": 1, "reason": "drift"},
        seed=50)
    n = len(claimers)
    log(f"claim-next, {n} closed-loop claimer processes, {args.per_claimer} claims each: claim_next, raw, claim_next")
    closed = [claim_phase("orm", claimers, bench_url, claims=args.per_claimer, seed=60),
              claim_phase("raw", claimers, bench_url, claims=args.per_claimer, seed=61),
              claim_phase("orm", claimers, bench_url, claims=args.per_claimer, seed=62)]
    claims[f"{n} closed-loop: claim_next"] = _merge([closed[0], closed[2]])
    claims[f"{n} closed-loop: raw"] = closed[1]
    log(f"claim-next, {n} claimers with ~{args.think_s:g} s think time: claim_next, and claim_next with its "
        f"statement compiled on every claim, in 4 interleaved blocks of {args.think_duration / 2:g} s")
    think: dict[str, list[dict[str, Any]]] = {"orm": [], "orm-compiled": []}
    for b in range(4):
        way = ("orm", "orm-compiled")[b % 2]
        think[way].append(claim_phase(way, claimers, bench_url, duration_s=args.think_duration / 2,
                                      think_s=args.think_s, seed=70 + b))
        log(f"  block {b + 1} ({way}): p50 {think[way][-1]['p50_ms']:.2f} ms, p99 {think[way][-1]['p99_ms']:.2f} ms")
    claims[f"{n} with ~{args.think_s:g} s think time: claim_next"] = {
        **_merge(think["orm"]), "block_p99_ms": [r["p99_ms"] for r in think["orm"]]}
    claims[f"{n} with ~{args.think_s:g} s think time: claim_next, compiled per claim"] = {
        **_merge(think["orm-compiled"]), "block_p99_ms": [r["p99_ms"] for r in think["orm-compiled"]]}
    log(f"raw claims, {n} claimers with ~{args.think_s:g} s think time for {args.think_duration / 2:g} s")
    claims[f"{n} with ~{args.think_s:g} s think time: raw"] = claim_phase(
        "raw", claimers, bench_url, duration_s=args.think_duration / 2, think_s=args.think_s, seed=71)
    if n != 32:  # the report and targets name the 32-claimer rows
        claims = {k.replace(f"{n} ", "32 ", 1): v for k, v in claims.items()}
    every_id = [i for r in claims.values() for i in r.pop("ids")]
    for r in claims.values():
        r.pop("lat_s")
    res["double_check"] = verify_no_double(bench_url, every_id)
    for name, r in claims.items():
        log(f"  {name}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['claims_per_s']:.0f} claims/s, "
            f"double claims {r['double_claims']}")
    res["claims"] = claims
    res["targets"] = targets(res)
    res["load_avg_end"] = os.getloadavg()[0]
    return res


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Blocks of one kind as one phase: latencies pooled (p50/p99 over all), claims/s over the summed
    wall time, double claims over every id the blocks handed out."""
    lat = [v for p in parts for v in p["lat_s"]]
    ids = [i for p in parts for i in p["ids"]]
    wall = sum(p["wall_s"] for p in parts)
    return {**parts[0], **summary_ms(lat), "wall_s": wall, "claims_per_s": len(lat) / wall if wall else 0.0,
            "ids": ids, "lat_s": lat, "double_claims": len(ids) - len(set(ids)), "claimed": len(ids)}


def _log_pages(pages: dict[str, Any]) -> None:
    for name, r in pages.items():
        log(f"  {name}: p50 {r['p50_ms']:.1f} ms, max {r['max_ms']:.1f} ms ({r.get('rows', '')} rows, "
            f"total {r.get('total', '')})")


if __name__ == "__main__":
    raise SystemExit(main())
