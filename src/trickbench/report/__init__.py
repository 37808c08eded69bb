"""The sweep report: which configuration helped, by how much, and how sure we are (usage: cli.py).

collect.py finds a sweep's jobs and groups them into rows, stats.py computes each row's numbers, render.py
writes report.md and report.csv, plots.py the PNGs; write.py runs those steps (write_report) for the CLI
(cli.py, python -m trickbench.report) and for the Hydra callback that runs it after every sweep (callback.py).
The names below are what other code imports from trickbench.report."""

from trickbench.report.callback import SweepReportCallback
from trickbench.report.cli import main
from trickbench.report.collect import Job, Row, find_jobs, group_rows
from trickbench.report.plots import write_plots
from trickbench.report.render import CSV_COLUMNS, write_csv, write_markdown
from trickbench.report.stats import compute, epochs_to, mean_std, paired_ci, sorted_rows
from trickbench.report.write import DEFAULT_TARGET_ACC, failures, write_report

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TARGET_ACC",
    "Job",
    "Row",
    "SweepReportCallback",
    "compute",
    "epochs_to",
    "failures",
    "find_jobs",
    "group_rows",
    "main",
    "mean_std",
    "paired_ci",
    "sorted_rows",
    "write_csv",
    "write_markdown",
    "write_plots",
    "write_report",
]
