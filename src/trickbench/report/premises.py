"""The absolute checks of docs/results.md: a part's premises (each a check its runs can fail, printed first) and the
absolute claims. Each returns an Outcome: passed (True), failed (False) or cannot be judged (None, with why).

- at_chance: "does not learn": mean final train accuracy and mean last-epoch test accuracy both within 2 points of
  chance (1/classes).
- trains: mean final train accuracy at least 10 points above chance.
- overfits: train accuracy measured on the training images without augmentation or dropout (results.json
  train_clean.acc, an evaluation pass after training) minus last-epoch test accuracy, per seed: its 95% interval
  above 5 points. Records without train_clean.acc cannot be judged (the augmented train accuracy is no stand-in).
- converged: {row: <the baseline>, twice_as_long: {records: <a pilot's records folder>, row: <its overrides>}}: the
  mean over seeds of the paired difference (run twice as long minus the baseline) in last-epoch test accuracy under
  1.5 points; the pilot's records are <root>/<scale>/<records>/. Any other form cannot be judged.
- reaches: {row, at_least}: the claim's metric, mean over seeds, at least at_least (a fraction).
- params: {row, equals}: every finished job of row has exactly that many parameters (results.json params)."""

import statistics
from dataclasses import dataclass

from trickbench.report import measures

CHANCE_MARGIN, TRAINS_MARGIN, OVERFIT_GAP, CONVERGED_GAIN = 0.02, 0.10, 0.05, 0.015
KINDS = ("at_chance", "trains", "overfits", "converged", "reaches", "params")
NO_CLEAN_PASS = (
    "the records have no train_clean.acc (train accuracy on the training images without "
    "augmentation or dropout)"
)


@dataclass
class Outcome:
    passed: bool | None  # None: cannot be judged
    effect: str
    half_width: float | None = None


def row_named(claim: dict) -> str:
    """The overrides of the one configuration an absolute check reads."""
    kind = next(k for k in KINDS if k in claim)
    spec = claim[kind]
    return spec["row"] if isinstance(spec, dict) else spec


def _mean(row, metric: str) -> float | None:
    values = list(measures.per_seed(row, metric).values())
    return statistics.fmean(values) if values else None


def at_chance(row, chance: float) -> Outcome:
    train, test = _mean(row, "train"), _mean(row, "test_last")
    if test is None:
        return Outcome(None, "no last-epoch test accuracy in the records")
    ok = all(abs(v - chance) <= CHANCE_MARGIN for v in (train, test))
    effect = (
        f"train {100 * train:.2f}, test {100 * test:.2f} vs chance {100 * chance:.0f} "
        "(absolute check: both within 2 points)"
    )
    return Outcome(ok, effect)


def trains(row, chance: float) -> Outcome:
    train = _mean(row, "train")
    return Outcome(
        train >= chance + TRAINS_MARGIN,
        f"train {100 * train:.2f} (absolute check: at least {100 * (chance + TRAINS_MARGIN):.0f})",
    )


def overfits(row) -> Outcome:
    if measures.lacks(row, "train_clean"):
        return Outcome(None, NO_CLEAN_PASS)
    text, bounds = measures.interval_text(list(measures.gap(row, "train_clean", "test_last").values()), OVERFIT_GAP)
    effect = f"clean train - test gap {text} points (absolute check: its interval above 5 points)"
    return Outcome(bool(bounds is not None and bounds[0] > 0), effect, measures.half_width(bounds))


def converged(spec, row, pilot_tables) -> Outcome:
    """pilot_tables: the tables of the pilot's records at this scale, dataset first to match ([] when none)."""
    if not isinstance(spec, dict) or "twice_as_long" not in spec:
        return Outcome(
            None,
            "no run twice as long is named (converged.twice_as_long); a rise of train accuracy "
            "over the run's last epochs is no check",
        )
    longer = spec["twice_as_long"]
    long_row = next((r for t in pilot_tables if (r := t.row(longer["row"])) is not None), None)
    if long_row is None:
        return Outcome(None, f"no records of the run twice as long ({longer['records']}/)")
    diffs = measures.paired(measures.per_seed(long_row, "test_last"), measures.per_seed(row, "test_last"))
    if not diffs:
        return Outcome(None, "the run twice as long shares no seed with the baseline")
    text, bounds = measures.interval_text(diffs)
    mean = statistics.fmean(diffs)
    effect = (
        f"twice as long minus the baseline: {text} points of test accuracy over {len(diffs)} seed(s) "
        "(absolute check: mean under 1.5)"
    )
    return Outcome(bool(mean < CONVERGED_GAIN), effect, measures.half_width(bounds))


def reaches(spec: dict, row, metric: str) -> Outcome:
    mean = _mean(row, metric)
    if mean is None:
        return Outcome(None, f"no {measures.METRIC_NAMES[metric]} in the records")
    return Outcome(
        mean >= spec["at_least"],
        f"{measures.METRIC_NAMES[metric]} {100 * mean:.2f} (absolute check: at least {100 * spec['at_least']:.1f})",
    )


def params(spec: dict, row) -> Outcome:
    counts = sorted({j.results.get("params") for j in row.jobs if j.ok})
    shown = ", ".join(f"{c:,}" if isinstance(c, int) else "n/a" for c in counts)
    return Outcome(counts == [spec["equals"]], f"{shown} parameters (structural check: {spec['equals']:,})")


def check(claim: dict, row, metric: str, chance: float, pilot_tables=()) -> Outcome:
    """The claim's absolute check on its row (metric: the claim's, for reaches)."""
    if "at_chance" in claim:
        return at_chance(row, chance)
    if "trains" in claim:
        return trains(row, chance)
    if "overfits" in claim:
        return overfits(row)
    if "converged" in claim:
        return converged(claim["converged"], row, list(pilot_tables))
    if "reaches" in claim:
        return reaches(claim["reaches"], row, metric)
    return params(claim["params"], row)
