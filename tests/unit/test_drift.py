"""Drift statistics (dashboards/drift.py) as plain functions: no database, no HTTP.

* Agreement with scipy where scipy computes the same thing, on random data and by Hypothesis:
  KS statistic and p-value (``ks_2samp(method="asymp")``), Wasserstein-1
  (``wasserstein_distance``), Jensen–Shannon (``jensenshannon(..., base=2)``) on the same bins,
  chi-square (``chisquare``). Tolerances: the KS statistic is computed with scipy's own
  operations, so equal to 1e-12; Wasserstein is a re-arranged sum, 1e-9 relative; JS 1e-12;
  chi-square 1e-10 relative.
* Properties: bounds (KS, JS in [0, 1], PSI, W ≥ 0), identical samples give 0, symmetry, scale
  invariance, JSON round trips.
* Verdicts: the default rules by size, overrides, insufficient data, unseen and missing values.
* Public data with a known shift: gapminder (shipped inside the pinned plotly wheel, read from
  the installed package, nothing downloaded). The reference is the early period (1952 and 1962);
  life expectancy, GDP per capita and population move over the decades, while the countries'
  continents, centroids and ISO codes are the same in every year.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial.distance import jensenshannon

from dashboards import drift
from dashboards.drift import (
    CategoricalReference,
    NumericReference,
    build_references,
    categorical_statistics,
    detect_drift,
    numeric_statistics,
)

ROOT = Path(__file__).resolve().parents[2]

# No example database on disk (.hypothesis/ is nobody's to commit); no deadline on a shared VM.
# DRIFT_EXAMPLES=2000 for a longer search than the suite's default.
PROPERTY = settings(
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("DRIFT_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow],
)


def one(ref: NumericReference, current: Any) -> drift.NumericStatistics:
    return numeric_statistics([ref], [np.asarray(current, dtype=float)], workers=1)[0]


def reference_bins(sample: np.ndarray) -> np.ndarray:
    """PSI/JS bin edges computed here independently: the distinct reference deciles."""
    return np.unique(np.quantile(sample, np.arange(1, 10) / 10, method="inverted_cdf"))


def binned(sample: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in the right-closed bins (−inf, e0], (e0, e1], …, (e_last, inf)."""
    return np.bincount(np.searchsorted(edges, sample, side="left"), minlength=edges.size + 1)


def psi_reference(r: np.ndarray, c: np.ndarray, eps: float = 1e-4) -> float:
    p, q = np.maximum(r / r.sum(), eps), np.maximum(c / c.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def random_pairs(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reference/current pairs of many kinds: continuous, shifted, scaled, discrete with ties,
    large offsets, tiny and large sizes."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(40):
        n, m = int(rng.integers(1, 3000)), int(rng.integers(1, 3000))
        kind = rng.integers(0, 4)
        if kind == 0:
            a, b = rng.normal(size=n), rng.normal(rng.normal(), rng.uniform(0.3, 3), size=m)
        elif kind == 1:
            a, b = rng.integers(0, 6, n).astype(float), rng.integers(0, 8, m).astype(float)
        elif kind == 2:
            a, b = rng.exponential(size=n) * 1e-6, rng.exponential(1.2, size=m) * 1e-6
        else:
            a, b = 1e9 + rng.normal(size=n), 1e9 + rng.normal(0.3, 1, size=m)
        pairs.append((a, b))
    pairs.append((rng.normal(size=8000), rng.normal(0.05, 1, size=300_000)))  # the fast path's size
    return pairs


# --------------------------------------------------------------------------------------------
# Agreement with scipy on random data


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numeric_statistics_match_scipy(seed: int) -> None:
    for a, b in random_pairs(seed):
        ref = NumericReference.from_array(a)
        assert ref.exact
        got = one(ref, b)
        ks = stats.ks_2samp(a, b, method="asymp")
        assert got.ks == pytest.approx(ks.statistic, abs=1e-12)
        assert got.ks_pvalue == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
        w = stats.wasserstein_distance(a, b)
        scale = np.abs(np.concatenate([a, b])).max()
        assert got.wasserstein == pytest.approx(w, rel=1e-9, abs=1e-12 * scale)
        assert got.wasserstein_normalised == pytest.approx(w / ref.spread, rel=1e-9, abs=1e-12 * scale / ref.spread)
        if ref.bin_kind == "quantile":
            edges = reference_bins(a)
            rc, cc = binned(a, edges), binned(b, edges)
            assert got.jensenshannon == pytest.approx(jensenshannon(rc, cc, base=2), abs=1e-12)
            assert got.psi == pytest.approx(psi_reference(rc, cc), rel=1e-12, abs=1e-15)
        else:  # ≤ 20 distinct values: a bin per value and one for anything else
            values = np.unique(a)
            rc = np.append([np.sum(a == v) for v in values], 0)
            cc = np.append([np.sum(b == v) for v in values], np.sum(~np.isin(b, values)))
            assert got.jensenshannon == pytest.approx(jensenshannon(rc, cc, base=2), abs=1e-12)
            assert got.psi == pytest.approx(psi_reference(rc, cc), rel=1e-12, abs=1e-15)


def test_ks_pvalue_is_scipys_asymptotic_formula() -> None:
    d = np.array([0.0, 0.01, 0.05, 0.2, 0.9])
    for n, m in [(100, 100), (150, 426), (10_000, 1_000_000), (7, 3)]:
        got = drift.ks_pvalue(d, [n] * d.size, [m] * d.size)
        want = stats.distributions.kstwo.sf(d, np.round(n * m / (n + m)))
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_summarised_reference_is_within_its_stated_error() -> None:
    rng = np.random.default_rng(7)
    a = rng.lognormal(size=60_000)  # a long right tail: the worst case for the summary
    b = rng.lognormal(0.1, 1.1, size=40_000)
    ref = NumericReference.from_array(a)
    assert not ref.exact
    assert ref.values.size == drift.SUMMARY_SIZE
    assert ref.count == a.size
    assert 0 < ref.ks_error <= 1 / (2 * drift.SUMMARY_SIZE) + 1e-15
    assert ref.wasserstein_error <= (a.max() - a.min()) / (2 * drift.SUMMARY_SIZE) / ref.spread
    got = one(ref, b)
    ks = stats.ks_2samp(a, b, method="asymp")
    assert abs(got.ks - ks.statistic) <= ref.ks_error + 1e-12
    w = stats.wasserstein_distance(a, b)
    assert abs(got.wasserstein_normalised - w / ref.spread) <= ref.wasserstein_error + 1e-9
    # PSI and JS come from bin counts of the whole sample: exact.
    edges = reference_bins(a)
    rc, cc = binned(a, edges), binned(b, edges)
    assert got.jensenshannon == pytest.approx(jensenshannon(rc, cc, base=2), abs=1e-12)
    assert got.psi == pytest.approx(psi_reference(rc, cc), rel=1e-12)
    # The p-value uses the reference's real size, not the summary's.
    assert got.ks_pvalue == pytest.approx(drift.ks_pvalue([got.ks], [a.size], [b.size])[0])


def expected_chi2(ref_counts: dict[str, int], ref_missing: int, cur: list[Any]) -> tuple[list[float], list[float]]:
    """Observed and expected counts built here from scratch: reference categories, then missing,
    then all unseen categories pooled; a bucket the reference never filled gets 0.5 reference rows."""
    keys = [drift.category_key(v) for v in cur]
    cats = list(ref_counts)
    obs = [sum(k == c for k in keys) for c in cats]
    ref = [float(ref_counts[c]) for c in cats]
    missing = sum(k is None for k in keys)
    if missing or ref_missing:
        obs.append(missing)
        ref.append(float(ref_missing))
    unseen = sum(k is not None and k not in ref_counts for k in keys)
    if unseen:
        obs.append(unseen)
        ref.append(0.0)
    ref = [r if r > 0 else 0.5 for r in ref]
    total = sum(obs)
    return [float(o) for o in obs], [total * r / sum(ref) for r in ref]


@pytest.mark.parametrize("seed", range(6))
def test_chi_square_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(int(rng.integers(2, 8)))]
    ref_values: list[Any] = list(
        rng.choice(cats, size=int(rng.integers(50, 2000)), p=rng.dirichlet(np.ones(len(cats))))
    )
    ref_values += [None] * int(rng.integers(0, 30)) if seed % 2 else []
    cur: list[Any] = list(rng.choice(cats + ["new1", "new2"], size=int(rng.integers(50, 3000))))
    cur += [float("nan")] * int(rng.integers(0, 40))
    ref = CategoricalReference.from_array(ref_values)
    got = categorical_statistics(ref, cur)
    obs, exp = expected_chi2(ref.counts, ref.missing, cur)
    want = stats.chisquare(obs, exp)
    assert got.current_counts == obs
    assert got.chi2 == pytest.approx(want.statistic, rel=1e-10)
    assert got.chi2_pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert got.dof == len(obs) - 1
    raw_ref = [*ref.counts.values()] + ([ref.missing] if drift.MISSING in got.buckets else [])
    raw_ref += [0] if drift.UNSEEN in got.buckets else []
    assert got.jensenshannon == pytest.approx(jensenshannon(raw_ref, obs, base=2), abs=1e-12)
    keys = [drift.category_key(v) for v in cur]
    assert got.unseen == sum(k is not None and k not in ref.counts for k in keys) >= cur.count("new1")
    assert got.missing == sum(isinstance(v, float) for v in cur)


def test_chi_square_without_unseen_or_missing_is_the_contingency_free_goodness_of_fit() -> None:
    """With only the reference's categories, our expected counts are the window's size × the
    reference's shares: scipy.stats.chisquare with exactly those, as Evidently calls it."""
    ref = CategoricalReference({"a": 50, "b": 30, "c": 20})
    cur = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    got = categorical_statistics(ref, cur)
    want = stats.chisquare([40, 40, 20], [50, 30, 20])
    assert (got.chi2, got.chi2_pvalue) == (pytest.approx(want.statistic), pytest.approx(want.pvalue))


def test_layouts_and_threads_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    ref_data = rng.normal(size=(5000, 6))
    cur = rng.normal(0.1, 1, size=(40_000, 6))
    cur[::97, 2] = np.nan
    cur[::101, 4] = np.inf
    refs = [NumericReference.from_array(ref_data[:, j]) for j in range(6)]

    def key(s: drift.NumericStatistics) -> tuple[Any, ...]:
        return (s.count, s.missing, s.ks, s.ks_pvalue, s.wasserstein, s.psi, s.jensenshannon)

    base = [key(s) for s in numeric_statistics(refs, [cur[:, j].copy() for j in range(6)], workers=1)]
    assert base == [key(s) for s in numeric_statistics(refs, cur, workers=2)]  # row-major, in blocks
    assert base == [key(s) for s in numeric_statistics(refs, np.asfortranarray(cur), workers=3)]
    assert base == [key(s) for s in numeric_statistics(refs[::-1], cur, columns=range(5, -1, -1))][::-1]
    monkeypatch.setattr(drift, "_BLOCK_BYTES", 2 * 8 * cur.shape[0])  # blocks of two columns, two threads
    assert base == [key(s) for s in numeric_statistics(refs, cur, workers=2)]
    assert base == [key(s) for s in numeric_statistics(refs[::-1], cur, columns=range(5, -1, -1))][::-1]
    assert base[2][1] == len(range(0, 40_000, 97))
    assert base[4][1] == len(range(0, 40_000, 101))


# --------------------------------------------------------------------------------------------
# Property-based tests

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
continuous = hnp.arrays(np.float64, st.integers(1, 300), elements=finite)
tied = hnp.arrays(np.float64, st.integers(1, 300), elements=st.sampled_from([-2.0, 0.0, 0.5, 1.0, 3.0, 1e5]))
samples = st.one_of(continuous, tied)


@PROPERTY
@given(a=samples, b=samples)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # scipy's kstwo for 1 value vs 1
def test_property_statistics_match_scipy_and_stay_in_bounds(a: np.ndarray, b: np.ndarray) -> None:
    ref = NumericReference.from_array(a)
    got = one(ref, b)
    assert got.ks is not None
    assert got.wasserstein is not None
    assert got.psi is not None
    assert got.jensenshannon is not None
    ks = stats.ks_2samp(a, b, method="asymp")
    assert got.ks == pytest.approx(ks.statistic, abs=1e-12)
    w = stats.wasserstein_distance(a, b)
    assert got.wasserstein == pytest.approx(w, rel=1e-9, abs=1e-9 * max(1.0, float(np.abs(np.r_[a, b]).max())))
    assert 0.0 <= got.ks <= 1.0
    assert 0.0 <= got.jensenshannon <= 1.0
    assert got.psi >= 0.0
    assert got.wasserstein >= 0.0
    if got.ks_pvalue is not None:
        assert 0.0 <= got.ks_pvalue <= 1.0


@PROPERTY
@given(a=samples)
def test_property_identical_samples_show_no_drift(a: np.ndarray) -> None:
    got = one(NumericReference.from_array(a), np.random.default_rng(0).permutation(a))
    assert (got.ks, got.psi, got.jensenshannon) == (0.0, 0.0, 0.0)
    assert got.wasserstein == pytest.approx(0.0, abs=1e-15 * float(np.abs(a).max()) * a.size)  # rounding only


@PROPERTY
@given(a=samples, b=samples)
def test_property_ks_and_wasserstein_are_symmetric(a: np.ndarray, b: np.ndarray) -> None:
    ab = one(NumericReference.from_array(a), b)
    ba = one(NumericReference.from_array(b), a)
    assert ab.ks == pytest.approx(ba.ks, abs=1e-12)
    assert ab.wasserstein == pytest.approx(
        ba.wasserstein, rel=1e-9, abs=1e-9 * max(1.0, float(np.abs(np.r_[a, b]).max()))
    )


@PROPERTY
@given(a=samples, b=samples, k=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3), power=st.integers(-20, 20))
def test_property_scale_invariance(a: np.ndarray, b: np.ndarray, k: float, shift: float, power: int) -> None:
    """The normalised Wasserstein distance does not change under x → kx + shift (k ≠ 0); KS, PSI
    and JS do not change under an exact scaling by a power of two (an arbitrary affine map may
    merge values in rounding, which moves a step-function statistic)."""
    base_ref = NumericReference.from_array(a)
    base = one(base_ref, b)
    ref_std = base_ref.std  # 0 for a constant reference, normalised by 1e-3 × max(1, |value|): not scale-free
    if ref_std > 1e-6 * max(1.0, float(np.abs(a).max())):  # a real spread, well above rounding
        for kk in (k, -k):
            moved = one(NumericReference.from_array(kk * a + shift), kk * b + shift)
            assert moved.wasserstein_normalised == pytest.approx(base.wasserstein_normalised, rel=1e-6, abs=1e-9)
    two = 2.0**power
    tiny = np.finfo(np.float64).tiny  # scaling into subnormals is not exact
    exact = all(np.all((x == 0) | (np.abs(x) * min(two, 1.0) >= tiny)) for x in (a, b))
    assume(exact)
    scaled = one(NumericReference.from_array(two * a), two * b)
    assert (scaled.ks, scaled.psi, scaled.jensenshannon) == (base.ks, base.psi, base.jensenshannon)
    if ref_std * min(two, 1.0) > np.sqrt(tiny):  # squared deviations stay normal: the spread is exact too
        assert scaled.wasserstein_normalised == pytest.approx(base.wasserstein_normalised, rel=1e-12)


@PROPERTY
@given(a=samples, b=samples, nan=st.integers(0, 20))
def test_property_reference_json_round_trip(a: np.ndarray, b: np.ndarray, nan: int) -> None:
    ref = NumericReference.from_array(np.r_[a, [np.nan] * nan])
    assert ref.missing == nan
    assert ref.count == a.size
    stored = json.loads(json.dumps(ref.to_dict(), allow_nan=False))
    back = drift.reference_from_dict(stored)
    assert isinstance(back, NumericReference)
    x, y = one(ref, b), one(back, b)
    assert (x.ks, x.wasserstein, x.psi, x.jensenshannon, x.ks_pvalue) == (
        y.ks,
        y.wasserstein,
        y.psi,
        y.jensenshannon,
        y.ks_pvalue,
    )


categories = st.lists(
    st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.none(), st.just(float("nan"))), min_size=1, max_size=200
)


@PROPERTY
@given(
    ref_values=categories,
    cur_values=st.lists(st.one_of(st.sampled_from(["a", "b", "z"]), st.none()), min_size=1, max_size=300),
)
def test_property_categorical_bounds_counts_and_round_trip(ref_values: list[Any], cur_values: list[Any]) -> None:
    ref = CategoricalReference.from_array(ref_values)
    back = drift.reference_from_dict(json.loads(json.dumps(ref.to_dict())))
    got = categorical_statistics(ref, cur_values)
    assert isinstance(back, CategoricalReference)
    again = categorical_statistics(back, cur_values)
    assert (got.chi2, got.chi2_pvalue, got.jensenshannon) == (again.chi2, again.chi2_pvalue, again.jensenshannon)
    assert sum(got.current_counts) == len(cur_values)  # nothing dropped
    assert got.missing == cur_values.count(None)
    assert got.unseen == sum(v is not None and v not in ref.counts for v in cur_values)
    if ref.count:
        assert got.chi2 is not None
        assert got.chi2 >= 0.0
        assert got.chi2_pvalue is not None
        assert 0.0 <= got.chi2_pvalue <= 1.0
        assert got.jensenshannon is not None
        assert 0.0 <= got.jensenshannon <= 1.0


@PROPERTY
@given(values=categories)
def test_property_categorical_identical_window_shows_no_drift(values: list[Any]) -> None:
    got = categorical_statistics(CategoricalReference.from_array(values), values[::-1])
    assert got.chi2 == pytest.approx(0.0, abs=1e-9)
    assert got.jensenshannon == pytest.approx(0.0, abs=1e-7)
    assert got.unseen == 0


# --------------------------------------------------------------------------------------------
# References, verdicts and overrides


def test_module_imports_without_django() -> None:
    code = "import sys, dashboards.drift; assert not any(m.startswith('django') for m in sys.modules), 'django'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_numeric_reference_summary_and_round_trip() -> None:
    x = np.r_[np.arange(1000, dtype=float), [np.nan, np.inf, -np.inf]]
    ref = NumericReference.from_array(x)
    assert (ref.count, ref.missing, ref.exact, ref.bin_kind) == (1000, 3, True, "quantile")
    assert ref.bin_edges.tolist() == [99.0, 199.0, 299.0, 399.0, 499.0, 599.0, 699.0, 799.0, 899.0]
    assert ref.bin_counts.tolist() == [100] * 10
    assert ref.mean == pytest.approx(499.5)
    assert ref.std == pytest.approx(np.std(np.arange(1000)))
    assert ref.iqr == pytest.approx(499.5)
    d = ref.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    back = NumericReference.from_dict(d)
    assert back.values.tolist() == ref.values.tolist()
    assert back.bin_edges.tolist() == ref.bin_edges.tolist()
    with pytest.raises(ValueError, match="sorted"):
        NumericReference.from_dict({**d, "values": [3.0, 1.0]})
    with pytest.raises(ValueError, match="bin_counts"):
        NumericReference.from_dict({**d, "bin_counts": [1, 2]})
    with pytest.raises(ValueError, match="unknown reference type"):
        drift.reference_from_dict({"type": "image"})


def test_discrete_numeric_reference_bins_per_value_and_catches_new_values() -> None:
    ref = NumericReference.from_array(np.repeat([0.0, 1.0, 2.0], [500, 300, 200]))
    assert ref.bin_kind == "values"
    assert ref.bin_edges.tolist() == [0.0, 1.0, 2.0]
    same = one(ref, np.repeat([0.0, 1.0, 2.0], [250, 150, 100]))
    assert same.psi == 0.0
    assert same.current_bins == [0.5, 0.3, 0.2, 0.0]
    new = one(ref, np.repeat([0.0, 1.0, 2.0, 1.5], [200, 150, 100, 50]))
    assert new.current_bins[-1] == 0.1
    assert new.psi > 0.2


def test_constant_reference_has_a_spread_guard() -> None:
    ref = NumericReference.from_array(np.full(500, 100.0))
    assert ref.std == 0
    assert ref.spread == pytest.approx(0.1)
    got = one(ref, np.full(500, 100.5))
    assert got.wasserstein == pytest.approx(0.5)
    assert got.wasserstein_normalised == pytest.approx(5.0)
    assert got.ks == 1.0
    assert got.psi > 1
    assert one(ref, np.full(500, 100.0)).wasserstein_normalised == 0.0


def test_build_references_by_dtype_and_forced_kinds() -> None:
    data = {
        "age": np.arange(300),
        "score": np.linspace(0, 1, 300),
        "country": np.array(["fr", "de", "it"] * 100),
        "flag": np.array([True, False, False] * 100),
        "segment": np.array([1, 2, 3] * 100),
    }
    refs = build_references(data, categorical=["segment"])
    kinds = {k: r.kind for k, r in refs.items()}
    assert kinds == {
        "age": "numeric",
        "score": "numeric",
        "country": "categorical",
        "flag": "categorical",
        "segment": "categorical",
    }
    ref = refs["segment"]
    assert isinstance(ref, CategoricalReference)
    assert ref.counts == {"1": 100, "2": 100, "3": 100}
    matrix = np.column_stack([data["age"], data["score"]])
    assert build_references(matrix, ["age", "score"])["score"].to_dict() == refs["score"].to_dict()
    with pytest.raises(ValueError, match="one name per column"):
        build_references(matrix, ["age"])


def test_category_keys() -> None:
    assert [drift.category_key(v) for v in ["x", 1, 1.0, 2.5, True, np.int64(3), np.float32(4.0), None, np.nan]] == [
        "x", "1", "1", "2.5", "True", "3", "4", None, None,
    ]  # fmt: skip
    counts, missing = drift.category_counts([True, 1, 1.0, "1", None])
    assert counts == {"True": 1, "1": 3}
    assert missing == 1
    assert drift.category_counts(np.array([1.0, np.nan, 2.0, 1.0])) == ({"1": 2, "2": 1}, 1)


def test_default_rules_by_size() -> None:
    rng = np.random.default_rng(3)
    refs = build_references({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], size=5000)})
    for rows, primary_x, primary_c in [
        (99, "ks", "chi2"),
        (100, "ks", "chi2"),
        (1000, "ks", "chi2"),
        (1001, "psi", "jensenshannon"),
    ]:
        report = detect_drift(refs, {"x": rng.normal(size=rows), "c": rng.choice(["a", "b"], size=rows)})
        x, c = report.features["x"], report.features["c"]
        assert (x.primary_method, c.primary_method) == (primary_x, primary_c)
        assert x.insufficient_data == c.insufficient_data == (rows < drift.MIN_ROWS)
        assert sum(r.primary for r in x.results.values()) == 1
    table = drift.defaults_table()
    assert {(row["type"], row["rows"]) for row in table if row["primary"]} == {
        ("numeric", "100–1000"), ("numeric", "> 1000"), ("categorical", "100–1000"), ("categorical", "> 1000"),
    }  # fmt: skip
    assert all(row["reason"] for row in table)


def test_large_samples_do_not_let_a_p_value_alone_call_drift() -> None:
    rng = np.random.default_rng(5)
    refs = build_references({"x": rng.normal(size=100_000)})
    tiny = detect_drift(refs, {"x": rng.normal(0.03, 1, size=1_000_000)}).features["x"]
    assert tiny.results["ks"].p_value is not None
    assert tiny.results["ks"].p_value < 1e-12
    assert not tiny.drifted
    assert not tiny.results["ks"].drifted
    assert tiny.results["psi"].statistic is not None
    assert tiny.results["psi"].statistic < 0.01
    big = detect_drift(refs, {"x": rng.normal(0.6, 1, size=1_000_000)}).features["x"]
    assert big.drifted
    assert big.primary_method == "psi"
    assert big.primary.statistic is not None
    assert big.primary.statistic > 0.2
    assert big.results["ks"].drifted
    assert big.results["wasserstein"].drifted
    assert big.results["jensenshannon"].drifted


def test_small_windows_use_the_ks_test_and_tiny_ones_get_no_verdict() -> None:
    rng = np.random.default_rng(9)
    refs = build_references({"x": rng.normal(size=2000)})
    moved = detect_drift(refs, {"x": rng.normal(1.0, 1, size=300)}).features["x"]
    assert moved.primary_method == "ks"
    assert moved.drifted
    assert moved.primary.p_value is not None
    assert moved.primary.p_value < 0.05
    assert moved.primary.p_threshold == 0.05
    few = detect_drift(refs, {"x": rng.normal(3.0, 1, size=40)}).features["x"]
    assert few.insufficient_data
    assert not few.drifted
    assert not any(r.drifted for r in few.results.values())
    assert few.primary.statistic is not None
    assert few.primary.statistic > 0.5
    assert "insufficient data: 40 usable rows" in few.primary.extras["reason"]
    small_ref = build_references({"x": rng.normal(size=50)})
    assert detect_drift(small_ref, {"x": rng.normal(3, 1, size=5000)}).features["x"].insufficient_data


def test_overrides_per_feature_and_per_system() -> None:
    rng = np.random.default_rng(12)
    refs = build_references({"a": rng.normal(size=5000), "b": rng.normal(size=5000), "c": rng.choice(["x", "y"], 5000)})
    window = {"a": rng.normal(0.15, 1, 5000), "b": rng.normal(0.15, 1, 5000), "c": rng.choice(["x", "y"], 5000)}
    plain = detect_drift(refs, window)
    assert plain.drifted_features == []  # PSI ≈ 0.02
    report = detect_drift(refs, window, overrides={"a": {"method": "wasserstein", "threshold": 0.1}})
    assert report.drifted_features == ["a"]
    a = report.features["a"]
    assert a.primary_method == "wasserstein"
    assert a.primary.threshold == 0.1
    assert a.results["wasserstein"].primary
    system = detect_drift(refs, window, defaults={"numeric": {"threshold": 0.01}})  # PSI > 0.01
    assert system.drifted_features == ["a", "b"]
    mixed = detect_drift(refs, window, defaults={"numeric": {"threshold": 0.01}}, overrides={"b": {"threshold": 0.5}})
    assert mixed.drifted_features == ["a"]
    lenient = detect_drift(refs, {k: v[:60] for k, v in window.items()}, overrides={"a": {"min_rows": 50}})
    assert not lenient.features["a"].insufficient_data
    assert lenient.features["b"].insufficient_data
    with pytest.raises(ValueError, match="not one of"):
        detect_drift(refs, window, overrides={"c": {"method": "psi"}})
    with pytest.raises(ValueError, match="unknown override keys"):
        detect_drift(refs, window, overrides={"a": {"treshold": 1}})
    with pytest.raises(ValueError, match="unknown column types"):
        detect_drift(refs, window, defaults={"text": {}})


def test_categorical_unseen_and_missing_are_counted_and_flagged() -> None:
    rng = np.random.default_rng(4)
    refs = build_references({"country": rng.choice(["fr", "de", "it"], size=3000, p=[0.5, 0.3, 0.2])})
    same = detect_drift(refs, {"country": rng.choice(["fr", "de", "it"], size=3000, p=[0.5, 0.3, 0.2])})
    assert same.drifted_features == []
    window = list(rng.choice(["fr", "de", "it"], size=2000, p=[0.5, 0.3, 0.2])) + ["es"] * 500 + ["pt"] * 300
    window += [None] * 200
    report = detect_drift(refs, {"country": np.array(window, dtype=object)})
    json.dumps(report.to_dict(), allow_nan=False)
    f = report.features["country"]
    assert f.drifted
    assert f.primary_method == "jensenshannon"
    assert (f.primary.unseen, f.primary.missing, f.primary.n_current) == (800, 200, 3000)
    assert f.primary.extras["unseen_categories"] == 2
    assert f.primary.extras["unseen_examples"] == ["es", "pt"]
    assert isinstance(f.statistics, drift.CategoricalStatistics)
    assert f.statistics.buckets == ["de", "fr", "it", drift.MISSING, drift.UNSEEN]
    assert f.statistics.current_counts[-2:] == [200, 800]


def test_detect_drift_on_a_two_dimensional_window_with_a_missing_and_an_extra_column() -> None:
    rng = np.random.default_rng(8)
    ref_matrix = rng.normal(size=(3000, 3))
    refs = build_references(ref_matrix, ["a", "b", "prediction"])
    cur = rng.normal(size=(5000, 3))
    cur[:, 2] += 1.0  # the model's output moved
    report = detect_drift(refs, cur, ["a", "b", "prediction"])
    assert report.drifted_features == ["prediction"]
    by_dict = detect_drift(refs, {"a": cur[:, 0], "prediction": cur[:, 2], "extra": cur[:, 1]})
    assert by_dict.skipped == ["extra"]
    assert by_dict.features["b"].insufficient_data
    assert by_dict.features["b"].primary.n_current == 0
    assert by_dict.features["prediction"].primary.statistic == report.features["prediction"].primary.statistic
    json.dumps(report.to_dict(), allow_nan=False)  # storable as it is
    with pytest.raises(ValueError, match="one name per column"):
        detect_drift(refs, cur, ["a", "b"])


# --------------------------------------------------------------------------------------------
# Public data with a known shift: gapminder, shipped inside the plotly wheel

MOVERS = {"lifeExp", "gdpPercap", "pop", "income", "prediction"}
STABLE = {"continent", "centroid_lon", "centroid_lat", "iso_num"}
NUMERIC = ["lifeExp", "gdpPercap", "pop", "centroid_lon", "centroid_lat", "iso_num", "prediction"]
REFERENCE_YEARS = (1952, 1962)
SAME_PERIOD = (1952, 1957, 1962)  # 1957 is not in the reference: an out-of-sample same-period window
YEARS = tuple(range(1952, 2008, 5))


def income_band(gdp: float) -> str:
    return "low" if gdp < 1000 else "lower-middle" if gdp < 4000 else "upper-middle" if gdp < 12000 else "high"


@pytest.fixture(scope="module")
def gapminder() -> dict[int, list[dict[str, str]]]:
    spec = importlib.util.find_spec("plotly")
    assert spec is not None
    assert spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "datasets" / "gapminder.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1704
    by_year: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_year.setdefault(int(row["year"]), []).append(row)
    return by_year


@pytest.fixture(scope="module")
def gapminder_columns(
    gapminder: dict[int, list[dict[str, str]]],
) -> Callable[[list[dict[str, str]]], dict[str, np.ndarray]]:
    """Rows → columns, with two derived ones: an income band (categorical, moves with GDP) and a
    model's prediction: life expectancy from log GDP, a line fitted once on the reference years
    (prediction drift)."""
    ref_rows = [r for y in REFERENCE_YEARS for r in gapminder[y]]
    slope, intercept = np.polyfit(
        np.log10([float(r["gdpPercap"]) for r in ref_rows]), [float(r["lifeExp"]) for r in ref_rows], 1
    )

    def columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
        out = {k: np.array([float(r[k]) for r in rows]) for k in NUMERIC if k != "prediction"}
        out["continent"] = np.array([r["continent"] for r in rows])
        out["income"] = np.array([income_band(float(r["gdpPercap"])) for r in rows])
        out["prediction"] = intercept + slope * np.log10(out["gdpPercap"])
        return out

    return columns


def evidently_small_sample_verdict(ref: np.ndarray, cur: np.ndarray) -> bool:
    """Evidently's default numeric test up to 1000 rows: two-sample KS (scipy's default, exact at
    these sizes), drift at p < 0.05."""
    return bool(stats.ks_2samp(ref, cur).pvalue < 0.05)


def test_gapminder_known_shift_real_windows(
    gapminder: dict[int, list[dict[str, str]]],
    gapminder_columns: Callable[[list[dict[str, str]]], dict[str, np.ndarray]],
) -> None:
    """Each year's 142 countries against the early period (1952 and 1962, 284 rows): the small-
    window rules (KS p < 0.05 for numbers, chi-square p < 0.05 for categories)."""
    reference = gapminder_columns([r for y in REFERENCE_YEARS for r in gapminder[y]])
    refs = build_references(reference)
    flagged: dict[int, set[str]] = {}
    for year in YEARS:
        window = gapminder_columns(gapminder[year])
        report = detect_drift(refs, window)
        flagged[year] = set(report.drifted_features)
        for name, feature in report.features.items():
            assert not feature.insufficient_data
            assert feature.primary_method in ("ks", "chi2")
            if name in NUMERIC:  # the same verdict as Evidently's default at this size
                assert feature.drifted == evidently_small_sample_verdict(reference[name], window[name]), (year, name)
            else:  # and as scipy's chi-square on the same counts (no unseen or missing values here)
                cats = sorted(set(reference[name]))
                obs = [int(np.sum(window[name] == c)) for c in cats]
                exp = [np.sum(reference[name] == c) * len(window[name]) / len(reference[name]) for c in cats]
                assert feature.primary.p_value == pytest.approx(stats.chisquare(obs, exp).pvalue, rel=1e-9)
    # The period of the reference: nothing moved (1957 is not in the reference).
    assert all(flagged[y] == set() for y in SAME_PERIOD), flagged
    # Later: only features that really moved, life expectancy (the fastest) first; from 1977 on,
    # all of them (population grows slowest).
    for year in YEARS:
        assert flagged[year] <= MOVERS, (year, flagged[year])
        assert not flagged[year] & STABLE
    assert all("lifeExp" in flagged[y] for y in (1967, 1972))
    assert all(flagged[y] == MOVERS for y in YEARS if y >= 1977), flagged


def test_gapminder_known_shift_large_windows(
    gapminder: dict[int, list[dict[str, str]]],
    gapminder_columns: Callable[[list[dict[str, str]]], dict[str, np.ndarray]],
) -> None:
    """5000-row windows resampled from each year (a fixed seed): the large-sample rules (PSI > 0.2,
    JS > 0.1). In the reference's own years a KS p-value is already < 0.05 for life expectancy
    (1952 alone differs from 1952 and 1962 pooled), yet the verdict stays no drift."""
    refs = build_references(gapminder_columns([r for y in REFERENCE_YEARS for r in gapminder[y]]))
    rng = np.random.default_rng(2024)
    flagged: dict[int, set[str]] = {}
    ks_p: dict[int, float] = {}
    for year in YEARS:
        cols = gapminder_columns(gapminder[year])
        pick = rng.integers(0, len(gapminder[year]), size=5000)
        report = detect_drift(refs, {k: v[pick] for k, v in cols.items()})
        assert all(f.primary_method in ("psi", "jensenshannon") for f in report.features.values())
        flagged[year] = set(report.drifted_features)
        p = report.features["lifeExp"].results["ks"].p_value
        assert p is not None
        ks_p[year] = p
    assert all(flagged[y] == set() for y in SAME_PERIOD), flagged
    assert ks_p[1952] < 0.05
    assert ks_p[1962] < 0.05
    for year in YEARS:
        assert flagged[year] <= MOVERS, (year, flagged[year])
        assert not flagged[year] & STABLE, (year, flagged[year])
    # Population's PSI against the reference is ≈ 0.21 in 1982–1987 (on the real rows): a
    # resampled window falls either side of 0.2 there. From 1992 on, everything that moved.
    assert all(flagged[y] >= MOVERS - {"pop"} for y in (1977, 1982, 1987)), flagged
    assert all(flagged[y] == MOVERS for y in YEARS if y >= 1992), flagged


@settings(max_examples=40, deadline=None)
@given(shift=st.floats(-1.0, 1.0), n=st.integers(50, 3000), seed=st.integers(0, 2**31 - 1))
def test_severity_above_1_is_exactly_the_verdict(shift, n, seed):
    rng = np.random.default_rng(seed)
    refs = drift.build_references({"x": rng.normal(size=2000), "c": rng.choice(["a", "b", "c"], 2000)})
    window = {"x": rng.normal(shift, 1.0, n), "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])}
    for feature in drift.detect_drift(refs, window).features.values():
        for r in feature.results.values():
            if r.insufficient_data:
                assert r.severity is None
            else:
                assert r.severity is not None
                assert 0 <= r.severity <= drift.SEVERITY_CAP
                assert (r.severity > 1) == r.drifted, (r.method, r.severity, r.effect, r.threshold, r.p_value)
