"""The lr curves of docs/results.md: the lr each epoch trained at, as the run logged it, never simulated from
today's conf/. Read from metrics.csv's `lr` column in records whose results.json says what that column holds
(`metrics_lr`: "epoch_start", the lr of the epoch's first optimizer step). Older records logged the lr after the
epoch's scheduler step (the next epoch's): the page says so and draws nothing."""

import os
from pathlib import Path

from trickbench.report import claims, results_plots
from trickbench.report.results_tables import dataset_name

LOGGED = {"epoch_start": "the lr of each epoch's first optimizer step"}


def _first_seed(row):
    ok = sorted((j for j in row.jobs if j.ok), key=lambda j: str(j.seed)) if row else []
    return ok[0] if ok else None


def lr_lines(preset, scale: str, found: list, out: Path) -> list[str]:
    """The lr plot of the preset's lr_curves rows (else its baseline), one run each (its first seed), or why not."""
    wanted = preset.results.get("lr_curves") or [preset.results.get("baseline") or ""]
    curves, predate, what = {}, [], set()
    for table in found:
        for overrides in wanted:
            job = _first_seed(table.row(overrides) if overrides else table.base)
            if job is None:
                continue
            name = claims.label(overrides) or "all runs"
            name += f", {dataset_name(table.dataset)}" if len(found) > 1 else ""
            logged = [m.get("lr") for m in job.metrics]
            if job.results.get("metrics_lr") not in LOGGED or not logged or None in logged:
                predate.append(name)
                continue
            what.add(LOGGED[job.results["metrics_lr"]])
            curves[f"{name} (seed {job.seed})"] = (logged, 1)
    lines = []
    if curves:
        title = f"{preset.name}, {scale.upper()} scale: lr per epoch, as logged"
        png = results_plots.lr_plot(curves, title, out.with_suffix("") / scale / f"{preset.name}_lr.png")
        lines += [
            f"![learning rate per epoch]({os.path.relpath(png, out.parent)})",
            "",
            f"The lr each epoch trained at, as the runs logged it (metrics.csv `lr`: {'; '.join(sorted(what))}).",
            "",
        ]
    if predate:
        lines += [
            f"lr schedule of {', '.join(predate)}: not drawn. These records predate the per-epoch lr: their "
            "metrics.csv `lr` was logged after the epoch's scheduler step (the next epoch's lr), and the page does "
            "not simulate it from today's conf/.",
            "",
        ]
    return lines
