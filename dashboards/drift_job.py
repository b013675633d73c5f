"""The drift job (issue 8): a system's windows, their drift against its reference, alerts.

Plain functions; the Celery task (``dashboards.tasks.compute_drift``) only calls them.

**Windows** follow the system's policy (``AISystem.window``):

* ``{"kind": "time", "seconds": S}``: window ``i`` holds the decisions whose ``occurred_at`` is in
  ``[i·S, (i+1)·S)`` seconds after the Unix epoch; ``window_start``/``window_end`` are those bounds.
  Backfilled history (old ``occurred_at``) lands in the old windows it belongs to. The current,
  unfinished window is computed too, and again as it fills.
* ``{"kind": "count", "size": N}``: the system's decisions in ``(occurred_at, id)`` order, cut every
  N; only full windows are computed (the tail waits for its N-th decision). ``window_start`` is
  the first decision's ``occurred_at`` (one microsecond after the previous window's start when
  several windows start at the same instant, so each window has its own start), ``window_end`` the
  last one's. A backfilled decision shifts every later window by one: those are recomputed and
  their earlier rows replaced.

**Which windows** are (re)computed: those holding a decision whose ``created_at`` is after the
system's watermark minus :data:`OVERLAP` (after the watermark itself once a run has started
OVERLAP past it: :func:`read_from`). The watermark is the largest ``created_at`` the job has
processed, kept as a ``MetricPoint`` named ``_drift.watermark.<kind>.<size>`` (value: epoch seconds)
and advanced only after every window is stored. The overlap covers decisions committed after the
job read (``created_at`` is set before the INSERT commits): a window seen twice is recomputed to
the same result. A system with no watermark for its current policy (first run, or the policy's
window changed) is computed from scratch: its earlier results are deleted first.

**Storage**: each window's results (every feature × method) replace that window's earlier rows in
one transaction, so a job that dies half-way leaves whole windows, and running it twice stores the
same rows. ``primary`` marks the method whose verdict counts; ``drifted`` is None when the window
(or reference) had too little data for a verdict; ``rows`` is the usable values the statistic used.

**Alerts**, per feature, with hysteresis: a feature's alert should be open when any of its last
:data:`CALM_WINDOWS` windows with a verdict (in window order) drifted; so it opens on the first
drifted window, stays open while drift continues or comes and goes, and resolves only after
:data:`CALM_WINDOWS` consecutive calm windows. An unfinished time window counts when it drifted,
not when it is calm. Opening and resolving are audited (``alert.open`` / ``alert.resolve``) and
pushed to the system's and the overview's Channels groups after commit, as are each computed
window's primary results (``{"type": "drift", ...}``).

Only one run per system at a time (a PostgreSQL advisory lock); reading a window keeps only its
referenced columns in memory (rows streamed in chunks of :data:`CHUNK`).

Over ~400 lines on purpose: windows, storage, watermark and alerts are the steps of one job
whose rules (idempotency, no half-written window) hold only together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from dashboards import drift
from dashboards.models import Alert, DriftResult, MetricPoint, Reference
from oversight import audit, events
from oversight.models import AISystem, Decision

log = logging.getLogger(__name__)

#: Calm (not drifted) windows in a row that resolve a feature's open drift alert.
CALM_WINDOWS = 2
#: Decisions created this long before the watermark are looked at again (late commits).
OVERLAP = timedelta(minutes=5)
#: Rows fetched from PostgreSQL at a time while reading a window.
CHUNK = 5000
#: At most this many of the newest computed windows of a run are pushed live.
PUSH_WINDOWS = 10
WATERMARK_PREFIX = "_drift.watermark"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Columns that are not features: the decision's confidence and output columns.
CONFIDENCE = "prediction.confidence"
OUTPUT = "prediction.output"
_LOCK_CLASS = 0x0D71F7  # pg_advisory_lock(class, system id) namespace of this job


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    # Which decisions: time windows by occurred_at in [start, end); count windows by
    # (occurred_at, id) from ``first`` to ``last``, both included.
    first: tuple[datetime, uuid.UUID] | None = None
    last: tuple[datetime, uuid.UUID] | None = None
    complete: bool = True


def policy_of(system: AISystem) -> tuple[str, int]:
    w = system.window or {}
    if w.get("kind") == "count":
        return "count", int(w["size"])
    return "time", int(w.get("seconds", 3600))


def watermark_name(kind: str, size: int, thresholds: dict[str, Any] | None = None) -> str:
    """The watermark of one window policy and one set of thresholds: changing either starts over."""
    name = f"{WATERMARK_PREFIX}.{kind}.{size}"
    if thresholds:
        digest = hashlib.sha256(json.dumps(thresholds, sort_keys=True).encode()).hexdigest()[:12]
        name += f".{digest}"
    return name


def thresholds(system: AISystem, references: dict[str, drift.Reference]) -> tuple[
        dict[str, Any], dict[str, Any], list[str]]:
    """The system's drift thresholds (policy field ``drift``) as ``detect_drift`` takes them. A feature
    rule naming a method its column type does not have (chi2 for a number) is left out and reported."""
    policy = system.drift or {}
    defaults = {k: policy[k] for k in ("numeric", "categorical") if policy.get(k)}
    overrides: dict[str, Any] = {}
    ignored: list[str] = []
    for feature, rule in (policy.get("features") or {}).items():
        ref = references.get(feature)
        methods = drift.NUMERIC_METHODS if isinstance(ref, drift.NumericReference) else drift.CATEGORICAL_METHODS
        if ref is not None and rule.get("method") not in (None, *methods):
            ignored.append(f"{feature}: {rule['method']} does not apply to a {ref.kind} column")
            continue
        overrides[feature] = rule
    return defaults, overrides, ignored


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


# --- reading windows -----------------------------------------------------------------------------


def _number(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return math.nan  # missing, or not a number: counted as missing


def _output_value(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return v


def read_columns(rows: QuerySet[Decision], references: dict[str, drift.Reference]) -> tuple[dict[str, Any], int]:
    """The referenced columns of a window's decisions, streamed in chunks: numeric ones as float
    arrays (NaN for missing), categorical ones as lists. ``prediction.confidence`` is the
    ``confidence`` column, ``prediction.output`` the ``output`` one (objects as canonical JSON)."""
    numeric = {k for k, r in references.items() if isinstance(r, drift.NumericReference)}
    nums: dict[str, array[float]] = {k: array("d") for k in numeric}
    cats: dict[str, list[Any]] = {k: [] for k in references if k not in numeric}
    features_wanted = [k for k in references if k not in (CONFIDENCE, OUTPUT)]
    n = 0
    for features, confidence, output in rows.values_list("features", "confidence", "output").iterator(
        chunk_size=CHUNK
    ):
        n += 1
        feats = features if isinstance(features, dict) else {}
        for k in features_wanted:
            v = feats.get(k)
            if k in nums:
                nums[k].append(_number(v))
            else:
                cats[k].append(v)
        if CONFIDENCE in nums:
            nums[CONFIDENCE].append(_number(confidence))
        elif CONFIDENCE in cats:
            cats[CONFIDENCE].append(confidence)
        if OUTPUT in nums:
            nums[OUTPUT].append(_number(output))
        elif OUTPUT in cats:
            cats[OUTPUT].append(_output_value(output))
    columns: dict[str, Any] = {
        k: np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0) for k, a in nums.items()
    }
    columns.update(cats)
    return columns, n


def window_rows(system_id: int, w: Window) -> QuerySet[Decision]:
    qs = Decision.objects.filter(system_id=system_id)
    if w.first is None or w.last is None:
        return qs.filter(occurred_at__gte=w.start, occurred_at__lt=w.end)
    (t0, id0), (t1, id1) = w.first, w.last
    return qs.filter(Q(occurred_at__gt=t0) | Q(occurred_at=t0, id__gte=id0)).filter(
        Q(occurred_at__lt=t1) | Q(occurred_at=t1, id__lte=id1)
    )


# --- which windows ---------------------------------------------------------------------------------


def _time_windows(system_id: int, seconds: int, since: datetime | None, now: datetime) -> tuple[list[Window], Any]:
    """Time windows holding decisions created after ``since`` (all when None), and their max created_at."""
    sql = (
        f"SELECT floor(extract(epoch FROM occurred_at) / %s)::bigint, max(created_at) "  # noqa: S608
        f"FROM {Decision._meta.db_table} WHERE system_id = %s"
    )
    params: list[Any] = [seconds, system_id]
    if since is not None:
        sql += " AND created_at > %s"
        params.append(since)
    with connection.cursor() as cur:
        cur.execute(sql + " GROUP BY 1 ORDER BY 1", params)
        found = cur.fetchall()
    windows = []
    for i, _ in found:
        start = EPOCH + timedelta(seconds=int(i) * seconds)
        end = start + timedelta(seconds=seconds)
        windows.append(Window(start, end, complete=end <= now))
    return windows, max((m for _, m in found), default=None)


def count_windows(system_id: int, size: int) -> list[Window]:
    """Every full count window of the system, in order (one row per window boundary read)."""
    sql = (
        "SELECT rn, occurred_at, id FROM (SELECT occurred_at, id, "  # noqa: S608
        "row_number() OVER (ORDER BY occurred_at, id) - 1 AS rn "
        f"FROM {Decision._meta.db_table} WHERE system_id = %s) t "
        "WHERE mod(rn, %s) = 0 OR mod(rn, %s) = %s ORDER BY rn"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [system_id, size, size, size - 1])
        bounds = cur.fetchall()
    firsts: dict[int, tuple[datetime, uuid.UUID]] = {}
    windows: list[Window] = []
    previous: datetime | None = None
    for rn, t, did in bounds:
        k, r = divmod(int(rn), size)
        if r == 0:
            firsts[k] = (t, did)
        if r == size - 1 and k in firsts:
            start = firsts[k][0]
            if previous is not None and start <= previous:
                start = previous + timedelta(microseconds=1)
            previous = start
            windows.append(Window(start, max(t, start), first=firsts[k], last=(t, did)))
    return windows


# --- storing ----------------------------------------------------------------------------------------


def result_rows(system_id: int, reference_id: int, w: Window, report: drift.DriftReport) -> list[DriftResult]:
    return [
        DriftResult(
            system_id=system_id,
            reference_id=reference_id,
            window_start=w.start,
            window_end=w.end,
            feature=r.feature,
            method=r.method,
            statistic=_finite(r.statistic),
            threshold=_finite(r.threshold),
            p_value=_finite(r.p_value),
            drifted=None if r.insufficient_data else bool(r.drifted),
            p_threshold=r.p_threshold,
            severity=_finite(r.severity),
            primary=r.primary,
            rows=r.n_current,
        )
        for r in report.results
    ]


def drift_message(slug: str, row: DriftResult) -> dict[str, Any]:
    return {
        "type": "drift",
        "system": slug,
        "feature": row.feature,
        "method": row.method,
        "statistic": row.statistic,
        "threshold": row.threshold,
        "p_value": row.p_value,
        "drifted": row.drifted,
        "p_threshold": row.p_threshold,
        "severity": row.severity,
        "window_start": row.window_start.isoformat(),
        "window_end": row.window_end.isoformat(),
    }


def store_window(
    system: AISystem, reference_id: int, w: Window, report: drift.DriftReport, *, replace_from: bool, push: bool
) -> int:
    """Replace the window's stored results (and, with ``replace_from``, every later one) in one transaction."""
    rows = result_rows(system.id, reference_id, w, report)
    with transaction.atomic():
        stored = DriftResult.objects.filter(system_id=system.id)
        if replace_from:
            stored.filter(window_start__gte=w.start).delete()
        else:
            stored.filter(window_start=w.start).delete()
        DriftResult.objects.bulk_create(rows)
        if push:  # one message per window (a batch): each send costs a round trip to the channel layer
            groups = [events.system_group(system.slug), events.OVERVIEW_GROUP]
            events.send_on_commit(groups, {"type": "batch", "messages": [
                drift_message(system.slug, row) for row in rows if row.primary]})
    return len(rows)


def read_watermark(system_id: int, name: str) -> datetime | None:
    value = MetricPoint.objects.filter(system_id=system_id, name=name, t=EPOCH).values_list("value", flat=True).first()
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def write_watermark(system_id: int, name: str, at: datetime) -> None:
    MetricPoint.objects.update_or_create(system_id=system_id, name=name, t=EPOCH, defaults={"value": at.timestamp()})


def read_from(system_id: int, name: str, mark: datetime | None) -> datetime | None:
    """Where a run reads from: decisions (or outcomes) created after this (None: from the start).

    Normally the watermark less :data:`OVERLAP`, for rows whose transaction committed after the last
    run read (``created_at`` is set before the commit). Once a run has started at least OVERLAP
    after the watermark, every such row had committed before it read, so that run saw them: from
    then on the watermark itself, and a tick with nothing new recomputes nothing."""
    if mark is None:
        return None
    ran = read_watermark(system_id, f"{name}.ran")
    return mark if ran is not None and ran >= mark + OVERLAP else mark - OVERLAP


def finish_run(system_id: int, name: str, mark: datetime | None, newest: datetime | None, started: datetime) -> None:
    """Advance the watermark to the newest row read, and note when this run started reading."""
    if newest is not None:
        write_watermark(system_id, name, max(newest, mark) if mark is not None else newest)
    write_watermark(system_id, f"{name}.ran", started)


@contextmanager
def advisory_lock(lock_class: int, system_id: int) -> Iterator[None]:
    """One run of a job per system at a time (a second one waits for the first)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", [lock_class, system_id])
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", [lock_class, system_id])


# --- alerts -------------------------------------------------------------------------------------------


def _recent_verdicts(system_id: int, kind: str, now: datetime) -> dict[str, list[tuple[Any, ...]]]:
    """Per feature, its last CALM_WINDOWS primary verdicts, newest first (unfinished calm time windows left out)."""
    unfinished = " AND NOT (drifted = false AND window_end > %s)" if kind == "time" else ""
    sql = (
        "SELECT feature, method, window_start, window_end, drifted, statistic, threshold, p_value, p_threshold "  # noqa: S608
        "FROM (SELECT *, row_number() OVER (PARTITION BY feature ORDER BY window_start DESC) AS rn "
        f'FROM {DriftResult._meta.db_table} WHERE system_id = %s AND "primary" AND drifted IS NOT NULL{unfinished}) t '
        "WHERE rn <= %s ORDER BY feature, window_start DESC"
    )
    params: list[Any] = [system_id, *([now] if kind == "time" else []), CALM_WINDOWS]
    with connection.cursor() as cur:
        cur.execute(sql, params)
        found = cur.fetchall()
    per: dict[str, list[tuple[Any, ...]]] = {}
    for row in found:
        per.setdefault(row[0], []).append(row)
    return per


def alert_message(slug: str, alert: Alert) -> dict[str, Any]:
    return {
        "type": "alert",
        "id": alert.public_id,
        "system": slug,
        "kind": alert.kind,
        "subject": alert.subject,
        "state": alert.state,
        "message": alert.message,
        "value": alert.value,
        "opened_at": alert.opened_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


def update_alerts(system: AISystem, now: datetime | None = None) -> tuple[int, int]:
    """Open and resolve the system's drift alerts from its stored verdicts: (opened, resolved)."""
    now = now or timezone.now()
    kind, _ = policy_of(system)
    groups = [events.system_group(system.slug), events.OVERVIEW_GROUP]
    opened = resolved = 0
    with transaction.atomic():
        verdicts = _recent_verdicts(system.id, kind, now)
        open_alerts = {
            a.subject: a
            for a in Alert.objects.select_for_update().filter(system=system, kind="drift", state=Alert.State.OPEN)
        }
        for feature, recent in verdicts.items():
            drifted = [r for r in recent if r[4]]
            alert = open_alerts.get(feature)
            if drifted and alert is None:
                _, method, start, end, _, statistic, threshold, p_value, p_threshold = drifted[0]
                p = "" if p_value is None else f", p = {p_value:.3g}"
                if p_threshold is not None:
                    p += f" < {p_threshold:g}"
                stat = "n/a" if statistic is None else f"{statistic:.4g}"
                alert = Alert.objects.create(
                    system=system,
                    kind="drift",
                    subject=feature,
                    message=f"{feature} drifted in the window {start.isoformat()} – {end.isoformat()}: "
                    f"{method} {stat} (threshold {threshold:g}{p})",
                    value=statistic,
                    opened_at=now,
                )
                data = {"id": alert.public_id, "method": method, "statistic": statistic, "threshold": threshold,
                        "p_value": p_value, "window_start": start.isoformat(), "window_end": end.isoformat()}
                audit.record(None, "alert.open", system=system, target=feature, data=data)
                events.send_on_commit(groups, alert_message(system.slug, alert))
                opened += 1
            elif alert is not None and not drifted and len(recent) >= CALM_WINDOWS:
                alert.state = Alert.State.RESOLVED
                alert.resolved_at = now
                alert.save(update_fields=["state", "resolved_at"])
                data = {"id": alert.public_id, "calm_windows": [r[2].isoformat() for r in recent]}
                audit.record(None, "alert.resolve", system=system, target=feature, data=data)
                events.send_on_commit(groups, alert_message(system.slug, alert))
                resolved += 1
    return opened, resolved


# --- the job ----------------------------------------------------------------------------------------------


def newest_reference(system_id: int) -> Reference | None:
    return Reference.objects.filter(system_id=system_id).order_by("-created_at", "-id").first()


def run_system(system_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Compute and store the system's new or changed windows, then update its alerts: a summary."""
    system = AISystem.objects.get(id=system_id)
    now = now or timezone.now()
    kind, size = policy_of(system)
    policy = {"kind": kind, "size": size} if kind == "count" else {"kind": kind, "seconds": size}
    summary: dict[str, Any] = {"system": system.slug, "window": policy,
                               "windows": 0, "results": 0, "alerts_opened": 0, "alerts_resolved": 0}
    with advisory_lock(_LOCK_CLASS, system.id):
        started = timezone.now()  # before anything is read (not ``now``, which tests may move)
        ref = newest_reference(system.id)
        if ref is None:
            summary["skipped"] = "no reference"
            return summary
        references = {name: drift.reference_from_dict(s) for name, s in ref.summaries.items()}
        defaults, overrides, ignored = thresholds(system, references)
        if ignored:
            summary["ignored_overrides"] = ignored
        name = watermark_name(kind, size, system.drift)
        mark = read_watermark(system.id, name)
        full = mark is None
        summary["full"] = full
        if full:  # first run, or a new window policy: start over
            with transaction.atomic():
                DriftResult.objects.filter(system_id=system.id).delete()
                MetricPoint.objects.filter(system_id=system.id, name__startswith=WATERMARK_PREFIX).delete()
        since = read_from(system.id, name, mark)
        replace_from = False
        if kind == "time":
            windows, newest = _time_windows(system.id, size, since, now)
        else:
            new = Decision.objects.filter(system_id=system.id)
            if since is not None:
                new = new.filter(created_at__gt=since)
            newest = new.aggregate(m=Max("created_at"))["m"]
            windows = []
            if newest is not None:
                earliest = new.order_by("occurred_at", "id").values_list("occurred_at", "id").first()
                assert earliest is not None
                t0, id0 = earliest
                before = Decision.objects.filter(system_id=system.id).filter(
                    Q(occurred_at__lt=t0) | Q(occurred_at=t0, id__lt=id0)
                ).count()
                windows = count_windows(system.id, size)[before // size:]
                replace_from = True  # a backfill shifts every later window: replace them all
        pushed_from = max(0, len(windows) - PUSH_WINDOWS)
        for i, w in enumerate(windows):
            columns, _ = read_columns(window_rows(system.id, w), references)
            report = drift.detect_drift(references, columns, defaults=defaults, overrides=overrides)
            summary["results"] += store_window(
                system, ref.id, w, report, replace_from=replace_from and i == 0, push=i >= pushed_from
            )
            summary["windows"] += 1
        finish_run(system.id, name, mark, newest, started)
        summary["alerts_opened"], summary["alerts_resolved"] = update_alerts(system, now)
    return summary


def for_every_system(job: str, run: Callable[[int], dict[str, Any]], totals: tuple[str, ...]) -> dict[str, Any]:
    """``run`` for every system, its summaries and the ``totals`` summed; one system's failure is
    logged and listed in ``failed`` and does not stop the others."""
    out: dict[str, Any] = {"systems": [], **dict.fromkeys(totals, 0), "failed": []}
    for sid in AISystem.objects.order_by("id").values_list("id", flat=True):
        try:
            summary = run(sid)
        except Exception:
            log.exception("%s job failed for system %s", job, sid)
            out["failed"].append(sid)
            continue
        out["systems"].append(summary)
        for k in totals:
            out[k] += summary[k]
    return out


def run_all(now: datetime | None = None) -> dict[str, Any]:
    """:func:`run_system` for every system."""
    return for_every_system("drift", lambda sid: run_system(sid, now),
                            ("windows", "results", "alerts_opened", "alerts_resolved"))
