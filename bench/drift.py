"""Drift benchmark (issue 8): the whole drift computation for a big window, next to a scipy loop.

A 100,000-row reference and a 1,000,000-row window of 20 numeric features (five shapes: normal,
log-normal, a 12-valued integer column, a wide normal, uniform; one column with 1 % missing
values; six columns moved in the window, two of them by too little to matter). Measured in one run:

* **ours**: ``dashboards.drift.detect_drift`` on the window, all 20 features, all four numeric
  methods (KS statistic + asymptotic p-value, Wasserstein normalised by the reference std, PSI,
  Jensen–Shannon), verdicts included. The window is given two ways: as a row-major 1,000,000 × 20
  float64 array (as a query result arrives: the columns are copied out in blocks) and as 20
  contiguous columns (a column store). Best and median of ``--repeats`` runs. Threads: the
  module's default (the CPU count, at most 4).
* **peak memory** of that computation: tracemalloc's peak of what it allocated (numpy reports its
  arrays to tracemalloc; the input data, allocated before, is not counted), in a separate run so
  tracing does not slow the timed ones; and the process's peak RSS for context.
* **scipy loop**: per column ``scipy.stats.ks_2samp`` (its default method, asymptotic at this
  size), ``scipy.stats.wasserstein_distance`` and ``scipy.spatial.distance.jensenshannon`` on
  counts in the same bins as the module's (reference deciles), on the same data with the whole
  reference sample; once (it takes seconds).

Also printed: how far our statistics are from scipy's (the reference keeps 10,000 quantiles, so
KS and Wasserstein are within the bounds the reference states), which columns were flagged, the
load average before and after (this is a shared 2-core VM). Targets, printed PASS/FAIL (the exit
status is 0 either way: this is a measurement): ≤ 1 s, ≤ 500 MB, ≥ 10× faster than the scipy
loop, each for the row-major window (the slower layout).

    python -m bench.drift [--quick] [--repeats 5] [--output bench/results/drift.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from dashboards import drift  # noqa: E402  (plain numpy/scipy: no Django settings needed)

RESULTS_DIR = BASE_DIR / "bench" / "results"
FEATURES = 20
TARGET_SECONDS = 1.0
TARGET_MB = 500.0
TARGET_SPEEDUP = 10.0
SHIFTED = {
    0: "normal, mean +0.5 std",
    10: "normal, mean +0.1 std",
    6: "log-normal σ 1 → 1.3",
    12: "integers, skewed mix",
    3: "normal ×100, std ×1.5",
    14: "uniform, range +20 %",
}


def log(msg: str) -> None:
    print(f"[drift bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def column(j: int, size: int, rng: np.random.Generator, shifted: bool) -> np.ndarray:
    """Feature j's values: one of five shapes (j mod 5), moved as SHIFTED says if ``shifted``."""
    move = shifted and j in SHIFTED
    shape = j % 5
    if shape == 0:
        return rng.normal(10.0 + ((0.5 if j == 0 else 0.1) if move else 0.0), 1.0, size)
    if shape == 1:
        x = rng.lognormal(0.0, 1.3 if move else 1.0, size)
        if j == 11:  # 1 % missing
            x[rng.random(size) < 0.01] = np.nan
        return x
    if shape == 2:
        weights = np.linspace(0.5, 1.5, 12) if move else np.ones(12)
        return rng.choice(np.arange(12.0), size=size, p=weights / weights.sum())
    if shape == 3:
        return rng.normal(0.0, 1.5 if move else 1.0, size) * 100
    return rng.uniform(0.0, 1.2 if move else 1.0, size)


def make_data(n_ref: int, n_cur: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, current) as (features, rows) arrays: each feature's column contiguous."""
    rng = np.random.default_rng(seed)
    ref = np.empty((FEATURES, n_ref))
    cur = np.empty((FEATURES, n_cur))
    for j in range(FEATURES):
        ref[j] = column(j, n_ref, rng, shifted=False)
        cur[j] = column(j, n_cur, rng, shifted=j in SHIFTED)
    return ref, cur


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def peak_mb(fn: Callable[[], Any]) -> float:
    """Peak of what ``fn`` allocates (tracemalloc), in MB."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 1e6


def scipy_loop(ref: np.ndarray, cur: np.ndarray) -> list[dict[str, float]]:
    """What one would write without the module: per column, scipy's KS, Wasserstein and JS, the
    JS on the same bins as the module (so the numbers can be compared): right-closed bins at the
    reference's distinct deciles, or one bin per value (and one for anything else) when the
    reference has ≤ 20 distinct values."""
    out = []
    for j in range(ref.shape[0]):
        r = ref[j][np.isfinite(ref[j])]
        c = cur[j][np.isfinite(cur[j])]
        ks = stats.ks_2samp(r, c)
        w = stats.wasserstein_distance(r, c)
        values = np.unique(r)
        if values.size <= drift.DISCRETE_MAX_VALUES:
            rc = np.append([np.count_nonzero(r == v) for v in values], 0)
            cc = np.append([np.count_nonzero(c == v) for v in values], np.count_nonzero(~np.isin(c, values)))
        else:
            edges = np.unique(np.quantile(r, np.arange(1, 10) / 10, method="inverted_cdf"))
            rc = np.bincount(np.searchsorted(edges, r, side="left"), minlength=edges.size + 1)
            cc = np.bincount(np.searchsorted(edges, c, side="left"), minlength=edges.size + 1)
        js = jensenshannon(rc, cc, base=2)
        out.append({"ks": float(ks.statistic), "ks_p": float(ks.pvalue), "w": float(w), "js": float(js)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000-row reference, 100,000-row window")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours per layout (default 5)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "drift.json")
    args = parser.parse_args(argv)
    n_ref, n_cur = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    load_before = os.getloadavg()
    log(f"{n_ref:,} reference rows, {n_cur:,} window rows × {FEATURES} features; load {load_before[0]:.2f}")

    ref_cols, cur_cols = make_data(n_ref, n_cur, args.seed)
    names = [f"f{j:02d}" for j in range(FEATURES)]
    window_columns = {name: cur_cols[j] for j, name in enumerate(names)}
    window_rows = np.ascontiguousarray(cur_cols.T)  # row-major rows × features

    t0 = time.perf_counter()
    refs = drift.build_references({name: ref_cols[j] for j, name in enumerate(names)})
    build_s = time.perf_counter() - t0
    stored_kb = len(json.dumps({k: r.to_dict() for k, r in refs.items()})) / 1e3
    log(f"references built in {build_s:.3f} s; stored as JSON: {stored_kb:.0f} kB for {FEATURES} features")

    def ours_rows() -> drift.DriftReport:
        return drift.detect_drift(refs, window_rows, names)

    def ours_columns() -> drift.DriftReport:
        return drift.detect_drift(refs, window_columns)

    rows_times, report = timed(ours_rows, args.repeats)
    cols_times, report_cols = timed(ours_columns, args.repeats)
    rows_mb = peak_mb(ours_rows)
    cols_mb = peak_mb(ours_columns)
    for label, times, mb in (("row-major", rows_times, rows_mb), ("column", cols_times, cols_mb)):
        median = statistics.median(times)
        log(f"ours, {label} window: best {min(times):.3f} s, median {median:.3f} s, peak {mb:.0f} MB")

    log("scipy loop (ks_2samp + wasserstein_distance + jensenshannon per column) …")
    gc.collect()
    t0 = time.perf_counter()
    reference = scipy_loop(ref_cols, cur_cols)
    scipy_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    log(f"scipy loop: {scipy_s:.3f} s; load {load_after[0]:.2f}")

    # Agreement with scipy, and the bounds the (quantile-summarised) reference states.
    diffs: dict[str, float] = {"ks": 0.0, "ks_bound": 0.0, "w_norm": 0.0, "w_bound": 0.0, "js": 0.0}
    for j, name in enumerate(names):
        f = report.features[name]
        assert f.statistics == report_cols.features[name].statistics
        res, ref = f.results, refs[name]
        assert isinstance(ref, drift.NumericReference)
        diffs["ks"] = max(diffs["ks"], abs((res["ks"].statistic or 0) - reference[j]["ks"]))
        diffs["ks_bound"] = max(diffs["ks_bound"], ref.ks_error)
        diffs["w_norm"] = max(
            diffs["w_norm"], abs((res["wasserstein"].statistic or 0) - reference[j]["w"] / ref.spread)
        )
        diffs["w_bound"] = max(diffs["w_bound"], ref.wasserstein_error)
        diffs["js"] = max(diffs["js"], abs((res["jensenshannon"].statistic or 0) - reference[j]["js"]))
    flagged = report.drifted_features
    expected = [names[j] for j in sorted(SHIFTED)]

    best = min(rows_times)
    speedup = scipy_s / best
    targets = [
        ("time ≤ 1 s (row-major window, best of runs)", best <= TARGET_SECONDS, f"{best:.3f} s"),
        ("peak memory ≤ 500 MB (tracemalloc)", rows_mb <= TARGET_MB, f"{rows_mb:.0f} MB"),
        ("≥ 10× faster than the scipy loop", speedup >= TARGET_SPEEDUP, f"{speedup:.1f}×"),
    ]
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print()
    versions = f"python {platform.python_version()}  numpy {np.__version__}"
    print(f"Drift bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  {os.cpu_count()} CPUs  {versions}")
    print(f"  data: {n_ref:,} reference rows, {n_cur:,} window rows × {FEATURES} numeric features")
    print(f"  load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after (1-minute; 2 = both cores busy)")
    print(f"  references: built in {build_s:.3f} s, {stored_kb:.0f} kB of JSON (10,000 quantiles per feature)")
    print(f"  ours, row-major window: runs {', '.join(f'{t:.3f}' for t in rows_times)} s; peak {rows_mb:.0f} MB")
    print(f"  ours, column window:    runs {', '.join(f'{t:.3f}' for t in cols_times)} s; peak {cols_mb:.0f} MB")
    print(f"  scipy loop (KS + Wasserstein + JS, whole reference): {scipy_s:.3f} s")
    print(f"  speed-up: {scipy_s / best:.1f}× (row-major), {scipy_s / min(cols_times):.1f}× (columns)")
    print(f"  process peak RSS (data included): {maxrss_mb:.0f} MB")
    print(
        f"  vs scipy: KS |Δ| ≤ {diffs['ks']:.2e} (bound {diffs['ks_bound']:.2e}), normalised W |Δ| ≤ "
        f"{diffs['w_norm']:.2e} (bound {diffs['w_bound']:.2e}), JS |Δ| ≤ {diffs['js']:.2e}"
    )
    by_w = [name for name, f in report.features.items() if f.results["wasserstein"].drifted]
    print(f"  flagged (PSI > 0.2, the default): {', '.join(flagged) or 'none'}; moved: {', '.join(expected)}")
    print(f"  flagged by W/std > 0.1 (reported; Evidently's default over 1000 rows): {', '.join(by_w) or 'none'}")
    for j in sorted(SHIFTED):
        r = report.features[names[j]].results
        print(
            f"    {names[j]} {SHIFTED[j]:<22} PSI {r['psi'].statistic:.3f}  KS {r['ks'].statistic:.3f}  "
            f"W/std {r['wasserstein'].statistic:.3f}  JS {r['jensenshannon'].statistic:.3f}"
        )
    for label, ok, value in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {value}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "rows": {"reference": n_ref, "window": n_cur, "features": FEATURES},
                "load": {"before": load_before, "after": load_after},
                "build_s": build_s,
                "ours_row_major_s": rows_times,
                "ours_columns_s": cols_times,
                "peak_mb": {"row_major": rows_mb, "columns": cols_mb, "process_maxrss": maxrss_mb},
                "scipy_loop_s": scipy_s,
                "differences": diffs,
                "flagged": flagged,
                "targets": [{"target": t, "pass": ok, "value": v} for t, ok, v in targets],
            },
            indent=2,
        )
    )
    log(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
