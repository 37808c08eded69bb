"""The sweep report: which configuration helped, by how much, and how sure we are.

    python -m trickbench.report <sweep folder> [<more folders>...] [--target-acc 0.85] [--baseline trick=none]

Reads every job's results.json and metrics.csv (never stdout), groups runs by their overrides minus the
seed, and writes report.md, report.csv and PNGs into the first folder. Also run after every sweep by
SweepReportCallback (conf/hydra/default.yaml)."""

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import with_status
from trickbench.sweep import what_it_trains

log = logging.getLogger(__name__)
DEFAULT_TARGET_ACC = 0.85
CSV_COLUMNS = [
    "config",
    "baseline",
    "seeds",
    "n_ok",
    "n_not_ok",
    "test_acc_mean",
    "test_acc_std",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "diff_pairs",
    "val_acc_best_mean",
    "train_acc_last_mean",
    "epochs_to_target_mean",
    "target_reached",
    "wall_time_s_mean",
    "params",
    "status",
]


@dataclass
class Job:
    folder: Path
    results: dict
    metrics: list[dict]

    @property
    def ok(self) -> bool:
        return self.results.get("status") == "ok"

    @property
    def seed(self):
        return self.results.get("seed")

    @property
    def config(self) -> tuple[str, ...]:
        return tuple(o for o in what_it_trains(self.results.get("overrides") or []) if not o.startswith("seed="))


@dataclass
class Row:
    config: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)
    label: str = ""
    baseline: bool = False
    stats: dict = field(default_factory=dict)


# ---- reading ------------------------------------------------------------------------------------------
def _job_order(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def find_jobs(folders: list[Path]) -> tuple[list[Job], list[Path]]:
    """Jobs with a results.json, in sweep order, and job folders without one (killed). Hidden folders
    (.submitit, .hydra) are skipped; a config+seed run twice (a resumed sweep) counts once, ok preferred."""
    # here, not at the top: Hydra builds the report callback at every -m start, and loggers.py imports Lightning
    # (seconds before a sweep's one-line refusals could print)
    from trickbench.loggers import read_metrics_csv

    jobs: dict[tuple, Job] = {}
    missing = []
    for folder in folders:
        candidates = {p.parent for p in folder.rglob("results.json")} | {p.parent for p in folder.rglob(".hydra")}
        for job_dir in sorted(candidates, key=_job_order):
            if any(p.startswith(".") for p in job_dir.relative_to(folder).parts):
                continue
            path = job_dir / "results.json"
            if not path.exists():
                missing.append(job_dir)
                continue
            results = json.loads(path.read_text())
            metrics_path = job_dir / "metrics.csv"
            job = Job(job_dir, results, read_metrics_csv(metrics_path) if metrics_path.exists() else [])
            key = (job.config, job.seed)
            if key not in jobs or job.ok or not jobs[key].ok:
                jobs[key] = job
    return list(jobs.values()), missing


def group_rows(jobs: list[Job], baseline: str | None) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for job in jobs:
        rows.setdefault(job.config, Row(job.config)).jobs.append(job)
    ordered = list(rows.values())
    common = set.intersection(*(set(r.config) for r in ordered)) if ordered else set()
    for r in ordered:
        r.label = " ".join(o for o in r.config if o not in common) or "(all runs)"
    if ordered:
        _pick_baseline(ordered, baseline).baseline = True
    return ordered


def _pick_baseline(rows: list[Row], baseline: str | None) -> Row:
    if not baseline:
        return rows[0]
    wanted = set(baseline.replace(",", " ").split())
    matches = [r for r in rows if wanted <= set(r.config)]
    if len(matches) != 1:
        labels = "; ".join(r.label for r in rows)
        raise ValueError(f"report.baseline={baseline!r}: one of the configurations ({labels})")
    return matches[0]


# ---- numbers ------------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired_ci(diffs: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean of per-seed differences and its t-interval over seeds; no interval from one pair."""
    if not diffs:
        return None, None, None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    from scipy.stats import t  # imported here: only the report needs scipy

    half = t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def epochs_to(metrics: list[dict], target: float) -> int | None:
    """1-based count of epochs until val acc first reaches target (None: never)."""
    for row in metrics:
        if row.get("val_acc") is not None and row["val_acc"] >= target:
            return int(row["epoch"]) + 1
    return None


def _test_acc(job: Job):
    return (job.results.get("test") or {}).get("acc")


def compute(rows: list[Row], target_acc: float) -> None:
    base = next(r for r in rows if r.baseline)
    base_by_seed = {j.seed: _test_acc(j) for j in base.jobs if j.ok and _test_acc(j) is not None}
    for r in rows:
        ok = [j for j in r.jobs if j.ok and _test_acc(j) is not None]
        accs = [_test_acc(j) for j in ok]
        mean, std = mean_std(accs)
        diffs = [] if r.baseline else [_test_acc(j) - base_by_seed[j.seed] for j in ok if j.seed in base_by_seed]
        diff, low, high = paired_ci(diffs)
        reached = [e for e in (epochs_to(j.metrics, target_acc) for j in ok) if e is not None]
        params = sorted({j.results.get("params") for j in ok})
        statuses = [j.results.get("status", "?") for j in r.jobs]
        r.stats = {
            "config": r.label,
            "baseline": r.baseline,
            "seeds": " ".join(str(j.seed) for j in sorted(ok, key=lambda j: str(j.seed))),
            "n_ok": len(ok),
            "n_not_ok": len(r.jobs) - len(ok),
            "test_acc_mean": mean,
            "test_acc_std": std,
            "diff_mean": diff,
            "diff_ci_low": low,
            "diff_ci_high": high,
            "diff_pairs": len(diffs),
            "val_acc_best_mean": mean_std(
                [j.results["val"]["acc_best"] for j in ok if j.results["val"]["acc_best"] is not None]
            )[0],
            "train_acc_last_mean": mean_std(
                [j.results["train"]["acc_last"] for j in ok if j.results["train"]["acc_last"] is not None]
            )[0],
            "epochs_to_target_mean": mean_std(reached)[0],
            "target_reached": f"{len(reached)}/{len(ok)}",
            "wall_time_s_mean": mean_std([j.results["wall_time_s"] for j in ok])[0],
            "params": params[0] if len(params) == 1 else " ".join(map(str, params)) or None,
            "status": ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))),
        }


def sorted_rows(rows: list[Row]) -> list[Row]:
    """Best mean test acc first; configurations without a finished run last."""
    return sorted(rows, key=lambda r: (r.stats["test_acc_mean"] is None, -(r.stats["test_acc_mean"] or 0)))


# ---- writing ------------------------------------------------------------------------------------------
def _pct(v, digits=2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _diff_cell(s: dict) -> str:
    if s["baseline"]:
        return "baseline"
    if s["diff_mean"] is None:
        return "n/a"
    ci = (
        "n/a (one seed)"
        if s["diff_ci_low"] is None
        else f"[{100 * s['diff_ci_low']:+.2f}, {100 * s['diff_ci_high']:+.2f}]"
    )
    return f"{100 * s['diff_mean']:+.2f} {ci}"


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(r.stats)


def write_markdown(rows, jobs, missing, folders, target_acc, path: Path, plots: list[str]) -> None:
    common = sorted(set.intersection(*(set(r.config) for r in rows))) if rows else []
    datasets = sorted({str(j.results.get("dataset")) for j in jobs if j.results.get("dataset")})
    base = next((r for r in rows if r.baseline), None)
    lines = [
        "# Sweep report",
        "",
        f"Folders: {', '.join(f'`{f}`' for f in folders)}  ",
        f"Runs: {len(jobs)} ({sum(j.ok for j in jobs)} ok, {sum(not j.ok for j in jobs)} not ok"
        + (f", {len(missing)} without results.json" if missing else "")
        + f") · dataset: {', '.join(datasets) or 'n/a'} · baseline: **{base.label if base else 'n/a'}**  ",
        f"Same in every run: {' '.join(f'`{o}`' for o in common) or '(nothing beyond the defaults)'}",
        *_search_line(folders[0]),
        "",
        "Accuracies in %, mean ± std over seeds (test acc of the best-val checkpoint). Δ: mean paired per-seed"
        " difference to the baseline in points, with a 95% t-interval over seeds; an interval that excludes 0"
        " says the difference is larger than seed-to-seed noise. A final train acc far above best val acc means"
        f" overfitting. Epochs to {_pct(target_acc, 1)}%: mean over seeds that reached it (reached/ok).",
        "",
        f"| config | seeds | test acc | Δ vs baseline [95% CI] | best val acc | final train acc "
        f"| epochs to {_pct(target_acc, 1)}% | wall s | params | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.stats
        acc = _pct(s["test_acc_mean"]) + ("" if s["test_acc_std"] is None else f" ± {_pct(s['test_acc_std'])}")
        epochs = "n/a" if s["epochs_to_target_mean"] is None else f"{s['epochs_to_target_mean']:.1f}"
        wall = "n/a" if s["wall_time_s_mean"] is None else f"{s['wall_time_s_mean']:.1f}"
        name = f"**{s['config']}** (baseline)" if r.baseline else s["config"]
        lines.append(
            f"| {name} | {s['seeds'] or '-'} | {acc} | {_diff_cell(s)} | {_pct(s['val_acc_best_mean'])} "
            f"| {_pct(s['train_acc_last_mean'])} | {epochs} ({s['target_reached']}) | {wall} "
            f"| {s['params'] if s['params'] is not None else 'n/a'} | {s['status']} |"
        )
    lines += [""] + [f"![{p}]({p})" for p in plots]
    bad = [j for j in jobs if not j.ok]
    if bad or missing:
        lines += [
            "",
            "## Jobs that did not finish",
            "",
            "| job | config | seed | status | error |",
            "|---|---|---|---|---|",
        ]
        for j in bad:
            lines.append(
                f"| `{j.folder}` | {' '.join(j.config)} | {j.seed} | {j.results.get('status')} "
                f"| {j.results.get('error')} |"
            )
        lines += [f"| `{m}` | ? | ? | no results.json | killed before it finished? |" for m in missing]
    path.write_text("\n".join(lines) + "\n")


def _search_line(folder: Path) -> list[str]:
    """A search's sweep folder (hparams_search=...): its best trial by the value it optimized, from best.json."""
    try:
        best = json.loads((Path(folder) / "best.json").read_text())
    except (OSError, ValueError):
        return []
    b = best.get("best")
    if not b:
        return ["", f"Search: {best.get('n_trials')} trials, none finished ok (best.json)"]
    return [
        "",
        f"Search: {best.get('n_trials')} trials ({best.get('n_ok')} ok); best by {best.get('objective')}: trial "
        f"{b['trial']} (job {b['job']}), {_pct(b['value'])}%: {' '.join(f'`{o}`' for o in b['overrides'])} (best.json)",
    ]


def write_plots(rows: list[Row], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    written = []
    for column, title, name in (
        ("val_acc", "validation accuracy", "val_acc.png"),
        ("train_loss", "training loss", "train_loss.png"),
    ):
        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
        for i, r in enumerate(rows):
            curves = [
                {int(m["epoch"]) + 1: m[column] for m in j.metrics if m.get(column) is not None} for j in r.jobs if j.ok
            ]
            epochs = sorted({e for c in curves for e in c})
            if not epochs:
                continue
            values = [[c[e] for c in curves if e in c] for e in epochs]
            color = "black" if r.baseline else colors[i % len(colors)]
            label = f"{r.label} (baseline)" if r.baseline else r.label
            ax.plot(
                epochs,
                [statistics.fmean(v) for v in values],
                color=color,
                lw=2,
                marker="o",
                ms=3,
                label=label,
                ls="--" if r.baseline else "-",
            )
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.15, lw=0)
        ax.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch (line: mean over seeds, band: min-max)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        written.append(name)
    written.append(_plot_deltas(rows, folder, plt))
    return written


def _plot_deltas(rows: list[Row], folder: Path, plt) -> str:
    """Test-acc difference to the baseline with its 95% interval: the sweep's answer in one picture."""
    shown = [r for r in rows if not r.baseline and r.stats["diff_mean"] is not None]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(shown) + 1.8), dpi=110)
    for y, r in enumerate(reversed(shown)):
        s = r.stats
        d = 100 * s["diff_mean"]
        color = "tab:green" if d >= 0 else "tab:red"
        if s["diff_ci_low"] is not None:
            ax.errorbar(
                d,
                y,
                xerr=[[d - 100 * s["diff_ci_low"]], [100 * s["diff_ci_high"] - d]],
                fmt="o",
                color=color,
                capsize=4,
            )
        else:
            ax.plot(d, y, "o", color=color)
    base = next((r.label for r in rows if r.baseline), "?")
    ax.axvline(0, color="black", lw=1)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_yticks(range(len(shown)), [r.label for r in reversed(shown)])
    ax.set(xlabel="test accuracy - baseline (points), 95% CI over seeds", title=f"difference to the baseline: {base}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "test_acc_delta.png")
    plt.close(fig)
    return "test_acc_delta.png"


def write_report(folders: list[Path], target_acc: float = DEFAULT_TARGET_ACC, baseline: str | None = None) -> dict:
    """Writes report.md, report.csv and PNGs into folders[0]; returns what it found."""
    folders = [Path(f) for f in folders]
    for f in folders:
        if not f.is_dir():
            raise FileNotFoundError(f"{f}: not a folder (give sweep folders, e.g. logs/train/multiruns/<time>)")
    jobs, missing = find_jobs(folders)
    rows = group_rows(jobs, baseline)
    out = folders[0]
    if rows:
        compute(rows, target_acc)
        rows = sorted_rows(rows)
        write_csv(rows, out / "report.csv")
        plots = write_plots(rows, out)
    else:
        plots = []
    write_markdown(rows, jobs, missing, folders, target_acc, out / "report.md", plots)
    return {"rows": rows, "jobs": jobs, "missing": missing, "report": out / "report.md"}


def failures(found: dict) -> list[str]:
    """One line per job that did not finish ok, naming what differs from the other jobs."""
    configs = [set(j.config) for j in found["jobs"]]
    common = set.intersection(*configs) if configs else set()
    lines = [
        f"job {j.folder.name} ({' '.join(o for o in j.config if o not in common) or 'defaults'}, seed {j.seed}): "
        f"{with_status(j.results.get('status'), j.results.get('error'))}"
        for j in found["jobs"]
        if not j.ok
    ]
    return lines + [f"job {m.name}: no results.json" for m in found["missing"]]


class SweepReportCallback(Callback):
    """Hydra callback: after a sweep, write the report, then exit non-zero naming the jobs that failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))  # resolved once: the folder the jobs write into

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = getattr(self, "sweep_dir", None) or Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        settings = OmegaConf.select(config, "report", default=None) or {}
        found = write_report([sweep_dir], settings.get("target_acc", DEFAULT_TARGET_ACC), settings.get("baseline"))
        log.info("sweep report: %s", found["report"])
        bad = failures(found)
        # a search (hparams_search=...) scores a failed or diverged trial as bad and goes on: it fails only when
        # no trial finished ok
        search = OmegaConf.select(config, "hydra.sweeper.bad_score") is not None
        if bad and search and any(j.ok for j in found["jobs"]):
            log.warning("%d of %d trials did not finish ok (scored bad_score):", len(bad), len(found["jobs"]))
            for line in bad:
                log.warning("  %s", line)
        elif bad:
            print(
                f"error: {len(bad)} of {len(found['jobs']) + len(found['missing'])} jobs failed (report: "
                f"{found['report']}):",
                file=sys.stderr,
            )
            for line in bad:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trickbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders; the report goes into the first")
    parser.add_argument(
        "--target-acc", type=float, default=DEFAULT_TARGET_ACC, help="for 'epochs to target' (default %(default)s)"
    )
    parser.add_argument(
        "--baseline", default=None, help="overrides naming the baseline row, e.g. trick=none (default: the first)"
    )
    args = parser.parse_args(argv)
    try:
        found = write_report(args.folders, args.target_acc, args.baseline)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(found["report"].read_text())
    bad = failures(found)
    if bad:
        print(f"{len(bad)} jobs did not finish ok:", *bad, sep="\n  ", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
