"""The pilots on docs/results.md: the short runs, committed like any record, that chose a part's CPU scale. Each
curve pilot is a table of train accuracy along its steps (from each job's metrics.csv: the epochs' mean train
accuracy, with Part B's runs unaugmented) and a PNG of the same curves; the zero-gamma pilot, a table of Δs."""

from pathlib import Path

from trickbench.report import measures, results_tables
from trickbench.report.collect import find_jobs
from trickbench.report.plots import pyplot, write_png
from trickbench.report.premises import CHANCE_MARGIN
from trickbench.report.results_sections import preset_header

# preset -> the make target that runs it; in the page's order
CURVE_PILOTS = {
    "part_b_pilot": "make pilot-part-b",
    "part_b_pilot_long": "make pilot-part-b",
    "part_b_pilot_data": "make pilot-part-b",
    "part_b_solutions_pilot": "make pilot-part-b",
}
ZERO_GAMMA = "part_d_zero_gamma_pilot"
CHANCE = 0.10  # the curve pilots all run CIFAR-10
COLUMNS = 4  # train accuracy at this many steps, evenly spaced over the run


def off_chance(metrics: list[dict]) -> int | None:
    """The first logged step whose epoch trained above chance by more than the at-chance margin."""
    return next((int(m["step"]) for m in metrics if (m.get("train_acc") or 0) > CHANCE + CHANCE_MARGIN), None)


def _label(config: tuple[str, ...]) -> str:
    shown = (o for o in config if not o.startswith(("experiment=", "scale")))
    return " ".join(o.split("=", 1)[1].removeprefix("part_b/") for o in shown)


def curve_pilot(name: str, root: Path, conf_dir: Path, out: Path) -> list[str]:
    """One curve pilot's paragraph, table and PNG (under out's folder), or a line saying it has not run."""
    asks = preset_header(conf_dir / "experiment" / "results" / f"{name}.yaml")
    lines = [f"**Pilot `{name}`** (`{CURVE_PILOTS[name]}`). {asks}", ""]
    jobs, _ = find_jobs([root / "cpu" / name])
    jobs = [j for j in jobs if j.ok and j.metrics]
    if not jobs:
        return lines + ["Pilot: not run yet.", ""]
    last = max(len(j.metrics) for j in jobs)
    picks = sorted({round(last * (i + 1) / COLUMNS) - 1 for i in range(COLUMNS)})
    steps = [int(next(j.metrics[i]["step"] for j in jobs if len(j.metrics) > i)) for i in picks]
    columns = " | ".join(f"train, step {s}" for s in steps)
    lines += [
        f"| configuration (seed) | {columns} | off chance at step | last-epoch test |",
        "|---|" + "---|" * len(steps) + "---|---|",
    ]
    for job in jobs:
        cells = [f"{100 * job.metrics[i]['train_acc']:.1f}" if i < len(job.metrics) else "-" for i in picks]
        first = off_chance(job.metrics)
        test = measures.value(job, "test_last")
        lines.append(
            f"| {_label(job.config)} ({job.seed}) | " + " | ".join(cells)
            + f" | {first if first is not None else 'never'} | {'-' if test is None else f'{100 * test:.1f}'} |"
        )
    lines += ["", f"{len(jobs)} job(s) recorded; a configuration the pilot names and the table does not list has not "
              "finished yet (the pilot's command continues it)."]
    png = out.with_suffix("") / "cpu" / f"pilot_{name}.png"
    _plot(jobs, name, png)
    return lines + ["", f"![{name}: train accuracy per epoch]({png.relative_to(out.parent)})", ""]


def _plot(jobs, name: str, png: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=90)
    for job in jobs:
        ax.plot([m["step"] for m in job.metrics], [100 * m["train_acc"] for m in job.metrics], "o-", ms=3,
                label=f"{_label(job.config)} ({job.seed})")
    ax.axhspan(100 * (CHANCE - CHANCE_MARGIN), 100 * (CHANCE + CHANCE_MARGIN), color="grey", alpha=0.2,
               label="at chance (10 ± 2)")
    ax.set(xlabel="optimizer step", ylabel="train accuracy (%), epoch mean", title=f"pilot {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    write_png(fig, png)


def zero_gamma(root: Path) -> list[str]:
    """The zero-gamma pilot's figures (experiment=results/part_d_zero_gamma_pilot), if its records are there."""
    folder = root / "cpu" / ZERO_GAMMA
    head = [
        "**Pilot: zero-gamma at CPU width.** How long ResNet-20 must train before zero-gamma stops costing "
        "accuracy (`make pilot-zero-gamma`): Δ last-epoch test accuracy of zero-gamma alone vs the baseline."
    ]
    if not folder.is_dir() or not any(folder.rglob("results.json")):
        return head + ["", "Pilot: not run yet.", ""]
    found, _ = results_tables.tables(folder, None)
    lines = ["", "| length | epochs | Δ [95% CI] |", "|---|---|---|"]
    for table in found:
        lengths = sorted(
            {o for r in table.rows for o in r.config if o.startswith("results.length=")},
            key=lambda o: int("".join(c for c in o if c.isdigit()) or 0),
        )
        for length in lengths:
            base = table.row(f"{length} variant=part_d/baseline")
            zero = table.row(f"{length} variant=part_d/alone_zero_gamma")
            if base and zero:
                epochs = sorted({j.results.get("epochs") for j in base.jobs if j.ok})
                text, _ = measures.interval_text(
                    measures.paired(measures.per_seed(zero, "test_last"), measures.per_seed(base, "test_last"))
                )
                lines.append(f"| {length.split('=')[1]} | {'/'.join(map(str, epochs))} | {text} |")
    return head + lines + [""]


def pilots(root: Path, conf_dir: Path, out: Path) -> list[str]:
    """The page's Pilots section."""
    lines = [
        "## Pilots",
        "",
        "Short runs at the CPU scale, committed like any record, that chose a part's data size and length (each "
        "part's setup says what it took from them). *off chance at step*: the first epoch whose mean train accuracy "
        "is over 12% (chance, 10%, plus the 2-point margin of *does not learn*).",
        "",
    ]
    for name in CURVE_PILOTS:
        if (conf_dir / "experiment" / "results" / f"{name}.yaml").exists():  # a test's conf/ may hold a few presets
            lines += curve_pilot(name, root, conf_dir, out)
    return lines + zero_gamma(root)
