"""Paired comparisons over seeds: the mean difference, its t confidence interval, a signed-rank p.

Why: a KD gain measured once (one seed, on the split the student was selected on) mixes the
effect of distillation with seed noise and selection bias. Re-training both arms on the same N
seeds and comparing them pair by pair on test data gives a gain with an honest interval.

SciPy computes the t quantile and the Wilcoxon test when it is installed (scikit-learn brings
it); without it the 95 % t quantile comes from the usual table (df <= 30) and a Cornish-Fisher
expansion beyond, and the Wilcoxon p-value is left out with the reason.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["MIN_WILCOXON_PAIRS", "gain_summary", "gain_text", "t_quantile", "wilcoxon_p"]

#: the smallest N for which a two-sided signed-rank test can reach p < 0.05: with N pairs its
#: smallest p-value is 2 / 2**N (0.0625 at N = 5, 0.03125 at N = 6)
MIN_WILCOXON_PAIRS = 6

# two-sided 95 % (0.975 one-sided) quantiles of Student's t, df = 1..30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t_quantile(df: int, use_scipy: bool = True) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a 95 % two-sided CI)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if use_scipy:
        try:
            from scipy.stats import t
        except ImportError:
            pass
        else:
            return float(t.ppf(0.975, df))
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975  # Cornish-Fisher expansion in 1/df (error < 1e-5 for df > 30)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def wilcoxon_p(diffs: list[float], use_scipy: bool = True) -> tuple[float | None, str | None]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, or None and why not."""
    n = len(diffs)
    if n < MIN_WILCOXON_PAIRS:
        return None, (f"not computed for N = {n} < {MIN_WILCOXON_PAIRS}: with N pairs the "
                      f"smallest two-sided p-value is 2/2^N = {2 / 2 ** n:.3g}, so the test "
                      "could never reach 0.05")
    if all(d == 0 for d in diffs):
        return 1.0, None
    try:
        if not use_scipy:
            raise ImportError
        from scipy.stats import wilcoxon
    except ImportError:
        return None, "not computed: needs scipy"
    return float(wilcoxon(diffs, alternative="two-sided").pvalue), None


def gain_summary(kd: list[float], scratch: list[float], use_scipy: bool = True) -> dict[str, Any]:
    """Means of both arms and the paired gain (``kd[i] - scratch[i]``) with a 95 % t interval.

    The pairs share a seed (the same initial weights and batch order), so the differences, not
    the two means, carry the comparison; the interval is mean ± t(0.975, N-1) · sd / sqrt(N).
    """
    if len(kd) != len(scratch) or len(kd) < 2:
        raise ValueError("need >= 2 pairs of equal length")
    diffs = [a - b for a, b in zip(kd, scratch, strict=True)]
    n, mean = len(diffs), statistics.fmean(diffs)
    half = t_quantile(n - 1, use_scipy) * statistics.stdev(diffs) / math.sqrt(n)
    p, note = wilcoxon_p(diffs, use_scipy)
    return {"n": n, "kd_mean": statistics.fmean(kd), "kd_std": statistics.stdev(kd),
            "scratch_mean": statistics.fmean(scratch), "scratch_std": statistics.stdev(scratch),
            "gain_mean": mean, "gain_std": statistics.stdev(diffs), "ci_level": 0.95,
            "ci_low": mean - half, "ci_high": mean + half, "wilcoxon_p": p, "wilcoxon_note": note}


def gain_text(summary: dict[str, Any]) -> str:
    """``+1.2 pp [-0.3, +2.7] (N=3)``: a ``gain_summary`` in percentage points."""
    return (f"{100 * summary['gain_mean']:+.1f} pp [{100 * summary['ci_low']:+.1f}, "
            f"{100 * summary['ci_high']:+.1f}] (N={summary['n']})")
