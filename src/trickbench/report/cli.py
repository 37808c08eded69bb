"""The sweep report: which configuration helped, by how much, and how sure we are.

    python -m trickbench.report <sweep folder> [<more folders>...] [--target-acc 0.85] [--baseline trick=none]

Reads every job's results.json and metrics.csv (never stdout), groups runs by their overrides minus the
seed, and writes report.md, report.csv and PNGs into the first folder. Also run after every sweep by
SweepReportCallback (conf/hydra/default.yaml)."""

import argparse
import sys
from pathlib import Path

from trickbench.report.write import DEFAULT_TARGET_ACC, failures, write_report


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
