"""The performance and feedback-loop job (issue 8): per monitoring window, once outcomes arrive.

Plain functions; the Celery task (``dashboards.tasks.compute_performance``) only calls them. The
statistics themselves are ``dashboards.performance`` (numpy, no database); this module reads each
window's rows, stores the figures as metric series and opens or resolves the feedback-loop alert.

**Windows** are the drift job's (``dashboards.drift_job``): the system's policy, time or count,
over the decisions' ``occurred_at``. A window is (re)computed when one of its decisions or one of
their outcomes (a person's review resolution is one) arrived after the system's watermark (minus the
drift job's overlap). Each window's figures replace its earlier ones in one transaction, so a run
that dies half-way leaves whole windows and running it twice stores the same values.

**Series** (``MetricPoint``, ``t`` = the window's start; a figure with too little data is not
stored): ``perf.outcomes`` (outcomes in the window), ``perf.accuracy``, ``perf.mean_reward``,
``perf.ece``, ``perf.agreement``, ``loop.own_outcome_share``, ``loop.correlation``,
``loop.correlation_rise``, ``loop.exposure_gini``, ``loop.homogeneity``, and the model's failures
(``Decision.failure``) as shares of the window's decisions: ``gate.error_rate`` (error or garbage)
and ``gate.deadline_miss_rate`` (after its deadline). Where the inputs come from:

* outcomes are joined to their decision: labels are compared with the model's own output
  (``prediction.output``, not a person's or the fallback), rewards taken as they are; the
  outcome value for calibration and correlation is 1/0 (label matched) or the reward;
* an outcome *followed a released decision* when its decision's status is ``released``;
* human–model agreement: the window's outcomes marked ``human`` (a person's resolution of a review,
  before release or on audit, stores the output they released, kept or wrote as the label;
  expiry is not a person), against the model's own output; every other figure uses the client's
  outcomes only;
* exposure and homogeneity: the items of each output shown in the window (its ``items`` list, the
  output itself when it is a list, else the whole output as one item); exposure over the catalogue
  of items shown in the window or in the :data:`CATALOGUE_WINDOWS` windows' time before it (an
  item no longer shown counts 0); homogeneity over at most
  :data:`HOMOGENEITY_SUBJECTS` subjects, a fixed sample (by the hash of the subject);
* the reference correlation is the system's first window with at least :data:`MIN_PAIRS` outcome
  pairs: the period before a model retrained on outcomes could be echoing itself.

**The feedback-loop alert** (kind ``feedback_loop``) opens when a window's correlation reaches
``performance.ECHO_CORRELATION`` (0.8) and is above the reference's, and resolves after
``drift_job.CALM_WINDOWS`` windows in a row below it; audited and pushed like drift alerts.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from dashboards import drift_job, performance
from dashboards.drift_job import Window
from dashboards.models import Alert, MetricPoint, WindowItems
from oversight import audit, events
from oversight.models import AISystem, Decision, Outcome

log = logging.getLogger(__name__)

NAMES = (
    "perf.outcomes", "perf.accuracy", "perf.mean_reward", "perf.ece", "perf.agreement",
    "loop.own_outcome_share", "loop.correlation", "loop.correlation_rise", "loop.exposure_gini",
    "loop.homogeneity", "gate.error_rate", "gate.deadline_miss_rate",
)
PAIRS = "_perf.pairs"  # outcome pairs behind a window's correlation (not a public series)
_STORED = (*NAMES, PAIRS)
# Per model, each model's own accuracy against the labels: "model.<name>.accuracy" and
# "model.<name>.outcomes" (its votes, or the prediction's model when there are no votes). The
# breakers of single models read them (dashboards/breaker_job.py).
MODEL_PREFIX = "model."
MODELS_PER_SYSTEM = 20  # the most voted models of a window get a series
WATERMARK = "_perf.watermark"
#: Outcome pairs a window needs before its correlation can be the system's reference.
MIN_PAIRS = 30
#: Exposure is measured over the items shown in this many windows' time before a window, too.
CATALOGUE_WINDOWS = 5
#: Subjects sampled per window for homogeneity.
HOMOGENEITY_SUBJECTS = 2000
ALERT_KIND = "feedback_loop"
_LOCK_CLASS = 0x0D71F8

# The items an output shows, as jsonb elements (see the module docstring).
_ITEMS = (
    "CASE WHEN jsonb_typeof(d.output) = 'array' THEN d.output "
    "WHEN jsonb_typeof(d.output -> 'items') = 'array' THEN d.output -> 'items' "
    "ELSE jsonb_build_array(d.output) END"
)


# --- one window ------------------------------------------------------------------------------------


def _outcome_rows(decisions: QuerySet[Decision]) -> tuple[list[Any], list[Any], list[float], list[float], list[bool]]:
    """Per outcome of the window's decisions: labels with the model's output, and the value pairs."""
    predicted: list[Any] = []
    labels: list[Any] = []
    confidence: list[float] = []
    value: list[float] = []
    followed: list[bool] = []
    rows = Outcome.objects.filter(decision__in=decisions.values("id"), source=Outcome.Source.CLIENT).values_list(
        "label", "reward", "decision__prediction__output", "decision__confidence", "decision__status"
    )
    for label, reward, model_output, conf, status in rows.iterator(chunk_size=drift_job.CHUNK):
        followed.append(status == Decision.Status.RELEASED)
        if label is not None:
            predicted.append(model_output)
            labels.append(label)
            y = 1.0 if performance.same_value(model_output, label) else 0.0
        elif reward is not None:
            y = float(reward)
        else:
            continue
        if conf is not None:
            confidence.append(float(conf))
            value.append(y)
    return predicted, labels, confidence, value, followed


def _sql_of(decisions: QuerySet[Decision]) -> tuple[str, tuple[Any, ...]]:
    sql, params = decisions.values("subject", "output").query.sql_with_params()
    return sql, tuple(params)


def _shown(decisions: QuerySet[Decision]) -> tuple[dict[str, int], list[list[str]]]:
    """One read of the window's outputs: how often each item was shown, and the items each of at
    most :data:`HOMOGENEITY_SUBJECTS` subjects received (a fixed sample: by the md5 of the subject)."""
    inner, params = _sql_of(decisions.filter(output__isnull=False))
    counts: dict[str, int] = {}
    received: dict[str, list[str]] = {}
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT d.subject, e.item::text, count(*) FROM ({inner}) d "  # noqa: S608
            f"CROSS JOIN LATERAL jsonb_array_elements({_ITEMS}) e(item) GROUP BY 1, 2",
            params,
        )
        while rows := cur.fetchmany(drift_job.CHUNK):
            for subject, item, n in rows:
                counts[item] = counts.get(item, 0) + int(n)
                received.setdefault(subject, []).append(item)
    sample = sorted(received, key=lambda s: hashlib.md5(s.encode()).hexdigest())[:HOMOGENEITY_SUBJECTS]  # noqa: S324
    return counts, [received[s] for s in sample]


def _catalogue(system_id: int, w: Window) -> set[str]:
    """Items shown in the :data:`CATALOGUE_WINDOWS` windows' time before ``w`` (stored per window)."""
    span = max(w.end - w.start, timedelta(minutes=1)) * CATALOGUE_WINDOWS
    items: set[str] = set()
    for counts in WindowItems.objects.filter(system_id=system_id, t__gte=w.start - span, t__lt=w.start).values_list(
            "counts", flat=True):
        items.update(counts)
    return items


def model_accuracy(pairs: list[tuple[Any, Any]]) -> dict[str, float | None]:
    """``(label, prediction)`` of labelled outcomes → each model's accuracy and outcome count, as
    metric series (``model.<name>.accuracy``, ``model.<name>.outcomes``)."""
    right: dict[str, int] = {}
    seen: dict[str, int] = {}
    for label, prediction in pairs:
        if not isinstance(prediction, dict):
            continue
        votes = prediction.get("votes") or [{"model": prediction.get("model"), "output": prediction.get("output")}]
        for v in votes:
            model = v.get("model") if isinstance(v, dict) else None
            if not model:
                continue
            seen[model] = seen.get(model, 0) + 1
            right[model] = right.get(model, 0) + (1 if performance.same_value(v.get("output"), label) else 0)
    out: dict[str, float | None] = {}
    for model in sorted(seen, key=lambda m: -seen[m])[:MODELS_PER_SYSTEM]:
        out[f"{MODEL_PREFIX}{model}.outcomes"] = float(seen[model])
        out[f"{MODEL_PREFIX}{model}.accuracy"] = right[model] / seen[model]
    return out


def _model_rows(decisions: QuerySet[Decision]) -> dict[str, float | None]:
    rows = Outcome.objects.filter(decision__in=decisions.values("id"), source=Outcome.Source.CLIENT,
                                  label__isnull=False).values_list("label", "decision__prediction")
    return model_accuracy(list(rows.iterator(chunk_size=drift_job.CHUNK)))


def _agreement(decisions: QuerySet[Decision]) -> float | None:
    """People's resolutions (outcomes marked human) against the model's own output."""
    resolved = Outcome.objects.filter(decision__in=decisions.values("id"), source=Outcome.Source.HUMAN).values_list(
        "decision__prediction__output", "label")
    model, human = [], []
    for m, h in resolved.iterator(chunk_size=drift_job.CHUNK):
        model.append(m)
        human.append(h)
    return performance.agreement(model, human)


def window_metrics(system_id: int, w: Window) -> tuple[dict[str, float | None], dict[str, int]]:
    """Every figure of one window (None: too little data), and how often each item was shown in it.

    Exposure is measured over the catalogue the system has been showing: items shown in the
    :data:`CATALOGUE_WINDOWS` windows' time before it and not in this one count 0 (a recommender
    narrowing to a few tracks concentrates its exposure, even if it shows those few evenly)."""
    decisions = drift_job.window_rows(system_id, w)
    # The model's failures (Decision.failure: a chaos drill, or hosted scoring): the breakers watch them.
    failed = decisions.aggregate(n=Count("id"), errors=Count("id", filter=Q(failure__in=("error", "garbage"))),
                                 late=Count("id", filter=Q(failure="deadline")))
    predicted, labels, confidence, value, followed = _outcome_rows(decisions)
    conf, val = np.asarray(confidence, dtype=np.float64), np.asarray(value, dtype=np.float64)
    rewards_only = len(labels) == 0 and len(val) > 0
    counts, received = _shown(decisions)
    exposure = [*counts.values(), *[0 for item in _catalogue(system_id, w) if item not in counts]]
    return {
        "perf.outcomes": float(len(followed)) if followed else None,
        "perf.accuracy": performance.accuracy(predicted, labels),
        "perf.mean_reward": performance.mean_reward(val) if rewards_only else None,
        "perf.ece": performance.expected_calibration_error(conf, val),
        "perf.agreement": _agreement(decisions),
        "loop.own_outcome_share": performance.own_outcome_share(np.asarray(followed, dtype=bool)),
        "loop.correlation": performance.prediction_outcome_correlation(conf, val),
        PAIRS: float(len(conf)),
        "loop.exposure_gini": performance.exposure_gini(np.asarray(exposure, dtype=np.int64)),
        "loop.homogeneity": performance.homogeneity(received),
        "gate.error_rate": failed["errors"] / failed["n"] if failed["n"] else None,
        "gate.deadline_miss_rate": failed["late"] / failed["n"] if failed["n"] else None,
        **_model_rows(decisions),
    }, counts


# --- which windows ----------------------------------------------------------------------------------


def _changed_sql(system_id: int, since: datetime | None) -> tuple[str, list[Any]]:
    """``(occurred_at, id, at)`` of every decision of the system that changed since ``since``: the
    decision itself arrived, or an outcome of it did (a person's resolution is one)."""
    params: list[Any] = []
    parts = []
    for sql, changed_at in (
        ("SELECT d.occurred_at, d.id, d.created_at AS at FROM oversight_decision d WHERE d.system_id = %s",
         "d.created_at"),
        ("SELECT d.occurred_at, d.id, o.created_at AS at FROM oversight_outcome o JOIN oversight_decision d "
         "ON d.id = o.decision_id WHERE d.system_id = %s", "o.created_at"),
    ):
        parts.append(sql if since is None else f"{sql} AND {changed_at} > %s")
        params += [system_id] if since is None else [system_id, since]
    return " UNION ALL ".join(parts), params


def touched_windows(system: AISystem, since: datetime | None, now: datetime) -> tuple[list[Window], Any, bool]:
    """The windows to recompute, the newest change's time, and whether every stored window from the
    first of them on must be replaced (count windows: a backfilled decision shifts the later ones)."""
    kind, size = drift_job.policy_of(system)
    changed, params = _changed_sql(system.id, since)
    with connection.cursor() as cur:
        if kind == "time":
            cur.execute(
                f"SELECT floor(extract(epoch FROM occurred_at) / %s)::bigint, max(at) FROM ({changed}) t "  # noqa: S608
                "GROUP BY 1 ORDER BY 1",
                [size, *params],
            )
            found = cur.fetchall()
            windows = []
            for i, _ in found:
                start = drift_job.EPOCH + timedelta(seconds=int(i) * size)
                end = start + timedelta(seconds=size)
                windows.append(Window(start, end, complete=end <= now))
            return windows, max((m for _, m in found), default=None), False
        cur.execute(
            f"SELECT occurred_at, id, (SELECT max(at) FROM ({changed}) m) FROM ({changed}) t "  # noqa: S608
            "ORDER BY occurred_at, id LIMIT 1",
            params + params,
        )
        row = cur.fetchone()
    if row is None:
        return [], None, False
    first_at, first_id, newest = row
    before = Decision.objects.filter(system_id=system.id).filter(
        Q(occurred_at__lt=first_at) | Q(occurred_at=first_at, id__lt=first_id)
    ).count()
    return drift_job.count_windows(system.id, size)[before // size:], newest, True


# --- storing and alerts ---------------------------------------------------------------------------

def metrics_message(slug: str, w: Window, values: dict[str, float | None]) -> dict[str, Any]:
    return {"type": "metrics", "system": slug, "t": w.start.isoformat(), "window_end": w.end.isoformat(),
            "values": {k: v for k, v in values.items() if k in NAMES}}


def store_window(system: AISystem, w: Window, values: dict[str, float | None], items: dict[str, int], *,
                 replace_from: bool, push: bool) -> int:
    """Replace the window's stored figures and item counts (with ``replace_from``, every later window's
    too) in one transaction."""
    points = [MetricPoint(system_id=system.id, name=k, t=w.start, value=v)
              for k, v in values.items() if (k in _STORED or k.startswith(MODEL_PREFIX)) and v is not None]
    with transaction.atomic():
        stored = MetricPoint.objects.filter(Q(name__in=_STORED) | Q(name__startswith=MODEL_PREFIX),
                                            system_id=system.id)
        shown = WindowItems.objects.filter(system_id=system.id)
        for qs in (stored, shown):
            (qs.filter(t__gte=w.start) if replace_from else qs.filter(t=w.start)).delete()
        MetricPoint.objects.bulk_create(points)
        WindowItems.objects.create(system_id=system.id, t=w.start, counts=items)
        if push:
            events.send_on_commit([events.system_group(system.slug)], metrics_message(system.slug, w, values))
    return len(points)


def reference_correlation(system_id: int) -> tuple[datetime, float] | None:
    """The start and correlation of the system's first window with at least MIN_PAIRS outcome pairs."""
    first = (MetricPoint.objects.filter(system_id=system_id, name=PAIRS, value__gte=MIN_PAIRS)
             .order_by("t").values_list("t", flat=True).first())
    if first is None:
        return None
    value = MetricPoint.objects.filter(system_id=system_id, name="loop.correlation", t=first).values_list(
        "value", flat=True).first()
    return None if value is None else (first, value)


def update_alert(system: AISystem, now: datetime) -> tuple[int, int]:
    """Open or resolve the system's feedback-loop alert from its newest windows: (opened, resolved)."""
    found = reference_correlation(system.id)
    ref = None if found is None else found[1]
    recent = list(MetricPoint.objects.filter(system_id=system.id, name="loop.correlation")
                  .order_by("-t").values_list("t", "value")[:drift_job.CALM_WINDOWS])
    groups = [events.system_group(system.slug), events.OVERVIEW_GROUP]
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(system=system, kind=ALERT_KIND, state=Alert.State.OPEN).first()
        echo = [(t, v) for t, v in recent if v >= performance.ECHO_CORRELATION and (ref is None or v > ref)]
        if recent and alert is None and echo and echo[0][0] == recent[0][0]:
            t, v = echo[0]
            alert = Alert.objects.create(
                system=system, kind=ALERT_KIND, subject="correlation", value=v, opened_at=now,
                message=f"the model's confidence and the outcomes correlate at {v:.2f} in the window from "
                        f"{t.isoformat()} (reference {'n/a' if ref is None else f'{ref:.2f}'}; past "
                        f"{performance.ECHO_CORRELATION} the model is likely learning its own echo)",
            )
            audit.record(None, "alert.open", system=system, target=ALERT_KIND,
                         data={"id": alert.public_id, "correlation": v, "reference": ref,
                               "window_start": t.isoformat()})
            events.send_on_commit(groups, drift_job.alert_message(system.slug, alert))
            return 1, 0
        if alert is not None and len(recent) >= drift_job.CALM_WINDOWS and not echo:
            alert.state, alert.resolved_at = Alert.State.RESOLVED, now
            alert.save(update_fields=["state", "resolved_at"])
            audit.record(None, "alert.resolve", system=system, target=ALERT_KIND,
                         data={"id": alert.public_id, "calm_windows": [t.isoformat() for t, _ in recent]})
            events.send_on_commit(groups, drift_job.alert_message(system.slug, alert))
            return 0, 1
    return 0, 0


# --- the job --------------------------------------------------------------------------------------


def run_system(system_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Compute and store the figures of the system's changed windows, then its feedback-loop alert."""
    system = AISystem.objects.get(id=system_id)
    now = now or timezone.now()
    summary: dict[str, Any] = {"system": system.slug, "windows": 0, "points": 0, "alerts_opened": 0,
                               "alerts_resolved": 0}
    with drift_job.advisory_lock(_LOCK_CLASS, system.id):
        kind, size = drift_job.policy_of(system)
        name = f"{WATERMARK}.{kind}.{size}"
        started = timezone.now()
        mark = drift_job.read_watermark(system.id, name)
        if mark is None:  # first run, or a new window policy: start over
            MetricPoint.objects.filter(system_id=system.id).filter(
                Q(name__in=_STORED) | Q(name__startswith=WATERMARK) | Q(name__startswith=MODEL_PREFIX)).delete()
            WindowItems.objects.filter(system_id=system.id).delete()
        windows, newest, replace_from = touched_windows(system, drift_job.read_from(system.id, name, mark), now)
        ref = reference_correlation(system.id)
        pushed_from = max(0, len(windows) - drift_job.PUSH_WINDOWS)
        for i, w in enumerate(windows):
            values, items = window_metrics(system.id, w)
            corr, pairs = values["loop.correlation"], values[PAIRS] or 0
            if corr is not None and pairs >= MIN_PAIRS and (ref is None or w.start <= ref[0]):
                ref = (w.start, corr)  # windows come in order: the earliest such window is the reference
            values["loop.correlation_rise"] = performance.correlation_rise(corr, None if ref is None else ref[1])
            summary["points"] += store_window(system, w, values, items, replace_from=replace_from and i == 0,
                                              push=i >= pushed_from)
            summary["windows"] += 1
        drift_job.finish_run(system.id, name, mark, newest, started)
        summary["alerts_opened"], summary["alerts_resolved"] = update_alert(system, now)
    return summary


def run_all(now: datetime | None = None) -> dict[str, Any]:
    """:func:`run_system` for every system."""
    return drift_job.for_every_system("performance", lambda sid: run_system(sid, now),
                                      ("windows", "points", "alerts_opened", "alerts_resolved"))
