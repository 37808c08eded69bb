"""The verdicts of docs/results.md: each claim of a preset's `results.claims` checked on one table's runs.

One rule for comparisons, the paired interval: for `better: [a, b]` the per-seed difference a - b (the same seed's
runs) and its 95% t-interval; "supports" when the interval excludes 0 in the claimed direction, "contradicts" when it
excludes 0 the other way, "inconclusive" when it includes 0. An interval of zero width (every seed gave the same
difference, as two nets that both predict one class do) is flagged and inconclusive, never printed as an interval.
Absolute claims are absolute checks, named in the table: `at_chance` (train and test within 2 points of
1/classes), `trains` (train at least 10 points above chance), `overfits` (the per-seed train - test gap: its interval
above 5 points), `narrower_gap: [a, b]` (b's gap minus a's, paired), `converged` (train accuracy rose by less than 1
point over the last fifth of the epochs). `each_better_than_previous: [a, b, c]` is b > a, c > b; `each_better_than:
{rows: [...], than: x}` is every row > x; with `kind: narrower_gap` each pair is a narrower_gap claim instead."""

import math
import statistics
from dataclasses import dataclass

from trickbench.report.stats import paired_ci

METRICS = {
    "train": ("train", "acc_last"),
    "val": ("val", "acc_best"),
    "test": ("test", "acc"),
    "test_last": ("test_last", "acc"),
}
METRIC_NAMES = {
    "train": "final train accuracy",
    "val": "best val accuracy",
    "test": "test accuracy of the best-val checkpoint",
    "test_last": "last-epoch test accuracy",
}
CHANCE_MARGIN, TRAINS_MARGIN, OVERFIT_GAP, CONVERGED_RISE = 0.02, 0.10, 0.05, 0.01
SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive"
NOT_RUN, NOT_MEASURED = "not run at this scale", "not measured yet"


@dataclass
class Verdict:
    says: str
    verdict: str
    effect: str  # the number behind the verdict, with its interval or the absolute check it passed or failed
    premise: bool = False


def label(overrides: str) -> str:
    """A configuration's name on the page: variant=part_a/lenet5 -> lenet5."""
    return " ".join(o.split("=", 1)[-1].rsplit("/", 1)[-1] for o in overrides.split())


def expand(claims: list[dict]) -> list[dict]:
    """The claims with each_better_than[_previous] written out as one `better` claim per pair."""
    out = []
    for c in claims:
        pairs = []
        if "each_better_than_previous" in c:
            rows = list(c["each_better_than_previous"])
            pairs = list(zip(rows[1:], rows, strict=False))
        elif "each_better_than" in c:
            pairs = [(r, c["each_better_than"]["than"]) for r in c["each_better_than"]["rows"]]
        else:
            out.append(dict(c))
            continue
        for hi, lo in pairs:
            says = c.get("says", "{a} beats {b}").format(a=label(hi), b=label(lo))
            rest = {k: v for k, v in c.items() if not k.startswith("each_") and k != "kind"}
            out.append({**rest, "says": says, c.get("kind", "better"): [hi, lo]})
    return out


def rows_named(claim: dict) -> list[str]:
    for kind in ("better", "narrower_gap"):
        if kind in claim:
            return list(claim[kind])
    return [claim[k] for k in ("at_chance", "trains", "overfits", "converged") if k in claim]


def value(job, metric: str):
    part, key = METRICS[metric]
    return (job.results.get(part) or {}).get(key)


def per_seed(row, metric: str) -> dict:
    return {j.seed: v for j in row.jobs if j.ok and (v := value(j, metric)) is not None}


def _gap(row, metric: str) -> dict:
    train, test = per_seed(row, "train"), per_seed(row, metric)
    return {s: train[s] - test[s] for s in train.keys() & test.keys()}


def paired(a: dict, b: dict) -> list[float]:
    """a - b per seed, for the seeds both have, in seed order."""
    return [a[s] - b[s] for s in sorted(a.keys() & b.keys(), key=str)]


def interval_text(diffs: list[float], offset: float = 0.0) -> tuple[str, tuple | None]:
    """ "+1.23 [-0.40, +2.86]" in points and (low, high) - offset, or a flagged text and None (no interval)."""
    if not diffs:
        return "n/a", None
    mean, low, high = paired_ci(diffs)
    if low is None:
        return f"{100 * mean:+.2f} (one seed: no interval)", None
    if statistics.pstdev(diffs) == 0:
        return f"{100 * mean:+.2f} (zero variance: every seed gave the same, no interval)", None
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]", (low - offset, high - offset)


def _from_interval(bounds: tuple | None) -> str:
    if bounds is None:
        return INCONCLUSIVE
    return SUPPORTS if bounds[0] > 0 else CONTRADICTS if bounds[1] < 0 else INCONCLUSIVE


def check(claim: dict, table, metric: str, chance: float) -> Verdict:
    """One claim on one table; rows the table lacks make it "not measured yet" (the page says "not run at this
    scale" itself for the configurations a scale leaves out)."""
    says, premise = claim["says"], bool(claim.get("premise"))
    metric = claim.get("metric", metric)
    rows = [table.row(o) for o in rows_named(claim)]
    if any(r is None or not per_seed(r, "train") for r in rows):
        return Verdict(says, NOT_MEASURED, "", premise)
    if "better" in claim:
        text, bounds = interval_text(paired(per_seed(rows[0], metric), per_seed(rows[1], metric)))
        return Verdict(says, _from_interval(bounds), f"Δ {METRIC_NAMES[metric]} {text}", premise)
    if "narrower_gap" in claim:
        text, bounds = interval_text(paired(_gap(rows[1], metric), _gap(rows[0], metric)))
        return Verdict(says, _from_interval(bounds), f"gap narrowed by {text}", premise)
    if "overfits" in claim:
        text, bounds = interval_text(list(_gap(rows[0], metric).values()), OVERFIT_GAP)
        return Verdict(says, _from_interval(bounds), f"train - test gap {text} (claim: above 5 points)", premise)
    mean_train = statistics.fmean(per_seed(rows[0], "train").values())
    test = per_seed(rows[0], metric)
    mean_test = statistics.fmean(test.values()) if test else math.nan
    if "at_chance" in claim:
        ok = all(abs(v - chance) <= CHANCE_MARGIN for v in (mean_train, mean_test))
        effect = (
            f"train {100 * mean_train:.2f}, test {100 * mean_test:.2f} vs chance {100 * chance:.0f} "
            "(absolute check: both within 2 points)"
        )
        return Verdict(says, SUPPORTS if ok else CONTRADICTS, effect, premise)
    if "trains" in claim:
        ok = mean_train >= chance + TRAINS_MARGIN
        effect = f"train {100 * mean_train:.2f} (absolute check: at least {100 * (chance + TRAINS_MARGIN):.0f})"
        return Verdict(says, SUPPORTS if ok else CONTRADICTS, effect, premise)
    rise = _late_rise(rows[0])
    if rise is None:
        return Verdict(says, NOT_MEASURED, "no per-epoch train accuracy", premise)
    effect = f"train accuracy rose {100 * rise:+.2f} over the last fifth of the epochs (absolute check: under 1 point)"
    return Verdict(says, SUPPORTS if rise < CONVERGED_RISE else CONTRADICTS, effect, premise)


def _late_rise(row) -> float | None:
    """Mean over seeds of the train accuracy's change over the last fifth of the epochs (at least 2)."""
    rises = []
    for job in (j for j in row.jobs if j.ok):
        curve = [m["train_acc"] for m in job.metrics if m.get("train_acc") is not None]
        if len(curve) >= 3:
            back = max(2, math.ceil(len(curve) / 5))
            rises.append(curve[-1] - curve[-1 - back])
    return statistics.fmean(rises) if rises else None
