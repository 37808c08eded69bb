"""The verdicts of docs/results.md: each claim of a preset's `results.claims` checked on one table's runs.

One rule for comparisons, the paired interval: for `better: [a, b]` the per-seed difference a - b (the same seed's
runs) and its 95% t-interval; "supports" when the interval excludes 0 in the claimed direction, "contradicts" when it
excludes 0 the other way, "inconclusive" when it includes 0. An interval of zero width (every seed gave the same
difference, as two nets that both predict one class do) is flagged and inconclusive, never printed as an interval.
`narrower_gap: [a, b]` is b's train - test gap minus a's, paired. Absolute checks (at_chance, trains, overfits,
converged, reaches, params) are premises.py's: a premise "holds" or "fails", an absolute claim "supports" or
"contradicts", either "cannot be judged" where the records lack what it reads. `cited: <text>` is a claim another
page measures (the text says where). `each_better_than_previous: [a, b, c]` is b > a, c > b; `each_better_than:
{rows: [...], than: x}` is every row > x; with `kind: narrower_gap` each pair is a narrower_gap claim instead.

What the page shows of a claim (all optional; a claim without them is rendered by its `says`): `id` (the digest's,
A1, B2, ...; a list gives each expanded pair its own), `source_says` (the source's wording, shown instead of says),
`source_figure` (the source's own figure, e.g. "lecture: train 69.3 -> 93.8"), `source` (lecture, Bag of Tricks),
`project: true` (the project's own claim, not a source's), `metric` (the source's: train, or test / val, both judged
on the last epoch's test accuracy, the only held-out figure no choice was made on), `note` (how the setup of this
claim follows or departs from the source's, printed on its row beside the part's `results.departs`), `source_effect`
(the source's effect in points, where it gives one: an inconclusive interval wider than it says that more seeds, up
to MAX_SEEDS, are needed before the claim can be judged)."""

from dataclasses import dataclass

from trickbench.report import premises
from trickbench.report.measures import (  # noqa: F401  (the names results_page and results_tables use)
    METRIC_NAMES,
    METRICS,
    UNITS,
    gap,
    half_width,
    interval_text,
    paired,
    per_seed,
)

SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive"
HOLDS, FAILS, UNJUDGED = "holds", "fails", "cannot be judged"
NOT_RUN, NOT_MEASURED, CITED = "not run at this scale", "not measured yet", "cited"
PREMISE_FAILED = "premise failed"
SOURCE_METRICS = {"test": "test_last", "val": "test_last"}  # the source's held-out metric -> the verdicts' figure
PER_PAIR = ("id", "source_says", "source_figure", "note", "source_effect")
MAX_SEEDS = 5


@dataclass
class Verdict:
    says: str
    verdict: str
    effect: str  # the number behind the verdict, with its interval or the absolute check it passed or failed
    premise: bool = False
    half_width: float | None = None  # of its 95% interval: the smallest effect the seeds resolve
    premise_of: tuple[str, ...] = ()  # a premise's: the ids of the claims it is the premise of (none: every claim)


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
        for n, (hi, lo) in enumerate(pairs):
            rest = {k: v for k, v in c.items() if not k.startswith("each_") and k != "kind"}
            for key in PER_PAIR:
                if isinstance(rest.get(key), list):
                    rest[key] = rest[key][n] if n < len(rest[key]) else None
            for key in ("says", "source_says"):
                if rest.get(key):
                    rest[key] = rest[key].format(a=label(hi), b=label(lo))
            rest.setdefault("says", f"{label(hi)} beats {label(lo)}")
            out.append({**rest, c.get("kind", "better"): [hi, lo]})
    return out


def text(claim: dict) -> str:
    """The claim as the page words it: the source's wording where the preset gives it."""
    return claim.get("source_says") or claim["says"]


def setup_notes(claim: dict, departs=None) -> str:
    """What the row says of its setup against the source's: the claim's note and its part's departures."""
    notes = [str(n) for n in (claim.get("note"), departs) if n]
    return f" (setup: {'; '.join(notes)})" if notes else ""


def source(claim: dict) -> str:
    return "project" if claim.get("project") else str(claim.get("source", "lecture"))


def metric_of(claim: dict, preset_metric: str) -> str:
    metric = claim.get("metric", preset_metric)
    return SOURCE_METRICS.get(metric, metric) if "metric" in claim else metric


def rows_named(claim: dict) -> list[str]:
    for kind in ("better", "narrower_gap"):
        if kind in claim:
            return list(claim[kind])
    if any(k in claim for k in premises.KINDS):
        return [premises.row_named(claim)]
    return []


def from_interval(bounds: tuple | None) -> str:
    if bounds is None:
        return INCONCLUSIVE
    return SUPPORTS if bounds[0] > 0 else CONTRADICTS if bounds[1] < 0 else INCONCLUSIVE


def too_few_seeds(claim: dict, verdict: str, half: float | None, seeds: int) -> str:
    """What an inconclusive verdict adds when its interval is wider than the source's effect: its seeds cannot
    resolve the effect the source reports, so more are needed (up to MAX_SEEDS) before it says anything."""
    effect = claim.get("source_effect")
    if verdict != INCONCLUSIVE or effect is None or half is None or 100 * half <= abs(float(effect)):
        return ""
    more = f"add seeds (up to {MAX_SEEDS})" if seeds < MAX_SEEDS else f"even at {seeds} seeds"
    return f": ±{100 * half:.2f} cannot resolve the source's {float(effect):+.2f} at {seeds} seeds, {more}"


def check(claim: dict, table, metric: str, chance: float, pilot_tables=()) -> Verdict:
    """One claim on one table; rows the table lacks make it "not measured yet" (the page says "not run at this
    scale" itself for the configurations a scale leaves out). pilot_tables: a converged check's pilot records."""
    says, premise = text(claim), bool(claim.get("premise"))
    if "cited" in claim:
        return Verdict(says, CITED, str(claim["cited"]), premise)
    metric = metric_of(claim, metric)
    rows = [table.row(o) for o in rows_named(claim)]
    if any(r is None or not per_seed(r, "train") for r in rows):
        return Verdict(says, NOT_MEASURED, "", premise)
    if "better" in claim:
        diffs = paired(per_seed(rows[0], metric), per_seed(rows[1], metric))
        shown, bounds = interval_text(diffs)
        verdict, half = from_interval(bounds), half_width(bounds)
        verdict += too_few_seeds(claim, verdict, half, len(diffs))
        return Verdict(says, verdict, f"Δ {shown} {UNITS[metric]}", premise, half)
    if "narrower_gap" in claim:
        shown, bounds = interval_text(paired(gap(rows[1], "train", metric), gap(rows[0], "train", metric)))
        effect = f"gap narrowed by {shown} points (final train - {METRIC_NAMES[metric]})"
        return Verdict(says, from_interval(bounds), effect, premise, half_width(bounds))
    outcome = premises.check(claim, rows[0], metric, chance, pilot_tables)
    if outcome.passed is None:
        verdict = UNJUDGED
    elif premise:
        verdict = HOLDS if outcome.passed else FAILS
    else:
        verdict = SUPPORTS if outcome.passed else CONTRADICTS
    return Verdict(says, verdict, outcome.effect, premise, outcome.half_width)
