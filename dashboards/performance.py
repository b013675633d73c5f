"""Performance and feedback-loop statistics per monitoring window, once outcomes arrive.

Plain Python with numpy: no Django, no database. Every function takes one window's values and
returns a float, or ``None`` when the window has too little data for the number to mean anything
(no rows, too few pairs, no variance); it never returns NaN. Inputs that break a function's
contract (arrays of different lengths, a reward outside [0, 1], a negative count) raise
``ValueError``: the API already validates what it stores, so such a value is a bug upstream.

Performance:

* :func:`accuracy`: the share of decisions whose output equals the outcome's label.
* :func:`mean_reward`: the mean of the outcomes' rewards (each in [0, 1]).
* :func:`expected_calibration_error`: how far the model's confidence is from how often it is
  right, averaged over 10 equal-width confidence bins weighted by their share of rows.
* :func:`agreement`: the share of review resolutions where the person kept the model's output.

Values (outputs, labels) are compared as JSON values (:func:`same_value`): ``1 == 1.0``, but
``true`` is not ``1``, and lists and objects compare element by element.

Feedback-loop signals, for a model that is retrained on outcomes its own decisions caused:

* :func:`own_outcome_share`: the share of the window's outcomes that followed one of the system's
  own released decisions (the subject acted on what the system showed).
* :func:`prediction_outcome_correlation`: Pearson's r between the model's confidence and the
  outcome; :func:`correlation_rise` is its change against the reference period, and a correlation
  past :data:`ECHO_CORRELATION` suggests the model is learning its own echo.
* :func:`exposure_gini`: the Gini coefficient of how often each output item was shown.
* :func:`homogeneity`: the mean Jaccard overlap between what different subjects received.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Rule of thumb: a correlation between the model's confidence and the outcome past 0.8 means
#: the outcomes mostly follow what the model said (subjects act on what they are shown), so a
#: model retrained on them is learning its own echo rather than the world.
ECHO_CORRELATION = 0.8
#: Default number of equal-width confidence bins for :func:`expected_calibration_error`.
ECE_BINS = 10
#: :func:`homogeneity` averages over every pair of subjects up to this many pairs, else a sample.
HOMOGENEITY_PAIRS = 20_000


def same_value(a: Any, b: Any) -> bool:
    """Equality of two JSON values: numbers by value (``1 == 1.0``), booleans only equal booleans
    (``true`` is not ``1``, as in JSON and PostgreSQL's jsonb), lists (or tuples) and objects
    element by element; anything else by ``==``."""
    a_bool, b_bool = isinstance(a, bool | np.bool_), isinstance(b, bool | np.bool_)
    if a_bool or b_bool:
        return a_bool and b_bool and bool(a) == bool(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list | tuple) or isinstance(b, dict | list | tuple):
        return False
    return bool(a == b)


def _match_share(left: Sequence[Any], right: Sequence[Any], what: str) -> float | None:
    if len(left) != len(right):
        raise ValueError(f"{what}: {len(left)} and {len(right)} values")
    if len(left) == 0:
        return None
    return sum(same_value(a, b) for a, b in zip(left, right, strict=True)) / len(left)


def _floats(values: ArrayLike, what: str, *, unit: bool) -> FloatArray:
    """A 1-D float copy of ``values``; every value finite (and in [0, 1] when ``unit``)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = (x >= 0.0) & (x <= 1.0) if unit else np.isfinite(x)
    if not ok.all():
        raise ValueError(f"{what}: values must be finite" + (" and in [0, 1]" if unit else ""))
    return x


def _pair(a: ArrayLike, b: ArrayLike, what: str, *, unit: bool) -> tuple[FloatArray, FloatArray]:
    x, y = _floats(a, what, unit=unit), _floats(b, what, unit=unit)
    if x.size != y.size:
        raise ValueError(f"{what}: {x.size} and {y.size} values")
    return x, y


# --------------------------------------------------------------------------------------------
# Performance


def accuracy(predicted: Sequence[Any], labels: Sequence[Any]) -> float | None:
    """The share of positions where the prediction equals the label (:func:`same_value`).
    None when there are no pairs."""
    return _match_share(predicted, labels, "accuracy")


def mean_reward(rewards: ArrayLike) -> float | None:
    """The mean of the rewards, each in [0, 1]. None when there are none."""
    r = _floats(rewards, "mean_reward", unit=True)
    return float(r.mean()) if r.size else None


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error over ``bins`` equal-width confidence bins.

    Bin k holds the confidences in [k/bins, (k+1)/bins); a confidence of exactly 1.0 goes in the
    last bin. ECE = Σ over non-empty bins of (n_bin/n) · |mean(correct in bin) − mean(confidence
    in bin)|, which equals Σ_bins |Σ correct − Σ confidence| / n. ``correct`` is 1/0 (the label
    matched) or a reward in [0, 1], read as the observed success rate. In [0, 1]; None when there
    are no rows.
    """
    if bins < 1:
        raise ValueError("expected_calibration_error: bins must be at least 1")
    c, y = _pair(confidence, correct, "expected_calibration_error", unit=True)
    if c.size == 0:
        return None
    # Edges k/bins exactly as written above; searchsorted(side="right") puts a confidence equal
    # to an edge in the bin starting there, and 1.0 (past the last interior edge) in the last bin.
    which = np.searchsorted(np.arange(1, bins) / bins, c, side="right")
    gap = np.bincount(which, weights=y, minlength=bins) - np.bincount(which, weights=c, minlength=bins)
    return float(np.abs(gap).sum() / c.size)


def agreement(model_outputs: Sequence[Any], human_outputs: Sequence[Any]) -> float | None:
    """Human–model agreement: the share of review resolutions where the person's final output
    equals the model's (:func:`same_value`), i.e. the person kept it. None when there are none."""
    return _match_share(model_outputs, human_outputs, "agreement")


# --------------------------------------------------------------------------------------------
# Feedback-loop signals


def own_outcome_share(followed_release: ArrayLike) -> float | None:
    """The share of the window's outcomes that followed one of the system's own released
    decisions: ``followed_release`` has one boolean per outcome, True when the subject acted on
    what the system showed. None when the window has no outcomes."""
    f = np.asarray(followed_release, dtype=bool).reshape(-1)
    return float(f.mean()) if f.size else None


def prediction_outcome_correlation(confidence: ArrayLike, outcome: ArrayLike) -> float | None:
    """Pearson's r between the model's confidence and the outcome (a reward, or 1/0 for a correct
    label), pair by pair: Σ(x−x̄)(y−ȳ) / √(Σ(x−x̄)² · Σ(y−ȳ)²), in [−1, 1]. The same value as
    ``scipy.stats.pearsonr``. None with fewer than 3 pairs or when either side is constant."""
    x, y = _pair(confidence, outcome, "prediction_outcome_correlation", unit=False)
    if x.size < 3 or x.min() == x.max() or y.min() == y.max():
        return None
    x, y = x / np.abs(x).max(), y / np.abs(y).max()  # as scipy does: no overflow in the squares
    dx, dy = x - x.mean(), y - y.mean()
    r = float(np.dot(dx / np.linalg.norm(dx), dy / np.linalg.norm(dy)))
    return min(1.0, max(-1.0, r))


def correlation_rise(current: float | None, reference: float | None) -> float | None:
    """How much the confidence–outcome correlation rose since the reference period: ``current −
    reference`` (negative when it fell). None when either is None."""
    if current is None or reference is None:
        return None
    return current - reference


def exposure_gini(counts: ArrayLike) -> float | None:
    """The Gini coefficient of exposure: ``counts`` holds, per output item, how often it was
    shown (non-negative). 0 when every item was shown equally often, approaching 1 (at most
    (n−1)/n) when one item gets all the exposure. With x sorted ascending and i = 1..n:
    G = 2·Σ i·x_(i) / (n·Σx) − (n+1)/n, the same as Σ_i Σ_j |x_i − x_j| / (2·n²·mean(x)).
    None when there are no items or nothing was shown."""
    x = np.sort(_floats(counts, "exposure_gini", unit=False))
    if x.size and x[0] < 0:
        raise ValueError("exposure_gini: counts must be non-negative")
    n, total = x.size, float(x.sum())
    if n == 0 or total == 0.0:
        return None
    weighted = float(np.dot(np.arange(1, n + 1, dtype=np.float64), x))
    return max(0.0, (2.0 * weighted - (n + 1) * total) / (n * total))


def _pairs(n: int, max_pairs: int, seed: int) -> tuple[IntArray, IntArray]:
    """Subject pairs (i < j): all of them when n·(n−1)/2 ≤ ``max_pairs``, else ``max_pairs``
    different pairs drawn uniformly without replacement by a generator seeded with ``seed``."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    k = np.random.default_rng(seed).choice(total, size=max_pairs, replace=False).astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    start = rows * n - rows * (rows + 1) // 2  # linear index of the pair (i, i + 1)
    i = np.searchsorted(start, k, side="right") - 1
    return i, k - start[i] + i + 1


def _gather(indptr: IntArray, indices: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """The concatenated sorted item ids of ``rows`` (CSR layout) and how many each row has."""
    lengths = indptr[rows + 1] - indptr[rows]
    offsets = np.cumsum(lengths) - lengths
    pos = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(indptr[rows] - offsets, lengths)
    return indices[pos], lengths


def homogeneity(
    item_lists: Sequence[Iterable[Hashable]], max_pairs: int = HOMOGENEITY_PAIRS, seed: int = 0
) -> float | None:
    """How alike what different subjects received: the mean Jaccard overlap |A∩B| / |A∪B| over
    pairs of subjects, where ``item_lists`` holds one collection of item ids per subject (the
    caller merges a subject's decisions into one; duplicates count once).

    Every pair of subjects when there are at most ``max_pairs`` pairs, else ``max_pairs``
    different pairs of different subjects drawn at random with ``seed`` (the same input in the
    same order gives the same value). Two subjects who both received nothing count as overlap 0
    (nothing shared), not 1. In [0, 1]: 1 when everyone received the same items. None with fewer
    than 2 subjects.
    """
    n = len(item_lists)
    if n < 2:
        return None
    if max_pairs < 1:
        raise ValueError("homogeneity: max_pairs must be at least 1")
    codes: dict[Hashable, int] = {}
    subject_of: list[int] = []
    item_of: list[int] = []
    for s, items in enumerate(item_lists):
        for item in items:
            subject_of.append(s)
            item_of.append(codes.setdefault(item, len(codes)))
    m = max(1, len(codes))
    keys = np.unique(np.asarray(subject_of, dtype=np.int64) * m + np.asarray(item_of, dtype=np.int64))
    indices = keys % m  # sorted within each subject
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // m, minlength=n), out=indptr[1:])

    left, right = _pairs(n, max_pairs, seed)
    a, len_a = _gather(indptr, indices, left)
    b, len_b = _gather(indptr, indices, right)
    p = np.arange(left.size, dtype=np.int64)
    # Each set has distinct items, so an item appears twice under one pair iff both sets hold it.
    both = np.sort(np.concatenate((np.repeat(p, len_a) * m + a, np.repeat(p, len_b) * m + b)))
    shared = np.bincount(both[1:][both[1:] == both[:-1]] // m, minlength=left.size)
    union = len_a + len_b - shared
    jaccard = np.divide(shared, union, out=np.zeros(left.size), where=union > 0)
    return float(jaccard.mean())
