"""Committed run records: what docs/results.md is rebuilt from on a fresh clone, copied from the results sweeps.

    python -m trickbench.report.records [--from logs/results] [--to docs/results/runs]

For each job folder under <from>/<scale>/<part>/ (one with a results.json): its results.json, metrics.csv and
.hydra/config.yaml, and, where its TensorBoard holds per-layer gradient norms, their first and last logged steps as
grad_norm.json, go to <to>/<scale>/<part>/<job>/; each sweep's multirun.yaml goes beside its jobs. Nothing large:
no checkpoints, no event files. A record already there is replaced (a rerun job's newer results win)."""

import argparse
import json
import shutil
import sys
from pathlib import Path

SMALL_FILES = ("results.json", "metrics.csv", ".hydra/config.yaml")


def grad_norms(job: Path) -> dict | None:
    """grad_norm/<parameter> -> [[step, norm] at the first logged step, [step, norm] at the last], or None."""
    if not (job / "tensorboard").is_dir():
        return None
    from trickbench.report.results_plots import layer_norms

    norms = layer_norms(job)
    return {k: [list(v[0]), list(v[-1])] for k, v in norms.items() if v} or None


def copy_records(source: Path, target: Path) -> list[Path]:
    """Every job's record from source (<scale>/<part>/...) into target at the same relative path; the jobs copied."""
    copied = []
    for results in sorted(source.rglob("results.json")):
        job = results.parent
        relative = job.relative_to(source)
        if any(p.startswith(".") for p in relative.parts):
            continue
        dest = target / relative
        for name in SMALL_FILES:
            if (job / name).exists():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(job / name, dest / name)
        if (norms := grad_norms(job)) is not None:
            (dest / "grad_norm.json").write_text(json.dumps(norms, indent=1, sort_keys=True) + "\n")
        copied.append(dest)
    for sweep in sorted(source.rglob("multirun.yaml")):
        dest = target / sweep.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sweep, dest)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trickbench.report.records", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, default=Path("logs/results"), help="<scale>/<part>/ sweeps")
    parser.add_argument("--to", dest="target", type=Path, default=Path("docs/results/runs"), help="the records")
    args = parser.parse_args(argv)
    copied = copy_records(args.source, args.target)
    print(f"copied {len(copied)} job records from {args.source} to {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
