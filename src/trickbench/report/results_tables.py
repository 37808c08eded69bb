"""The numbers of docs/results.md: a sweep folder's jobs as one table per dataset (train, best-val, and test accuracy
of the best-val checkpoint and of the last epoch, mean ± std over seeds; the paired difference to the part's
baseline on the verdicts' figure with its 95% interval; epochs, wall time, precision where rows differ, device,
dataset)."""

from dataclasses import dataclass, field
from pathlib import Path

from trickbench.report import claims
from trickbench.report.collect import Job, Row, find_jobs, group_rows
from trickbench.report.stats import compute, mean_std

DATASET_NAMES = {"cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST"}
COLUMNS = {"train": "train acc", "val": "best val acc", "test": "test acc (best val)", "test_last": "test acc (last)"}


@dataclass
class Table:
    dataset: str
    rows: list[Row]
    jobs: list[Job]
    baseline: str = ""
    numbers: dict = field(default_factory=dict)  # row label -> {"train": (mean, std), ...}

    def row(self, overrides: str) -> Row | None:
        return find_row(self, overrides)

    @property
    def base(self) -> Row:
        return next(r for r in self.rows if r.baseline)


def short(config: tuple[str, ...], common: set[str]) -> str:
    """A row's name on the page: what differs between rows, each override by its option's last part
    (variant=part_a/lenet5 -> lenet5, trick=batchnorm -> batchnorm)."""
    return " ".join(claims.label(o) for o in config if o not in common) or "(all runs)"


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
            table.numbers[r.label] = {m: mean_std(list(claims.per_seed(r, m).values())) for m in COLUMNS}
        out.append(table)
    return out, [j for j in jobs if not j.ok]


def dataset_name(label: str) -> str:
    """The page's name of a dataset label: cifar10 (JPEG q75 copy) -> CIFAR-10 (JPEG q75 copy)."""
    head, _, rest = label.partition(" ")
    return " ".join([DATASET_NAMES.get(head, head), rest]).strip()


def _pct(mean_std_pair) -> str:
    mean, std = mean_std_pair
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _joined(values) -> str:
    return ", ".join(sorted({str(v) for v in values if v is not None})) or "n/a"


def markdown(table: Table, metric: str, rows: list[Row] | None = None) -> list[str]:
    """The table, rows in the sweep's order (a ladder reads top to bottom); Δ on `metric`, paired by seed. The
    precision column appears only when the rows ran at different precisions."""
    rows = rows if rows is not None else table.rows
    precisions = {_joined(j.results.get("precision") for j in r.jobs if j.ok) for r in rows}
    show_precision = len(precisions) > 1
    head = [
        "config",
        "seeds",
        *COLUMNS.values(),
        f"Δ {claims.METRIC_NAMES[metric]} vs baseline, points [95% CI]",
        "epochs",
        "wall s",
        *(["precision"] if show_precision else []),
        "device",
        "dataset",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = claims.per_seed(table.base, metric)
    for r in rows:
        ok = [j for j in r.jobs if j.ok]
        n = table.numbers[r.label]
        wall = r.stats["wall_time_s_mean"]
        name = f"**{r.label}** (baseline)" if r.baseline else r.label
        if r.stats["n_not_ok"]:
            name += f" ({r.stats['n_not_ok']} not ok)"
        diff = "baseline" if r.baseline else claims.interval_text(claims.paired(claims.per_seed(r, metric), base))[0]
        cells = [
            name,
            r.stats["seeds"] or "-",
            *(_pct(n[m]) for m in COLUMNS),
            diff,
            _joined(j.results.get("epochs") for j in ok),
            "n/a" if wall is None else f"{wall:.0f}",
            *([_joined(j.results.get("precision") for j in ok)] if show_precision else []),
            _joined(j.results.get("device") for j in ok),
            _joined(dataset_name(j.results.get("dataset") or "?") for j in ok),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def find_row(table: Table, overrides: str) -> Row | None:
    wanted = set(overrides.split())
    found = [r for r in table.rows if wanted <= set(r.config)]
    return found[0] if len(found) == 1 else None


def verdict_lines(verdicts: list[claims.Verdict]) -> list[str]:
    """The claims checked on one table, as a table of their own."""
    lines = ["| claim | verdict | effect | resolves |", "|---|---|---|---|"]
    for v in verdicts:
        resolves = "-" if v.half_width is None else f"±{100 * v.half_width:.2f}"
        said = f"{'premise: ' if v.premise else ''}{v.says}"
        lines.append(f"| {said} | **{v.verdict}** | {v.effect or '-'} | {resolves} |")
    return lines
