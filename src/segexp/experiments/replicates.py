"""Repeated runs of one recipe (seeds, or the folds of a cross-validation), summarized and compared.

Pure functions on run records (segexp.tracking.records) and numbers (numpy and scipy.stats, no store access): the sweep
parent's mean / std / 95% CI / n per recipe (segexp.experiments.sweeps) and `segexp compare`'s paired
differences and tests (segexp.experiments.compare) both come from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from segexp.reports import markdown_table
from segexp.tracking.records import RunRecord

REPLICATE_KEYS = ("trainer.seed", "data.fold")  # overrides that repeat a recipe rather than change it
ALPHA = 0.05  # two-sided: 95% confidence intervals, "beats" at p < 0.05
POWER = 0.8  # the chance of seeing a real difference that power figures plan for
MOST_REPLICATES = 10_000  # pairs_needed's answer is capped here: beyond, "more than"


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, half-width of the 95% t-interval of the mean, and n."""

    mean: float
    std: float
    ci95: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Returns the Summary of finite values (std and ci95 are NaN below two values)."""
    from scipy import stats

    array = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    n = len(array)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Summary(float(array[0]), math.nan, math.nan, 1)
    std = float(array.std(ddof=1))
    return Summary(float(array.mean()), std, float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)), n)


def is_replicate(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") in REPLICATE_KEYS


# overrides that say how a job ran, not what it trained: Hydra's own, and continuing an interrupted run or sweep
# (`segexp train -m resume=DIR` gives the jobs it runs again resume_sweep=true, the jobs it kept do not carry it)
NOT_RECIPE = ("hydra.", "hydra/", "resume_sweep=", "resume=")


def recipe_overrides(run: RunRecord) -> list[str]:
    """Returns a run's command-line overrides without the ones that only repeat it (seed, fold) or say how it ran."""
    return [o for o in run.overrides if not is_replicate(o) and not o.startswith(NOT_RECIPE)]


def group_by_recipe(runs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Returns {recipe label: its runs} for runs that differ only in seed or fold; the label holds the
    overrides in which the groups differ ("" when all runs are one recipe)."""
    runs = list(runs)
    recipes = [tuple(recipe_overrides(r)) for r in runs]
    shared = set.intersection(*map(set, recipes)) if recipes else set()
    groups: dict[str, list[RunRecord]] = {}
    for run, recipe in zip(runs, recipes):
        groups.setdefault(" ".join(o for o in recipe if o not in shared), []).append(run)
    return groups


def replicate_key(run: RunRecord) -> tuple[str, str]:
    """Returns what pairs this run with a run of another recipe: ("fold", i) in a cross-validation,
    else ("seed", s)."""
    params = run.params
    fold = params.get("data.fold")
    if fold not in (None, "None"):
        return "fold", f"{fold}/{params.get('data.folds')}"
    return "seed", params.get("trainer.seed", "?")


def metric_label(key: str) -> str:
    """Returns a metric key as a valid MLflow key fragment, e.g. "experiment=isbi_best" -> "experiment:isbi_best"."""
    return "".join(c if c.isalnum() or c in "_-. :/" else ":" if c == "=" else "_" for c in key)


def aggregate_metrics(groups: Mapping[str, Sequence[RunRecord]], metrics: Sequence[str]) -> dict[str, float]:
    """Returns the parent run's aggregates for groups of at least two finished runs: `<metric>_mean`,
    `_std`, `_ci95` and `_n`, prefixed by `<recipe label>/` when the sweep holds several recipes."""
    out: dict[str, float] = {}
    replicated = {label: runs for label, runs in groups.items() if len(runs) >= 2}
    for label, runs in replicated.items():
        prefix = f"{metric_label(label)}/" if len(groups) > 1 and label else ""
        for metric in metrics:
            summary = summarize([r.metric(metric) for r in runs])
            if summary.n >= 2:
                out.update({f"{prefix}{metric}_mean": summary.mean, f"{prefix}{metric}_std": summary.std,
                            f"{prefix}{metric}_ci95": summary.ci95, f"{prefix}{metric}_n": float(summary.n)})
    return out


def format_summary(summary: Summary) -> str:
    """Returns "0.9712 ± 0.0031 [0.9635, 0.9789] (n=3)": mean ± std, the 95% CI of the mean, n."""
    if summary.n == 0:
        return "-"
    if summary.n == 1:
        return f"{summary.mean:.4f} (n=1)"
    return (f"{summary.mean:.4f} ± {summary.std:.4f} [{summary.mean - summary.ci95:.4f}, "
            f"{summary.mean + summary.ci95:.4f}] (n={summary.n})")


def aggregate_table(groups: Mapping[str, Sequence[RunRecord]], metrics: Sequence[str]) -> str:
    """Returns a markdown table with a row per recipe of at least two finished runs: mean ± std [95% CI] (n)."""
    rows = [(label or "(all runs)", runs) for label, runs in groups.items() if len(runs) >= 2]
    if not rows:
        return ""
    return markdown_table(["recipe", *metrics], [
        [label, *(format_summary(summarize([r.metric(m) for r in runs])) for m in metrics)]
        for label, runs in rows]) + "\n"


@dataclass(frozen=True)
class Difference:
    """B minus A on one metric: the mean difference, the half-width of its 95% CI, the two-sided p of a
    paired t-test (paired_by "seed" or "fold") or of Welch's test (paired_by None), and n per side."""

    metric: str
    a: Summary
    b: Summary
    diff: float
    ci95: float
    p: float
    paired_by: str | None
    n: int
    b_ahead: int | None = None  # pairs in which B scored better (paired comparisons only)
    # the spread a power figure rests on: the std of the paired differences, or for unpaired sides the
    # per-replicate std of a difference, sqrt(std_a^2 + std_b^2); nan with fewer than two per side
    spread: float = math.nan

    @property
    def detectable(self) -> float:
        """The smallest difference this comparison's n and spread would detect (POWER, two-sided ALPHA)."""
        return detectable_difference(self.spread, self.n, self.paired_by is not None)

    def needed(self, delta: float) -> int | None:
        """Pairs (or replicates per side) that a difference of `delta` would need at this spread; None
        beyond MOST_REPLICATES or without a spread."""
        return replicates_needed(delta, self.spread, self.paired_by is not None)


def difference(metric: str, a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float]) -> Difference:
    """Returns B - A on `metric` from {replicate key: value} of each side: paired by seed or fold when
    both sides hold the same keys (at least two), else Welch's unpaired test."""
    from scipy import stats

    a = {k: v for k, v in a.items() if math.isfinite(v)}
    b = {k: v for k, v in b.items() if math.isfinite(v)}
    sa, sb = summarize(list(a.values())), summarize(list(b.values()))
    if set(a) == set(b) and len(a) >= 2:
        keys = sorted(a)
        deltas = np.array([b[k] - a[k] for k in keys])
        d = summarize(deltas.tolist())
        if d.std == 0:  # identical differences: no spread to test against
            p = 1.0 if d.mean == 0 else 0.0
        else:
            p = float(stats.ttest_rel([b[k] for k in keys], [a[k] for k in keys]).pvalue)
        better = deltas > 0 if higher_is_better(metric) else deltas < 0
        return Difference(metric, sa, sb, d.mean, d.ci95, p, keys[0][0], len(keys), int(better.sum()), d.std)
    diff = sb.mean - sa.mean
    if sa.n < 2 or sb.n < 2:
        return Difference(metric, sa, sb, diff, math.nan, math.nan, None, min(sa.n, sb.n))
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    spread = math.sqrt(sa.std ** 2 + sb.std ** 2)
    if va + vb == 0:
        return Difference(metric, sa, sb, diff, 0.0, 1.0 if diff == 0 else 0.0, None, min(sa.n, sb.n), spread=0.0)
    dof = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))  # Welch-Satterthwaite
    ci = float(stats.t.ppf(1 - ALPHA / 2, dof) * math.sqrt(va + vb))
    p = float(stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False).pvalue)
    return Difference(metric, sa, sb, diff, ci, p, None, min(sa.n, sb.n), spread=spread)


def t_test_power(effect: float, n: int, paired: bool, alpha: float = ALPHA) -> float:
    """Returns the power of a two-sided t-test at `alpha` for a difference of `effect` standard deviations:
    paired (one-sample on the n differences, df n - 1) or unpaired with n per side (pooled, df 2n - 2)."""
    from scipy import stats

    df, noncentrality = (n - 1, effect * math.sqrt(n)) if paired else (2 * n - 2, effect * math.sqrt(n / 2))
    critical = stats.t.ppf(1 - alpha / 2, df)
    upper, lower = stats.nct.sf(critical, df, noncentrality), stats.nct.cdf(-critical, df, noncentrality)
    return float(upper + (lower if math.isfinite(lower) else 0.0))  # scipy's nct: nan where the far tail is ~0


def detectable_difference(spread: float, n: int, paired: bool, power: float = POWER, alpha: float = ALPHA) -> float:
    """Returns the smallest difference a two-sided t-test of n pairs (or n per side) detects with `power`
    when replicates spread by `spread` (the std of a difference); nan without a spread or with n < 2."""
    from scipy.optimize import brentq

    if not math.isfinite(spread) or n < 2:
        return math.nan
    if spread == 0:
        return 0.0
    effect = brentq(lambda e: t_test_power(e, n, paired, alpha) - power, 1e-9, 100.0)
    scale = spread if paired else spread / math.sqrt(2)  # unpaired: in units of the pooled per-side std
    return effect * scale


def replicates_needed(delta: float, spread: float, paired: bool, power: float = POWER,
                      alpha: float = ALPHA) -> int | None:
    """Returns the fewest pairs (or replicates per side) with which a two-sided t-test detects a difference
    of `delta` with `power`; None beyond MOST_REPLICATES, without a spread or for delta 0."""
    if not math.isfinite(spread) or delta == 0:
        return None
    if spread == 0:
        return 2
    effect = abs(delta) / (spread if paired else spread / math.sqrt(2))
    for n in range(2, MOST_REPLICATES + 1):
        if t_test_power(effect, n, paired, alpha) >= power:
            return n
    return None


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("loss")


def verdict(d: Difference, name_a: str, name_b: str, shown: str | None = None) -> str:
    """Returns the one-line reading of a Difference, e.g. "B beats A on v_rand by 0.0120 ± 0.0040,
    p = 0.01, n = 6 (paired by seed)" or "no detectable difference on v_rand (...)"."""
    shown = shown or d.metric
    how = (f"paired by {d.paired_by}, {name_b.split(' ')[0]} ahead in {d.b_ahead} of {d.n}" if d.paired_by
           else "unpaired, Welch")
    if not math.isfinite(d.p):
        return (f"{shown}: {name_b} - {name_a} = {d.diff:+.4f}, not testable with n = {d.n} on a side "
                "(repeat each recipe over seeds or folds)")
    if d.p >= ALPHA:
        return f"no detectable difference on {shown} ({d.diff:+.4f} ± {d.ci95:.4f}, p = {d.p:.2g}, n = {d.n}, {how})"
    b_better = (d.diff > 0) == higher_is_better(d.metric)
    winner, loser = (name_b, name_a) if b_better else (name_a, name_b)
    return f"{winner} beats {loser} on {shown} by {abs(d.diff):.4f} ± {d.ci95:.4f}, p = {d.p:.2g}, n = {d.n} ({how})"
