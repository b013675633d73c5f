"""Drift statistics: reference summaries, per-feature drift and verdicts (issue 8).

Plain Python with numpy and scipy: no Django, no database. Importable without settings, so the
jobs, the storage and the pages build on it and the tests call it as plain functions.

The flow:

1. When a system's reference data is stored, summarise each feature once
   (:class:`NumericReference`, :class:`CategoricalReference`, or :func:`build_references` for many
   features at once) and keep ``reference.to_dict()`` (plain JSON: a PostgreSQL JSONB column).
2. For each monitoring window, :func:`detect_drift` takes those summaries and the window's columns
   (a dict feature → 1-D array, or a 2-D array and its column names) and returns a
   :class:`DriftReport`: per feature a verdict and one :class:`DriftResult` per method. Prediction
   drift is the same computation on the model's output column (e.g. a feature named
   ``"prediction"`` with its own reference).

Numeric features: Kolmogorov–Smirnov statistic and asymptotic p-value, Wasserstein-1 distance
normalised by the reference's standard deviation, PSI and Jensen–Shannon distance on bins at the
reference's quantiles. Categorical features: chi-square goodness of fit against the reference's
proportions and Jensen–Shannon distance; categories the reference never saw and missing values
are counted (each pooled into a bucket of its own), not dropped. Which method decides the verdict,
and at which threshold, depends on the column type and the window's size: :data:`DEFAULT_RULES`,
with a reason for each, overridable per system and per feature.

The defaults (:data:`DEFAULT_RULES`; "rows" are the window's usable rows, and the reference
needs as many):

=========== ========== =============== ============================= ==============================
type        rows       decides         threshold                     why
=========== ========== =============== ============================= ==============================
any         < 100      nothing         no verdict (insufficient)     10 bins / an ECDF of < 100
                                                                     rows are mostly noise
numeric     100–1000   KS              p < 0.05                      a calibrated test; PSI's noise
                                                                     (≈ 9·(1/n + 1/N)) is ~0.1 here;
                                                                     Evidently's default
numeric     > 1000     PSI             > 0.2                         industry rule of thumb for a
                                                                     significant shift; an effect
                                                                     size, as p-values are tiny
categorical 100–1000   chi-square      p < 0.05                      Evidently's default
categorical > 1000     Jensen–Shannon  > 0.1                         Evidently's default, an effect
                                                                     size
=========== ========== =============== ============================= ==============================

Reported beside the deciding method, each with its own verdict: PSI > 0.2, Wasserstein/std > 0.1
(Evidently's numeric default over 1000 rows), JS > 0.1, KS D > 0.1 with p < 0.05 (over 1000 rows),
chi-square p < 0.05 with Cohen's w > 0.1 (over 1000 rows). PSI > 0.2 is the least sensitive of
these: it flags a 0.5-std mean shift, not a 1.5× wider spread (PSI ≈ 0.19, W/std ≈ 0.4); a system
that wants Evidently's sensitivity sets ``{"numeric": {"method": "wasserstein", "threshold": 0.1}}``.

How each statistic relates to scipy (checked by tests/unit/test_drift.py):

* KS statistic: equal to ``scipy.stats.ks_2samp(ref, cur, method="asymp").statistic`` (same
  floating-point operations) when the reference keeps its whole sample (≤ :data:`SUMMARY_SIZE`
  finite values); scipy's exact method rounds D to a multiple of 1/lcm(n, m), a difference of
  ~1e-16. The p-value is ``method="asymp"``'s: ``kstwo.sf(D, round(n·m/(n+m)))``. scipy's default
  (``"auto"``) uses the exact distribution when both samples have ≤ 10,000 values; the asymptotic
  p is a little smaller for small samples (0.050 against the exact 0.054 for 142 vs 284 rows, 0.069
  against 0.078 for 100 vs 100), so right at p ≈ 0.05 a verdict can differ from scipy's default.
* Wasserstein-1: ``scipy.stats.wasserstein_distance(ref, cur)`` to rounding (≈ 1e-12 relative),
  computed from the two empirical CDFs in O(U) operations after one sort of the current column
  (U = the reference's distinct values); normalised by the reference's std (ddof 0), or, for a
  constant reference, by 1e-3 × max(1, |value|).
* Jensen–Shannon distance: ``scipy.spatial.distance.jensenshannon(p_ref, p_cur, base=2)`` on the
  same bin proportions, so in [0, 1].
* Chi-square: ``scipy.stats.chisquare(observed, expected)`` on the buckets described at
  :func:`categorical_statistics`.

A reference with more than :data:`SUMMARY_SIZE` finite values keeps :data:`SUMMARY_SIZE` of its
quantiles instead of its sample (at probabilities (k + ½)/K, each a real value of the sample).
Its CDF then differs from the sample's by at most 1/(2K) = 5e-5 everywhere, so the KS statistic
is off by at most that much; the Wasserstein distance is off by at most W1(sample, quantiles),
which is at most (max − min)/(2K) and is computed exactly when the reference is built
(``ks_error`` and ``wasserstein_error`` on the reference, in the results' ``extras``). PSI and
JS use bin counts taken from the whole sample, so they are exact either way. The KS p-value uses
the reference's real size.

Longer than the ~400 lines the other modules keep to, on purpose: the references, every
statistic and the rules that pick one are one numeric unit, tested together against scipy; split,
the quantile summary's error bounds and the statistics that rely on them would sit apart.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import rel_entr  # type: ignore[import-untyped]
from scipy.stats import distributions  # type: ignore[import-untyped]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Kind = Literal["numeric", "categorical"]

#: A numeric reference with more finite values than this keeps this many quantiles instead.
SUMMARY_SIZE = 10_000
#: PSI/JS bins: edges at the reference's deciles (fewer bins where deciles coincide).
PSI_BINS = 10
#: A numeric reference with at most this many distinct values is binned per value (plus an
#: "other" bin for anything else), as Evidently does for numeric columns with ≤ 20 values.
DISCRETE_MAX_VALUES = 20
#: PSI replaces an empty bin's proportion (reference or current) by this, so that ln(p/q) stays
#: finite: an empty reference bin that gets 1 % of the window adds (0.01 − 1e-4)·ln(100) ≈ 0.046.
PSI_EPSILON = 1e-4
#: Chi-square: a bucket the reference never saw (unseen categories, or missing values when the
#: reference had none) is expected with this pseudo-count of reference rows.
UNSEEN_PSEUDOCOUNT = 0.5
#: Windows (and references) with fewer usable rows than this get no verdict.
MIN_ROWS = 100
#: Windows with more rows than this use the large-sample rules (effect sizes, not p-values).
LARGE_SAMPLE = 1000
#: The key of the pooled unseen-categories and missing-values buckets in categorical results.
UNSEEN = "<unseen>"
MISSING = "<missing>"

NUMERIC_METHODS = ("psi", "ks", "wasserstein", "jensenshannon")
CATEGORICAL_METHODS = ("chi2", "jensenshannon")
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Default methods and thresholds


#: The largest :attr:`DriftResult.severity` (a p-value of 1e-300 is not 1e298 times worse than 0.05).
SEVERITY_CAP = 100.0


@dataclass(frozen=True)
class Rule:
    """When one method calls drift: ``effect > threshold`` and, if ``p_threshold`` is set,
    ``p_value < p_threshold``. The effect is the statistic itself (PSI, KS D, normalised
    Wasserstein, JS distance), except for chi-square, where it is Cohen's w = √(χ²/n)."""

    method: str
    threshold: float
    p_threshold: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class SizeBand:
    """The rules for one column type and range of window sizes (``min_rows`` ≤ n ≤ ``max_rows``)."""

    kind: Kind
    min_rows: int
    max_rows: int | None
    primary: str
    rules: Mapping[str, Rule]
    reason: str


_PSI_REPORTED = Rule(
    "psi", 0.2, reason="industry rule of thumb: < 0.1 stable, 0.1–0.2 moderate, > 0.2 a significant shift"
)
_WASSERSTEIN_REPORTED = Rule(
    "wasserstein",
    0.1,
    reason="Evidently's default for numeric columns over 1000 rows: the mass moved by 0.1 reference std",
)
_JS_REPORTED = Rule("jensenshannon", 0.1, reason="Evidently's default Jensen–Shannon threshold")

#: The default method and threshold per column type and window size, with the reason for each.
#: Windows (or references) under ``MIN_ROWS`` usable rows get no verdict at all: with so few rows
#: a 10-bin histogram and an empirical CDF are mostly noise (PSI between two samples of 100 from
#: one distribution exceeds 0.2 about a third of the time).
DEFAULT_RULES: tuple[SizeBand, ...] = (
    SizeBand(
        "numeric",
        MIN_ROWS,
        LARGE_SAMPLE,
        primary="ks",
        rules={
            "ks": Rule(
                "ks",
                0.0,
                0.05,
                reason="a calibrated test suits small windows: PSI's no-drift level is about "
                "(bins − 1)(1/n + 1/N), ≈ 0.1 for n = 150 against N = 450, so a PSI threshold "
                "fires by chance; KS p < 0.05 is Evidently's default up to 1000 rows",
            ),
            "psi": _PSI_REPORTED,
            "wasserstein": _WASSERSTEIN_REPORTED,
            "jensenshannon": _JS_REPORTED,
        },
        reason="100–1000 rows: KS p < 0.05 decides; the effect sizes are reported",
    ),
    SizeBand(
        "numeric",
        LARGE_SAMPLE + 1,
        None,
        primary="psi",
        rules={
            "psi": Rule(
                "psi",
                0.2,
                reason="industry rule of thumb (> 0.2: significant shift), an effect size whose "
                "sampling noise is ≤ 0.01 over 1000 rows; a p-value would call a 0.01-std shift "
                "drift at 10^5 rows",
            ),
            "ks": Rule(
                "ks",
                0.1,
                0.05,
                reason="D is an effect size (largest gap between the CDFs): 0.1 is about a quarter-"
                "std mean shift; p < 0.05 alone is always met at this size",
            ),
            "wasserstein": _WASSERSTEIN_REPORTED,
            "jensenshannon": _JS_REPORTED,
        },
        reason="over 1000 rows: PSI > 0.2 decides; KS, Wasserstein and JS are reported",
    ),
    SizeBand(
        "categorical",
        MIN_ROWS,
        LARGE_SAMPLE,
        primary="chi2",
        rules={
            "chi2": Rule(
                "chi2",
                0.0,
                0.05,
                reason="chi-square p < 0.05 is Evidently's default for categorical columns up to 1000 rows",
            ),
            "jensenshannon": _JS_REPORTED,
        },
        reason="100–1000 rows: chi-square p < 0.05 decides; JS is reported",
    ),
    SizeBand(
        "categorical",
        LARGE_SAMPLE + 1,
        None,
        primary="jensenshannon",
        rules={
            "jensenshannon": Rule(
                "jensenshannon",
                0.1,
                reason="Evidently's default for categorical columns over 1000 rows: an effect size",
            ),
            "chi2": Rule(
                "chi2",
                0.1,
                0.05,
                reason="p < 0.05 alone is met by any difference at this size: also Cohen's w > 0.1 (a 'small' effect)",
            ),
        },
        reason="over 1000 rows: JS > 0.1 decides; chi-square is reported",
    ),
)


def size_band(kind: Kind, rows: int) -> SizeBand | None:
    """The default rules for ``rows`` usable rows of a ``kind`` column; None under ``MIN_ROWS``."""
    for band in DEFAULT_RULES:
        if band.kind == kind and rows >= band.min_rows and (band.max_rows is None or rows <= band.max_rows):
            return band
    return None


def defaults_table() -> list[dict[str, Any]]:
    """:data:`DEFAULT_RULES` as rows (type, rows, method, threshold, p, primary, reason), for docs."""
    rows: list[dict[str, Any]] = []
    for band in DEFAULT_RULES:
        span = f"{band.min_rows}–{band.max_rows}" if band.max_rows else f"> {band.min_rows - 1}"
        for method, rule in band.rules.items():
            rows.append(
                {
                    "type": band.kind,
                    "rows": span,
                    "method": method,
                    "threshold": rule.threshold,
                    "p_threshold": rule.p_threshold,
                    "primary": method == band.primary,
                    "reason": rule.reason,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# References


def _sorted_finite(values: ArrayLike) -> tuple[FloatArray, int]:
    """A sorted copy of the finite values (a view into one new array) and how many were not
    finite (NaN, ±inf: counted as missing)."""
    c = np.array(values, dtype=np.float64).reshape(-1)  # always a copy: sorted in place below
    c.sort()
    return _finite_part(c)


def _finite_part(c: FloatArray) -> tuple[FloatArray, int]:
    """The finite slice of an array sorted in place (−inf first, then +inf, NaN last)."""
    lo = int(np.searchsorted(c, -np.inf, side="right"))
    hi = int(np.searchsorted(c, np.inf, side="left"))
    return c[lo:hi], c.size - (hi - lo)


def _quantile_summary(s: FloatArray, k: int) -> FloatArray:
    """``k`` values of the sorted sample ``s`` at probabilities (i + ½)/k, inverse-CDF style
    (numpy's ``method="inverted_cdf"``, in exact integer arithmetic): real sample values whose
    empirical CDF is within 1/(2k) of the sample's everywhere."""
    n = s.size
    i = np.arange(k, dtype=np.int64)
    idx = ((2 * i + 1) * n + 2 * k - 1) // (2 * k) - 1  # ceil((i + ½)·n/k) − 1
    return s[idx]


def _spread(std: float, mean: float) -> float:
    if std > 0:
        return std
    return 1e-3 * max(1.0, abs(mean))


@dataclass(eq=False)
class NumericReference:
    """A numeric feature's reference, summarised once.

    ``values``: the sorted finite sample (``exact``) or, above ``SUMMARY_SIZE`` values, that many
    of its quantiles. ``count``/``missing``: finite and non-finite (NaN, ±inf) values.
    ``bin_edges``/``bin_counts``: the PSI/JS bins and the reference's count in each: for a
    ``"quantile"`` reference the distinct interior deciles, bins (−inf, e0], (e0, e1], … (e_last,
    inf); for a ``"values"`` reference (≤ ``DISCRETE_MAX_VALUES`` distinct values) one bin per
    value plus an "other" bin that the reference never fills. ``ks_error``/``wasserstein_error``:
    how far the summary's KS/Wasserstein can be from the whole sample's (0 when exact).
    """

    values: FloatArray
    count: int
    missing: int
    exact: bool
    mean: float
    std: float
    iqr: float
    minimum: float
    maximum: float
    bin_kind: Literal["quantile", "values"]
    bin_edges: FloatArray
    bin_counts: IntArray
    ks_error: float = 0.0
    wasserstein_error: float = 0.0
    kind: Kind = field(default="numeric", init=False)
    _unique: FloatArray = field(init=False, repr=False)
    _cumulative: IntArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.values, dtype=np.float64)
        self.values = v
        if v.size:
            starts = np.flatnonzero(np.concatenate(([True], v[1:] != v[:-1])))
            self._unique = v[starts]
            self._cumulative = np.append(starts[1:], v.size).astype(np.int64)
        else:
            self._unique = v
            self._cumulative = np.zeros(0, dtype=np.int64)

    @property
    def spread(self) -> float:
        """What the Wasserstein distance is divided by: the std, or for a constant reference
        1e-3 × max(1, |value|) (so any real move of a constant is large)."""
        return _spread(self.std, self.mean)

    @property
    def weight(self) -> int:
        """How many points ``values`` holds (the CDF's denominator)."""
        return int(self.values.size)

    @classmethod
    def from_array(
        cls, values: ArrayLike, *, summary_size: int = SUMMARY_SIZE, bins: int = PSI_BINS
    ) -> NumericReference:
        s, missing = _sorted_finite(values)
        n = int(s.size)
        if n == 0:
            empty = np.zeros(0)
            return cls(
                empty,
                0,
                missing,
                True,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                "quantile",
                empty,
                np.zeros(1, dtype=np.int64),
            )
        # Two-pass mean/std around the median: exact enough for values with a large offset.
        mid = float(s[n // 2])
        d = s - mid
        mean = mid + float(d.mean())
        std = float(np.sqrt(np.mean((d - (mean - mid)) ** 2)))
        q25, q75 = np.quantile(s, [0.25, 0.75])
        distinct = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        bin_kind: Literal["quantile", "values"]
        if distinct.size <= DISCRETE_MAX_VALUES:
            bin_kind = "values"
            edges = s[distinct]
            counts = np.diff(np.append(distinct, n))
        else:
            bin_kind = "quantile"
            edges = np.unique(np.quantile(s, np.arange(1, bins) / bins, method="inverted_cdf"))
            le = np.searchsorted(s, edges, side="right")
            counts = np.diff(np.concatenate(([0], le, [n])))
        if n <= summary_size:
            summary, exact = s.copy(), True
        else:
            summary, exact = _quantile_summary(s, summary_size), False
        ref = cls(
            summary,
            n,
            missing,
            exact,
            mean,
            std,
            float(q75 - q25),
            float(s[0]),
            float(s[-1]),
            bin_kind,
            edges.astype(np.float64),
            counts.astype(np.int64),
        )
        if not exact:
            ks, w1 = _ks_wasserstein(ref._unique, ref._cumulative, ref.weight, s)
            ref.ks_error, ref.wasserstein_error = ks, w1 / ref.spread
        return ref

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (finite floats, ints, lists, strings)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "type": "numeric",
            "version": _FORMAT_VERSION,
            "count": self.count,
            "missing": self.missing,
            "exact": self.exact,
            "values": self.values.tolist(),
            "mean": num(self.mean),
            "std": num(self.std),
            "iqr": num(self.iqr),
            "min": num(self.minimum),
            "max": num(self.maximum),
            "bin_kind": self.bin_kind,
            "bin_edges": self.bin_edges.tolist(),
            "bin_counts": self.bin_counts.tolist(),
            "ks_error": self.ks_error,
            "wasserstein_error": self.wasserstein_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericReference:
        if data.get("type") != "numeric":
            raise ValueError(f"not a numeric reference: type {data.get('type')!r}")

        def num(x: Any) -> float:
            return math.nan if x is None else float(x)

        values = np.asarray(data["values"], dtype=np.float64)
        edges = np.asarray(data["bin_edges"], dtype=np.float64)
        counts = np.asarray(data["bin_counts"], dtype=np.int64)
        bin_kind = data["bin_kind"]
        if bin_kind not in ("quantile", "values"):
            raise ValueError(f"unknown bin_kind {bin_kind!r}")
        if values.ndim != 1 or np.any(np.diff(values) < 0) or not np.all(np.isfinite(values)):
            raise ValueError("values must be a sorted list of finite numbers")
        expected_bins = edges.size + 1 if bin_kind == "quantile" else edges.size
        if counts.size != expected_bins or (int(data["count"]) and int(counts.sum()) != int(data["count"])):
            raise ValueError("bin_counts do not match bin_edges and count")
        return cls(
            values,
            int(data["count"]),
            int(data["missing"]),
            bool(data["exact"]),
            num(data["mean"]),
            num(data["std"]),
            num(data["iqr"]),
            num(data["min"]),
            num(data["max"]),
            bin_kind,
            edges,
            counts,
            float(data.get("ks_error", 0.0)),
            float(data.get("wasserstein_error", 0.0)),
        )


def category_key(value: Any) -> str | None:
    """The category a value stands for, as a JSON object key; None for a missing value.

    None and float NaN are missing; integral numbers (1, 1.0, numpy ints) are written as ints, so
    an int column that became float because of missing values keeps its categories; other floats
    as ``repr``; booleans as ``"True"``/``"False"``; bytes decoded as UTF-8; anything else ``str``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value if type(value) is str else str(value)  # np.str_ → str
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        if math.isnan(f):
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def category_counts(values: ArrayLike | Iterable[Any]) -> tuple[dict[str, int], int]:
    """(category → count, missing count) of a column, categories as :func:`category_key` names them."""
    counts: dict[str, int] = {}
    missing = 0
    pairs: Iterable[tuple[Any, int]]
    arr = values.reshape(-1) if isinstance(values, np.ndarray) else None
    if arr is not None and arr.dtype.kind in "fc":
        nan = np.isnan(arr)
        missing = int(nan.sum())
        uniq, cnt = np.unique(arr[~nan], return_counts=True)
        pairs = zip(uniq.tolist(), cnt.tolist(), strict=True)
    elif arr is not None and arr.dtype.kind in "biu":
        uniq, cnt = np.unique(arr, return_counts=True)
        pairs = zip(uniq.tolist(), cnt.tolist(), strict=True)
    else:
        # Strings, objects, lists: hashed as Python objects (a list may mix types, which numpy
        # would turn into strings).
        items = arr.tolist() if arr is not None else list(values)  # type: ignore[arg-type]
        counter: Counter[Any] = Counter(items)
        if any(isinstance(k, bool | int | float | np.number | np.bool_) and k in (0, 1) for k in counter):
            # True == 1 == 1.0 as dict keys, but True is not the category "1": count by type too.
            counter = Counter(zip(map(type, items), items, strict=True))
            pairs = ((v, n) for (_, v), n in counter.items())
        else:
            pairs = counter.items()
    for value, n in pairs:
        key = category_key(value)
        if key is None:
            missing += int(n)
        else:
            counts[key] = counts.get(key, 0) + int(n)
    return counts, missing


@dataclass(eq=False)
class CategoricalReference:
    """A categorical feature's reference: category → count, and the missing count."""

    counts: dict[str, int]
    missing: int = 0
    kind: Kind = field(default="categorical", init=False)

    @property
    def count(self) -> int:
        """Rows, missing ones included (they are a bucket of their own)."""
        return sum(self.counts.values()) + self.missing

    @classmethod
    def from_array(cls, values: ArrayLike | Iterable[Any]) -> CategoricalReference:
        counts, missing = category_counts(values)
        return cls(dict(sorted(counts.items())), missing)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "version": _FORMAT_VERSION, "counts": dict(self.counts), "missing": self.missing}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalReference:
        if data.get("type") != "categorical":
            raise ValueError(f"not a categorical reference: type {data.get('type')!r}")
        counts = {str(k): int(v) for k, v in dict(data["counts"]).items()}
        if any(v < 0 for v in counts.values()) or int(data.get("missing", 0)) < 0:
            raise ValueError("counts must be non-negative")
        return cls(counts, int(data.get("missing", 0)))


Reference = NumericReference | CategoricalReference


def reference_from_dict(data: Mapping[str, Any]) -> Reference:
    """A stored reference (``to_dict()`` output) back, numeric or categorical by its ``type``."""
    if data.get("type") == "numeric":
        return NumericReference.from_dict(data)
    if data.get("type") == "categorical":
        return CategoricalReference.from_dict(data)
    raise ValueError(f"unknown reference type {data.get('type')!r}")


def column_kind(values: ArrayLike) -> Kind:
    """numeric for int/uint/float arrays, categorical for everything else (bool, str, objects)."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    return "numeric" if arr.dtype.kind in "iuf" else "categorical"


def build_references(
    data: Mapping[str, ArrayLike] | NDArray[Any],
    names: Sequence[str] | None = None,
    *,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    summary_size: int = SUMMARY_SIZE,
) -> dict[str, Reference]:
    """One reference per column of a dict feature → 1-D array, or of a 2-D array (rows ×
    features) with ``names``. The type follows the dtype (:func:`column_kind`); ``categorical``
    and ``numeric`` force it per feature (e.g. integer-coded categories)."""
    force_cat, force_num = set(categorical), set(numeric)
    refs: dict[str, Reference] = {}
    for name, col in _columns(data, names):
        kind = "categorical" if name in force_cat else "numeric" if name in force_num else column_kind(col)
        if kind == "numeric":
            refs[name] = NumericReference.from_array(col, summary_size=summary_size)
        else:
            refs[name] = CategoricalReference.from_array(col)
    return refs


def _columns(data: Mapping[str, ArrayLike] | NDArray[Any], names: Sequence[str] | None) -> list[tuple[str, Any]]:
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError("a window or reference given as an array must be 2-D (rows × features)")
        if names is None or len(names) != data.shape[1]:
            raise ValueError("a 2-D array needs one name per column")
        return [(name, data[:, j]) for j, name in enumerate(names)]
    return list(data.items())


# --------------------------------------------------------------------------------------------
# Numeric statistics


def _ks_wasserstein(
    u: FloatArray, cw: IntArray, total: int, c: FloatArray, *, scratch: bool = False
) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance between a reference and a current sample.

    The reference: distinct sorted values ``u`` with cumulative weights ``cw`` (points ≤ u_j,
    ``cw[-1] == total``). The current sample ``c``: sorted, finite, non-empty; with ``scratch``
    it is overwritten (centred in place) instead of copied. Only O(len(u)) work besides two
    passes over ``c`` (centring, and np.add.reduceat for prefix sums).

    KS: the CDF gap is largest at a reference value or just below one, so both are checked
    (F_ref(u_j) − F_cur(u_j) and F_ref(u_j⁻) − F_cur(u_j⁻)); every value compared is one that
    scipy's ks_2samp also computes, with the same operations.

    W1 = ∫|F_ref − F_cur|: between two reference values F_ref is a constant A, and F_cur steps up
    by 1/m at each current value; |A − F_cur| changes sign at most once there, at a step known in
    integer arithmetic (floor(A·m)), and each signed part is a telescoping sum of the current
    values, i.e. prefix sums at O(1) indices per interval.
    """
    m = c.size
    n_u = u.size
    s = np.searchsorted(c, u, side="left")  # current values < u_j
    r = s.copy()  # current values ≤ u_j
    inside = np.flatnonzero(s < m)
    equal = inside[c[s[inside]] == u[inside]]
    if equal.size:
        r[equal] = np.searchsorted(c, u[equal], side="right")
    a = cw / total  # F_ref(u_j), as ks_2samp computes it (count / n)
    a_before = np.concatenate(([0.0], a[:-1]))  # F_ref just below u_j
    ks = float(max(np.max(np.abs(a - r / m)), np.max(np.abs(a_before - s / m))))

    # Intervals k = 0..U: (−inf, u_0), [u_0, u_1), …, [u_{U-1}, end]; F_ref = A[k] on each;
    # current indices S[k]..E[k]-1 fall in it. Data far from 0 relative to its range is centred
    # on the reference's median (exact for values near it), which keeps the telescoping terms
    # small: otherwise sums of values around 1e9 would lose the digits that matter.
    mu = float(u[n_u // 2])
    if abs(mu) > 4.0 * float(u[-1] - u[0]):  # only far from 0 do the sums lose digits
        if not scratch:
            c = c.copy()
        c -= mu
    else:
        mu = 0.0
    uc = u - mu
    last = max(uc[-1], float(c[-1]))
    left = np.concatenate(([0.0], uc))  # interval starts (k = 0 unused)
    right = np.append(uc, last)  # interval ends
    S = np.concatenate(([0], s)).astype(np.int64)
    E = np.append(s, m).astype(np.int64)
    cw_k = np.concatenate(([0], cw)).astype(np.int64)
    A = cw_k / total
    q = (cw_k * m) // total  # steps i with (i + 1)/m ≤ A are those i < q
    t = np.clip(q, S, E)

    # Prefix sums P[i] = c[0] + … + c[i-1] at the indices used below, from one reduceat pass.
    S1 = np.minimum(S + 1, m)
    t1 = np.minimum(t + 1, m)
    needed = np.concatenate(([0], S1, t, t1, E))
    order = np.argsort(needed, kind="stable")
    ranked = needed[order]
    new = np.concatenate(([True], ranked[1:] != ranked[:-1]))
    keys = ranked[new]  # distinct, increasing, keys[0] == 0
    rank = np.empty_like(order)
    rank[order] = np.cumsum(new) - 1
    starts = keys[keys < m]
    sums = np.add.reduceat(c, starts)
    prefix = np.concatenate(([0.0], np.cumsum(sums)))[: keys.size]  # P at each key (P[m] last if m is a key)
    P = prefix[rank]
    n_k = S.size
    P_S1, P_t, P_t1, P_E = (P[1 + i * n_k : 1 + (i + 1) * n_k] for i in range(4))

    def value_at(i: IntArray) -> FloatArray:
        return c[np.minimum(i, m - 1)]

    c_S = value_at(S)
    c_t = value_at(t)
    c_t_hat = np.where(t < E, c_t, right)
    pos = np.where(
        t > S,
        A * (c_t_hat - c_S) - (t * c_t_hat - (S + 1) * c_S - (P_t - P_S1)) / m,
        0.0,
    )
    neg = np.where(
        E > t,
        (E * right - (t + 1) * c_t - (P_E - P_t1)) / m - A * (right - c_t),
        0.0,
    )
    first_end = np.where(S < E, c_S, right)
    first = np.abs(A - S / m) * (first_end - left)
    first[0] = 0.0
    w1 = float(first.sum() + pos.sum() + neg.sum())
    return ks, max(w1, 0.0)


def _bin_counts(ref: NumericReference, c: FloatArray) -> tuple[IntArray, IntArray]:
    """(reference counts, current counts) in the reference's bins."""
    m = c.size
    if ref.bin_kind == "values":
        lo = np.searchsorted(c, ref.bin_edges, side="left")
        hi = np.searchsorted(c, ref.bin_edges, side="right")
        cur = np.append(hi - lo, m - int((hi - lo).sum()))
        return np.append(ref.bin_counts, 0), cur.astype(np.int64)
    le = np.searchsorted(c, ref.bin_edges, side="right")
    cur = np.diff(np.concatenate(([0], le, [m])))
    return ref.bin_counts, cur.astype(np.int64)


def psi(reference_counts: ArrayLike, current_counts: ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index Σ (c − r)·ln(c/r) over bins, each proportion floored at ``epsilon``."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    r = np.maximum(r / r.sum(), epsilon)
    c = np.maximum(c / c.sum(), epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two count or probability vectors:
    the same operations as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``."""
    pa = np.asarray(p, dtype=np.float64)
    qa = np.asarray(q, dtype=np.float64)
    pa = pa / pa.sum()
    qa = qa / qa.sum()
    mid = (pa + qa) / 2.0
    js = (np.sum(rel_entr(pa, mid)) + np.sum(rel_entr(qa, mid))) / np.log(2.0)
    return float(np.sqrt(max(js, 0.0) / 2.0))


def ks_pvalue(statistic: ArrayLike, n_reference: ArrayLike, n_current: ArrayLike) -> FloatArray:
    """Two-sided asymptotic KS p-value, as ``scipy.stats.ks_2samp(method="asymp")``:
    ``kstwo.sf(D, round(n·m/(n+m)))``, vectorised over columns."""
    d = np.asarray(statistic, dtype=np.float64)
    n1 = np.asarray(n_reference, dtype=np.float64)
    n2 = np.asarray(n_current, dtype=np.float64)
    en = np.round(n1 * n2 / (n1 + n2))
    p = np.clip(distributions.kstwo.sf(d, np.maximum(en, 1.0)), 0.0, 1.0)
    return np.asarray(np.where(en >= 1, p, np.nan), dtype=np.float64)  # en < 1: one value each side


@dataclass
class NumericStatistics:
    """All numeric statistics of one column against its reference (None where not computable:
    an empty window or reference). ``reference_bins``/``current_bins`` are the PSI/JS bin
    proportions (for a chart), ``bin_edges`` the reference's edges."""

    count: int
    missing: int
    ks: float | None = None
    ks_pvalue: float | None = None
    wasserstein: float | None = None
    wasserstein_normalised: float | None = None
    psi: float | None = None
    jensenshannon: float | None = None
    reference_bins: list[float] = field(default_factory=list)
    current_bins: list[float] = field(default_factory=list)
    bin_edges: list[float] = field(default_factory=list)


def _numeric_one(ref: NumericReference, c: FloatArray, missing: int, *, scratch: bool = False) -> NumericStatistics:
    """``scratch``: ``c`` is a private copy that may be overwritten."""
    m = int(c.size)
    st = NumericStatistics(count=m, missing=missing)
    if m == 0 or ref.count == 0:
        return st
    rc, cc = _bin_counts(ref, c)
    ks, w1 = _ks_wasserstein(ref._unique, ref._cumulative, ref.weight, c, scratch=scratch)
    st.ks = ks
    st.wasserstein = w1
    st.wasserstein_normalised = w1 / ref.spread
    st.psi = psi(rc, cc)
    st.jensenshannon = js_distance(rc, cc)
    st.reference_bins = (rc / rc.sum()).tolist()
    st.current_bins = (cc / m).tolist()
    st.bin_edges = ref.bin_edges.tolist()
    return st


#: Columns of a C-ordered 2-D window are copied out in blocks of this many bytes, a few thousand
#: rows at a time: reading one column of a row-major array touches every cache line of it.
_BLOCK_BYTES = 64 * 1024 * 1024
_CHUNK_ROWS = 2048


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def numeric_statistics(
    references: Sequence[NumericReference],
    data: NDArray[Any] | Sequence[ArrayLike],
    *,
    columns: Sequence[int] | None = None,
    workers: int | None = None,
) -> list[NumericStatistics]:
    """Numeric statistics for many columns at once: column j of ``data`` (a 2-D rows × features
    array, or a sequence of 1-D arrays) against ``references[j]``; with ``columns``, column
    ``columns[j]`` of ``data`` instead.

    Each current column is copied and sorted once (numpy's vectorised sort); everything else is
    O(reference size) per column, so the cost is about one sort per column. Columns are spread
    over ``workers`` threads (numpy releases the GIL while sorting); default: the CPU count, ≤ 4.
    """
    idx = list(range(len(references))) if columns is None else list(columns)
    if len(idx) != len(references):
        raise ValueError("one reference per column")
    n_workers = _default_workers() if workers is None else max(1, workers)
    results: list[NumericStatistics | None] = [None] * len(idx)

    tasks: list[list[int]]  # positions in idx handled together
    array = data if isinstance(data, np.ndarray) else None
    if array is not None and array.ndim != 2:
        raise ValueError("data must be a 2-D array (rows × features) or a sequence of 1-D arrays")
    row_major = array is not None and array.shape[1] > 1 and not array[:, 0].flags.c_contiguous
    if array is not None and row_major:
        per_block = max(1, _BLOCK_BYTES // max(1, array.shape[0] * 8))
        tasks = [list(range(i, min(i + per_block, len(idx)))) for i in range(0, len(idx), per_block)]
    else:
        tasks = [[i] for i in range(len(idx))]

    def column(pos: int) -> Any:
        return array[:, idx[pos]] if array is not None else data[idx[pos]]

    def run(task: list[int]) -> None:
        if array is not None and row_major:
            cols = [idx[p] for p in task]
            block = np.empty((len(cols), array.shape[0]), dtype=np.float64)
            contiguous_cols = cols == list(range(cols[0], cols[0] + len(cols)))
            for r0 in range(0, array.shape[0], _CHUNK_ROWS):
                rows = array[r0 : r0 + _CHUNK_ROWS]
                block[:, r0 : r0 + _CHUNK_ROWS] = (
                    rows[:, cols[0] : cols[0] + len(cols)] if contiguous_cols else rows[:, cols]
                ).T
            for k, p in enumerate(task):
                row = block[k]
                row.sort()
                c, missing = _finite_part(row)
                results[p] = _numeric_one(references[p], c, missing, scratch=True)
        else:
            for p in task:
                c, missing = _sorted_finite(column(p))
                results[p] = _numeric_one(references[p], c, missing, scratch=True)

    if n_workers > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=min(n_workers, len(tasks))) as pool:
            list(pool.map(run, tasks))
    else:
        for task in tasks:
            run(task)

    done = [r for r in results if r is not None]
    assert len(done) == len(results)
    # KS p-values for all columns in one vectorised call.
    with_ks = [(k, r, r.ks) for k, r in enumerate(done) if r.ks is not None]
    if with_ks:
        p = ks_pvalue(
            [d for _, _, d in with_ks],
            [references[k].count for k, _, _ in with_ks],
            [r.count for _, r, _ in with_ks],
        )
        for (_, r, _), pv in zip(with_ks, p.tolist(), strict=True):
            r.ks_pvalue = None if math.isnan(pv) else pv
    return done


# --------------------------------------------------------------------------------------------
# Categorical statistics


@dataclass
class CategoricalStatistics:
    """A categorical column against its reference. ``buckets``: the reference's categories, then
    ``MISSING`` (if either side has missing values) and ``UNSEEN`` (if the window has categories
    the reference never saw); ``reference_counts``/``current_counts`` per bucket; ``unseen``: rows
    in unseen categories, ``unseen_categories``: how many distinct ones (``unseen_examples``:
    up to 10 of them, the most frequent first)."""

    count: int
    missing: int
    unseen: int
    unseen_categories: int
    unseen_examples: list[str]
    buckets: list[str]
    reference_counts: list[int]
    current_counts: list[int]
    chi2: float | None = None
    chi2_pvalue: float | None = None
    dof: int = 0
    cohens_w: float | None = None
    jensenshannon: float | None = None


def categorical_statistics(reference: CategoricalReference, values: ArrayLike | Iterable[Any]) -> CategoricalStatistics:
    """Chi-square goodness of fit of the window's counts against the reference's proportions, and
    the Jensen–Shannon distance between the two distributions, over the same buckets.

    Buckets: each reference category; ``MISSING`` when the reference or the window has missing
    values; ``UNSEEN`` (all categories the reference never saw, pooled) when the window has any.
    Expected counts: the window's row count × the reference's share of each bucket, where a bucket
    the reference never filled counts ``UNSEEN_PSEUDOCOUNT`` reference rows (else it would be
    expected 0 times and χ² infinite). χ², its p-value (dof = buckets − 1) are
    ``scipy.stats.chisquare(current_counts, expected)``'s; with a single bucket there is nothing
    to test: χ² 0, p 1. JS compares the raw reference and window shares (no pseudo-count).
    """
    counts, missing = category_counts(values)
    seen = reference.counts
    unseen_items = sorted(((n, k) for k, n in counts.items() if k not in seen), key=lambda x: (-x[0], x[1]))
    unseen = sum(n for n, _ in unseen_items)
    buckets = list(seen)
    ref_counts = [seen[k] for k in buckets]
    cur_counts = [counts.get(k, 0) for k in buckets]
    if reference.missing or missing:
        buckets.append(MISSING)
        ref_counts.append(reference.missing)
        cur_counts.append(missing)
    if unseen:
        buckets.append(UNSEEN)
        ref_counts.append(0)
        cur_counts.append(unseen)
    total = sum(cur_counts)
    st = CategoricalStatistics(
        count=total,
        missing=missing,
        unseen=unseen,
        unseen_categories=len(unseen_items),
        unseen_examples=[k for _, k in unseen_items[:10]],
        buckets=buckets,
        reference_counts=ref_counts,
        current_counts=cur_counts,
    )
    if total == 0 or sum(ref_counts) == 0:
        return st
    obs = np.asarray(cur_counts, dtype=np.float64)
    ref = np.asarray(ref_counts, dtype=np.float64)
    ref_smoothed = np.where(ref > 0, ref, UNSEEN_PSEUDOCOUNT)
    expected = total * ref_smoothed / ref_smoothed.sum()
    stat = float(np.sum((obs - expected) ** 2 / expected))
    dof = len(buckets) - 1
    st.chi2 = stat
    st.dof = dof
    st.chi2_pvalue = float(distributions.chi2.sf(stat, dof)) if dof > 0 else 1.0
    st.cohens_w = math.sqrt(stat / total)
    st.jensenshannon = js_distance(ref, obs)
    return st


# --------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class DriftResult:
    """One method's statistic and verdict for one feature in one window.

    ``threshold`` applies to the effect (see :class:`Rule`), ``p_threshold`` to ``p_value`` when
    set. ``drifted`` is False when ``insufficient_data`` (the window or reference had fewer than
    the minimum usable rows: no verdict). ``primary``: this method decides the feature's verdict.
    ``missing``/``unseen``: the window's missing values and rows in unseen categories (numeric:
    unseen is 0). ``extras``: anything else worth showing (e.g. the summary's error bounds).
    """

    feature: str
    method: str
    statistic: float | None
    threshold: float
    p_value: float | None
    p_threshold: float | None
    drifted: bool
    primary: bool
    insufficient_data: bool
    n_reference: int
    n_current: int
    missing: int = 0
    unseen: int = 0
    effect: float | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> float | None:
        """How far past its rule the window is, as one number: drift is ``severity > 1``.

        The smaller of effect ÷ threshold and p-threshold ÷ p-value (the parts the rule has; a
        threshold of 0 counts any effect), capped at :data:`SEVERITY_CAP`; None without a verdict."""
        if self.insufficient_data or self.effect is None or math.isnan(self.effect):
            return None
        parts = [self.effect / self.threshold if self.threshold > 0 else (SEVERITY_CAP if self.effect > 0 else 0.0)]
        if self.p_threshold is not None:
            p = self.p_value
            parts.append(0.0 if p is None else SEVERITY_CAP if p <= 0 else self.p_threshold / p)
        return min(SEVERITY_CAP, *parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "p_threshold": self.p_threshold,
            "drifted": self.drifted,
            "primary": self.primary,
            "insufficient_data": self.insufficient_data,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "missing": self.missing,
            "unseen": self.unseen,
            "effect": self.effect,
            "extras": dict(self.extras),
        }


@dataclass
class FeatureDrift:
    """A feature's verdict in one window: its primary method's, plus every method's result."""

    feature: str
    kind: Kind
    primary_method: str
    results: dict[str, DriftResult]
    statistics: NumericStatistics | CategoricalStatistics

    @property
    def primary(self) -> DriftResult:
        return self.results[self.primary_method]

    @property
    def drifted(self) -> bool:
        return self.primary.drifted

    @property
    def insufficient_data(self) -> bool:
        return self.primary.insufficient_data

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "drifted": self.drifted,
            "insufficient_data": self.insufficient_data,
            "primary_method": self.primary_method,
            "results": {k: r.to_dict() for k, r in self.results.items()},
            "statistics": self.statistics.__dict__.copy(),
        }


@dataclass
class DriftReport:
    """All features of one window. ``skipped``: window columns without a reference."""

    features: dict[str, FeatureDrift]
    skipped: list[str] = field(default_factory=list)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drifted]

    @property
    def results(self) -> list[DriftResult]:
        return [r for f in self.features.values() for r in f.results.values()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted_features": self.drifted_features,
            "features": {k: f.to_dict() for k, f in self.features.items()},
            "skipped": list(self.skipped),
        }


#: An override: any of ``method``, ``threshold``, ``p_threshold``, ``min_rows``.
Override = Mapping[str, Any]
_OVERRIDE_KEYS = frozenset({"method", "threshold", "p_threshold", "min_rows"})


def _check_override(where: str, ov: Override, kind: Kind) -> None:
    unknown = set(ov) - _OVERRIDE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown override keys {sorted(unknown)}")
    methods = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
    if "method" in ov and ov["method"] not in methods:
        raise ValueError(f"{where}: method {ov['method']!r} is not one of {methods} for a {kind} feature")


def _rules_for(
    kind: Kind, rows: int, type_override: Override, feature_override: Override
) -> tuple[str, dict[str, Rule], int]:
    """(primary method, rule per method, minimum rows) after the system's and the feature's overrides."""
    min_rows = int(feature_override.get("min_rows", type_override.get("min_rows", MIN_ROWS)))
    band = size_band(kind, max(rows, MIN_ROWS))  # below min_rows: no verdict, the small rules shown
    assert band is not None
    rules = dict(band.rules)
    primary = band.primary
    for ov in (type_override, feature_override):
        method = ov.get("method", primary)
        if "method" in ov or "threshold" in ov or "p_threshold" in ov:
            base = rules[method]
            rules[method] = Rule(
                method,
                float(ov.get("threshold", base.threshold)),
                ov["p_threshold"] if "p_threshold" in ov else base.p_threshold,
                reason="overridden",
            )
        primary = method
    return primary, rules, min_rows


def _judge(
    feature: str,
    method: str,
    rule: Rule,
    *,
    statistic: float | None,
    effect: float | None,
    p_value: float | None,
    primary: bool,
    insufficient: bool,
    n_reference: int,
    n_current: int,
    missing: int,
    unseen: int,
    extras: Mapping[str, Any],
) -> DriftResult:
    drifted = False
    if not insufficient and effect is not None and not math.isnan(effect):
        drifted = effect > rule.threshold
        if rule.p_threshold is not None:
            drifted = drifted and p_value is not None and p_value < rule.p_threshold
    return DriftResult(
        feature=feature,
        method=method,
        statistic=statistic,
        threshold=rule.threshold,
        p_value=p_value,
        p_threshold=rule.p_threshold,
        drifted=drifted,
        primary=primary,
        insufficient_data=insufficient,
        n_reference=n_reference,
        n_current=n_current,
        missing=missing,
        unseen=unseen,
        effect=effect,
        extras=extras,
    )


def judge_numeric(
    feature: str,
    reference: NumericReference,
    st: NumericStatistics,
    *,
    type_override: Override | None = None,
    feature_override: Override | None = None,
) -> FeatureDrift:
    """Verdicts for one numeric feature's statistics, by :data:`DEFAULT_RULES` and the overrides."""
    tov, fov = type_override or {}, feature_override or {}
    _check_override(f"{feature}: system override", tov, "numeric")
    _check_override(feature, fov, "numeric")
    primary, rules, min_rows = _rules_for("numeric", st.count, tov, fov)
    insufficient = st.count < min_rows or reference.count < min_rows or st.ks is None
    values = {
        "ks": (st.ks, st.ks, st.ks_pvalue),
        "wasserstein": (st.wasserstein_normalised, st.wasserstein_normalised, None),
        "psi": (st.psi, st.psi, None),
        "jensenshannon": (st.jensenshannon, st.jensenshannon, None),
    }
    extras_common: dict[str, Any] = {
        "reference_missing": reference.missing,
        "missing_share": st.missing / (st.count + st.missing) if st.count + st.missing else None,
    }
    if insufficient:
        extras_common["reason"] = (
            f"insufficient data: {st.count} usable rows (reference {reference.count}), need {min_rows}"
        )
    results: dict[str, DriftResult] = {}
    for method in NUMERIC_METHODS:
        statistic, effect, p_value = values[method]
        extras = dict(extras_common)
        if method == "wasserstein":
            extras["raw"] = st.wasserstein
            extras["spread"] = reference.spread
            if not reference.exact:
                extras["max_error"] = reference.wasserstein_error
        if method == "ks" and not reference.exact:
            extras["max_error"] = reference.ks_error
        results[method] = _judge(
            feature,
            method,
            rules[method],
            statistic=statistic,
            effect=effect,
            p_value=p_value,
            primary=method == primary,
            insufficient=insufficient,
            n_reference=reference.count,
            n_current=st.count,
            missing=st.missing,
            unseen=0,
            extras=extras,
        )
    return FeatureDrift(feature, "numeric", primary, results, st)


def judge_categorical(
    feature: str,
    reference: CategoricalReference,
    st: CategoricalStatistics,
    *,
    type_override: Override | None = None,
    feature_override: Override | None = None,
) -> FeatureDrift:
    """Verdicts for one categorical feature's statistics, by :data:`DEFAULT_RULES` and the overrides."""
    tov, fov = type_override or {}, feature_override or {}
    _check_override(f"{feature}: system override", tov, "categorical")
    _check_override(feature, fov, "categorical")
    primary, rules, min_rows = _rules_for("categorical", st.count, tov, fov)
    insufficient = st.count < min_rows or reference.count < min_rows or st.chi2 is None
    extras: dict[str, Any] = {
        "unseen_categories": st.unseen_categories,
        "unseen_examples": st.unseen_examples,
        "reference_missing": reference.missing,
    }
    if insufficient:
        extras["reason"] = f"insufficient data: {st.count} rows (reference {reference.count}), need {min_rows}"
    results = {
        "chi2": _judge(
            feature,
            "chi2",
            rules["chi2"],
            statistic=st.chi2,
            effect=st.cohens_w,
            p_value=st.chi2_pvalue,
            primary=primary == "chi2",
            insufficient=insufficient,
            n_reference=reference.count,
            n_current=st.count,
            missing=st.missing,
            unseen=st.unseen,
            extras={**extras, "dof": st.dof},
        ),
        "jensenshannon": _judge(
            feature,
            "jensenshannon",
            rules["jensenshannon"],
            statistic=st.jensenshannon,
            effect=st.jensenshannon,
            p_value=None,
            primary=primary == "jensenshannon",
            insufficient=insufficient,
            n_reference=reference.count,
            n_current=st.count,
            missing=st.missing,
            unseen=st.unseen,
            extras=extras,
        ),
    }
    return FeatureDrift(feature, "categorical", primary, results, st)


def detect_drift(
    references: Mapping[str, Reference],
    window: Mapping[str, ArrayLike] | NDArray[Any],
    names: Sequence[str] | None = None,
    *,
    overrides: Mapping[str, Override] | None = None,
    defaults: Mapping[str, Override] | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Drift of one window against the references: every referenced feature, every method.

    ``window``: feature → 1-D array, or a 2-D array (rows × features) with ``names``. A feature
    with a reference but no column in the window is reported with an empty column (insufficient
    data); window columns without a reference are listed in ``skipped``. Numeric or categorical
    follows the reference's type.

    ``defaults``: the system's overrides per column type, ``{"numeric": {...}, "categorical":
    {...}}``; ``overrides``: per feature, ``{"age": {"method": "wasserstein", "threshold": 0.2}}``.
    Keys: ``method`` (the one that decides), ``threshold``, ``p_threshold`` (None to ignore the
    p-value), ``min_rows``. A threshold without a method applies to the default primary method.
    """
    overrides = overrides or {}
    defaults = defaults or {}
    unknown_types = set(defaults) - {"numeric", "categorical"}
    if unknown_types:
        raise ValueError(f"defaults: unknown column types {sorted(unknown_types)}")
    if isinstance(window, np.ndarray):
        if window.ndim != 2 or names is None or len(names) != window.shape[1]:
            raise ValueError("a 2-D window needs one name per column")
        position = {name: j for j, name in enumerate(names)}
    else:
        position = {}
    present = set(position) if isinstance(window, np.ndarray) else set(window)
    skipped = sorted(present - set(references))

    def column(name: str) -> Any:
        if name not in present:
            return np.zeros(0)
        return window[:, position[name]] if isinstance(window, np.ndarray) else window[name]

    numeric = [(k, r) for k, r in references.items() if isinstance(r, NumericReference)]
    numeric_refs = [r for _, r in numeric]
    if isinstance(window, np.ndarray) and all(k in present for k, _ in numeric):
        # The 2-D array as it is: a row-major one is copied out in column blocks, not column by column.
        columns = [position[k] for k, _ in numeric]
        stats = numeric_statistics(numeric_refs, window, columns=columns, workers=workers)
    else:
        stats = numeric_statistics(numeric_refs, [column(k) for k, _ in numeric], workers=workers)
    numeric_stats = dict(zip([k for k, _ in numeric], stats, strict=True))

    features: dict[str, FeatureDrift] = {}
    for name, ref in references.items():
        if isinstance(ref, NumericReference):
            features[name] = judge_numeric(
                name,
                ref,
                numeric_stats[name],
                type_override=defaults.get("numeric"),
                feature_override=overrides.get(name),
            )
        else:
            features[name] = judge_categorical(
                name,
                ref,
                categorical_statistics(ref, column(name)),
                type_override=defaults.get("categorical"),
                feature_override=overrides.get(name),
            )
    return DriftReport(features, skipped)
