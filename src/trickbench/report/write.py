"""The whole report from sweep folders (write_report: collect, stats, then render and plots), and the one-line
failures that the CLI and the sweep callback print after it."""

from pathlib import Path

from trickbench.errors import with_status
from trickbench.report.collect import find_jobs, group_rows
from trickbench.report.plots import write_plots
from trickbench.report.render import write_csv, write_markdown
from trickbench.report.stats import compute, sorted_rows

DEFAULT_TARGET_ACC = 0.85


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
