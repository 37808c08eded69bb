"""Finding a sweep's jobs in its folders and grouping them into rows: one per configuration (its overrides
minus the seed), one of them the baseline."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from trickbench.sweep.context import what_it_trains


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
