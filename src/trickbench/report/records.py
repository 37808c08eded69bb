"""Committed run records: what docs/results.md is rebuilt from on a fresh clone, copied from the results sweeps.

    python -m trickbench.report.records [--from logs/results] [--to docs/results/runs]
    python -m trickbench.report.records --sanitize [--to docs/results/runs]   (rewrite paths of records already there)
    python -m trickbench.report.records --restore [--from logs/results] [--to docs/results/runs]

For each job folder under <from>/<scale>/<part>/ (one with a results.json): its results.json, metrics.csv and config,
and, where its TensorBoard holds per-layer gradient norms, their first and last logged steps as grad_norm.json, go to
<to>/<scale>/<part>/<job>/; each sweep's multirun.yaml goes beside its jobs. The config is .hydra/config.yaml, or,
for a job first started in a resume= sitting, the one Hydra wrote to .hydra/resumed-<time>/ (the earliest): either
way the record's .hydra/config.yaml. A job with no config stops the copy before anything is copied. Nothing large:
no checkpoints, no event files. A record already there is replaced (a rerun job's newer results win). Every copied
text file names paths relative to the repository (record_paths.py): no machine's absolute path is committed.

--restore goes the other way, for a sweep to continue on a fresh clone or another machine: each <scale>/<part>/ of
the records whose sweep folder under <from> does not exist is copied there, so that resume= skips its finished
jobs (a job matches by what it trains; a dataset file's path is placement, sweep/context.py). Records of a preset
since changed are not this command's jobs: remove them before a new sweep of that part."""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from trickbench.report.record_paths import RESULTS, sanitize_records

SMALL_FILES = ("results.json", "metrics.csv")
CONFIG = ".hydra/config.yaml"


class NoConfig(ValueError):
    pass


def grad_norms(job: Path) -> dict | None:
    """grad_norm/<parameter> -> [[step, norm] at the first logged step, [step, norm] at the last], or None."""
    if not (job / "tensorboard").is_dir():
        return None
    from trickbench.report.results_plots import layer_norms

    norms = layer_norms(job)
    return {k: [list(v[0]), list(v[-1])] for k, v in norms.items() if v} or None


def job_config(job: Path) -> Path | None:
    """The config Hydra saved for the job: .hydra/config.yaml, else the first resumed sitting's."""
    if (job / CONFIG).exists():
        return job / CONFIG
    resumed = sorted(job.glob(".hydra/resumed-*/config.yaml"))
    return resumed[0] if resumed else None


def _jobs(source: Path) -> list[Path]:
    found = [p.parent for p in sorted(source.rglob("results.json"))]
    return [j for j in found if not any(p.startswith(".") for p in j.relative_to(source).parts)]


def _name(source: Path) -> str:
    """The results folder's name in the records: relative to the repository (here) when inside it."""
    here, where = Path.cwd().resolve(), source.resolve()
    return os.path.relpath(where, here) if where.is_relative_to(here) else RESULTS


def copy_records(source: Path, target: Path) -> list[Path]:
    """Every job's record from source (<scale>/<part>/...) into target at the same relative path; the jobs copied.
    NoConfig (one line) when a job has no config, before anything is copied."""
    jobs = _jobs(source)
    missing = [j for j in jobs if job_config(j) is None]
    if missing:
        raise NoConfig(
            f"{len(missing)} job(s) have no .hydra/config.yaml nor .hydra/resumed-*/config.yaml, first "
            f"{missing[0]}: their records would have no config"
        )
    copied = []
    for job in jobs:
        dest = target / job.relative_to(source)
        dest.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            if (job / name).exists():
                shutil.copyfile(job / name, dest / name)
        (dest / CONFIG).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(job_config(job), dest / CONFIG)
        if (norms := grad_norms(job)) is not None:
            (dest / "grad_norm.json").write_text(json.dumps(norms, indent=1, sort_keys=True) + "\n")
        copied.append(dest)
    for sweep in sorted(source.rglob("multirun.yaml")):
        dest = target / sweep.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sweep, dest)
    sanitize_records(target, {str(source.resolve()): _name(source), str(Path.cwd().resolve()): ""})
    return copied


def restore_records(records: Path, results: Path) -> list[Path]:
    """Copy each <scale>/<part>/ of records whose folder under results is absent; the sweep folders made."""
    made = []
    for part in sorted(p for scale in records.iterdir() if scale.is_dir() for p in scale.iterdir() if p.is_dir()):
        dest = results / part.relative_to(records)
        if not dest.exists():
            shutil.copytree(part, dest)
            made.append(dest)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trickbench.report.records", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, default=Path(RESULTS), help="<scale>/<part>/ sweeps")
    parser.add_argument("--to", dest="target", type=Path, default=Path("docs/results/runs"), help="the records")
    parser.add_argument("--sanitize", action="store_true", help="only rewrite the paths of the records in --to")
    parser.add_argument("--restore", action="store_true", help="copy records into --from where a sweep has no folder")
    args = parser.parse_args(argv)
    if args.restore:
        made = restore_records(args.target, args.source) if args.target.is_dir() else []
        print(f"restored {len(made)} sweep folder(s) from {args.target}: {', '.join(map(str, made)) or '-'}",
              file=sys.stderr)
        return 0
    if args.sanitize:
        changed = sanitize_records(args.target, {str(Path.cwd().resolve()): ""})
        print(f"rewrote the paths of {len(changed)} files under {args.target}", file=sys.stderr)
        return 0
    try:
        copied = copy_records(args.source, args.target)
    except NoConfig as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"copied {len(copied)} job records from {args.source} to {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
