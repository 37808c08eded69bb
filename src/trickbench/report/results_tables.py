"""The numbers of docs/results.md: a sweep folder's jobs as one table per dataset (train, val and test accuracy
mean ± std over seeds, the paired test difference to the part's baseline with its 95% interval, epochs, wall
time, device, dataset), and the two or three sentences written from them."""

from dataclasses import dataclass, field
from pathlib import Path

from trickbench.report.collect import Job, Row, find_jobs, group_rows
from trickbench.report.stats import compute, mean_std

METRICS = {"train": ("train", "acc_last"), "val": ("val", "acc_best"), "test": ("test", "acc")}


@dataclass
class Table:
    dataset: str
    rows: list[Row]
    jobs: list[Job]
    baseline: str = ""
    numbers: dict = field(default_factory=dict)  # row label -> {"train": (mean, std), ...}


def short(config: tuple[str, ...], common: set[str]) -> str:
    """A row's name on the page: what differs between rows, each override by its option's last part
    (variant=part_a/lenet5 -> lenet5, trick=batchnorm -> batchnorm)."""
    return " ".join(o.split("=", 1)[-1].rsplit("/", 1)[-1] for o in config if o not in common) or "(all runs)"


def _metric(job: Job, name: str):
    part, key = METRICS[name]
    return (job.results.get(part) or {}).get(key)


def tables(folder: Path, baseline: str | None) -> tuple[list[Table], list[Job]]:
    """One Table per dataset label found under folder (every sweep folder below it, merged), and the jobs that did
    not finish ok. A dataset whose rows do not include the baseline is compared with its first row."""
    jobs, _ = find_jobs([folder])
    by_dataset: dict[str, list[Job]] = {}
    for j in jobs:
        by_dataset.setdefault(str(j.results.get("dataset") or "?"), []).append(j)
    out = []
    for dataset, group in by_dataset.items():
        configs = {j.config for j in group}
        wanted = set((baseline or "").split())
        has_baseline = bool(wanted) and sum(wanted <= set(c) for c in configs) == 1
        rows = group_rows(group, baseline if has_baseline else None)
        compute(rows, target_acc=1.0)
        common = set.intersection(*(set(r.config) for r in rows))
        for r in rows:
            r.label = short(r.config, common)
        table = Table(dataset, rows, group, next(r.label for r in rows if r.baseline))
        for r in rows:
            ok = [j for j in r.jobs if j.ok]
            table.numbers[r.label] = {m: mean_std([v for j in ok if (v := _metric(j, m)) is not None]) for m in METRICS}
        out.append(table)
    return out, [j for j in jobs if not j.ok]


def _pct(mean_std_pair) -> str:
    mean, std = mean_std_pair
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _diff(s: dict) -> str:
    if s["baseline"]:
        return "baseline"
    if s["diff_mean"] is None:
        return "n/a"
    if s["diff_ci_low"] is None:
        return f"{100 * s['diff_mean']:+.2f} (one seed: no interval)"
    return f"{100 * s['diff_mean']:+.2f} [{100 * s['diff_ci_low']:+.2f}, {100 * s['diff_ci_high']:+.2f}]"


def _joined(values) -> str:
    return ", ".join(sorted({str(v) for v in values if v is not None})) or "n/a"


def markdown(table: Table) -> list[str]:
    """The table, rows in the sweep's order (a ladder reads top to bottom)."""
    lines = [
        "| config | seeds | train acc | best val acc | test acc | Δ test vs baseline [95% CI] | epochs | wall s "
        "| device | dataset |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.rows:
        ok = [j for j in r.jobs if j.ok]
        n = table.numbers[r.label]
        wall = r.stats["wall_time_s_mean"]
        name = f"**{r.label}** (baseline)" if r.baseline else r.label
        if r.stats["n_not_ok"]:
            name += f" ({r.stats['n_not_ok']} not ok)"
        lines.append(
            f"| {name} | {r.stats['seeds'] or '-'} | {_pct(n['train'])} | {_pct(n['val'])} | {_pct(n['test'])} "
            f"| {_diff(r.stats)} | {_joined(j.results.get('epochs') for j in ok)} "
            f"| {'n/a' if wall is None else f'{wall:.0f}'} | {_joined(j.results.get('device') for j in ok)} "
            f"| {_joined(j.results.get('dataset') for j in ok)} |"
        )
    return lines


def find_row(table: Table, overrides: str) -> Row | None:
    wanted = set(overrides.split())
    found = [r for r in table.rows if wanted <= set(r.config)]
    return found[0] if len(found) == 1 else None


def _value(table: Table, row: Row, metric: str):
    return table.numbers[row.label][metric][0]


def sentences(table: Table, expect: dict) -> str:
    """Best and worst, what the baseline differences say against seed noise, and the preset's expectation (the
    lecture's or the paper's) checked on the measured means."""
    metric = expect.get("metric", "test")
    done = [r for r in table.rows if _value(table, r, "test") is not None]
    if not done:
        return "No configuration finished ok."
    ranked = sorted(done, key=lambda r: -_value(table, r, "test"))
    best, worst = ranked[0], ranked[-1]
    text = [
        f"Best test accuracy: **{best.label}** ({_pct(table.numbers[best.label]['test'])}%); worst: "
        f"**{worst.label}** ({_pct(table.numbers[worst.label]['test'])}%)."
    ]
    others = [r for r in done if not r.baseline and r.stats["diff_mean"] is not None]
    if others and all(r.stats["diff_ci_low"] is None for r in others):
        text.append(f"With one seed per configuration no difference to {table.baseline} has an interval.")
    elif others:
        clear = [r for r in others if r.stats["diff_ci_low"] is not None and _excludes_zero(r.stats)]
        noise = [r.label for r in others if r not in clear]
        said = ", ".join(f"{r.label} ({100 * r.stats['diff_mean']:+.2f})" for r in clear) or "none"
        text.append(
            f"Against {table.baseline}, the 95% interval of the paired test difference excludes 0 for: {said}"
            + (f"; it includes 0 (seed noise) for {', '.join(noise)}." if noise else ".")
        )
    text.append(_expectation(table, expect, metric, done))
    return " ".join(t for t in text if t)


def _excludes_zero(s: dict) -> bool:
    return s["diff_ci_low"] > 0 or s["diff_ci_high"] < 0


def _expectation(table: Table, expect: dict, metric: str, done: list[Row]) -> str:
    if not expect:
        return ""
    name = {"train": "final train accuracy", "val": "best val accuracy", "test": "test accuracy"}[metric]
    held, close, failed = [], [], []

    def check(hi: Row, lo: Row) -> None:
        (a, sa), (b, sb) = table.numbers[hi.label][metric], table.numbers[lo.label][metric]
        if a is None or b is None:
            return
        said = f"{hi.label} {100 * a:.1f} vs {lo.label} {100 * b:.1f}"
        (close if abs(a - b) <= max(sa or 0, sb or 0) else held if a > b else failed).append(said)

    for hi, lo in expect.get("better") or []:
        row_hi, row_lo = find_row(table, hi), find_row(table, lo)
        if row_hi is not None and row_lo is not None:
            check(row_hi, row_lo)
    base = next(r for r in table.rows if r.baseline)
    if expect.get("beats_baseline"):
        for r in done:
            if not r.baseline:
                check(r, base)
    if expect.get("rising"):
        for lo, hi in zip(done, done[1:], strict=False):
            check(hi, lo)
    n = len(held) + len(close) + len(failed)
    if not n:
        return "The expectation above names configurations that did not run here: not checked."
    verdict = f"The expectation's comparisons on {name}: {len(held)} of {n} held"
    if close:
        verdict += f", {len(close)} within one seed std ({'; '.join(close)})"
    return verdict + (f"; against it: {'; '.join(failed)}." if failed else ".")
