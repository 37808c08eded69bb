"""Accuracy parity of bf16-mixed against 32-true on the CPU: the same configuration in both precisions, 3 seeds,
the paired per-seed test difference (bf16 minus fp32) with its 95% t-interval. Not a test: the evidence behind
trainer.precision=null choosing bf16-mixed on a CPU with native bfloat16; copy its table into docs/benchmarks.md.

    python benchmarks/parity.py                       # every case, sweeps into logs/parity/<case>/ (resumable)
    python benchmarks/parity.py --case resnet20_cifar --seeds 3,4,5,6,7   # into resnet20_cifar+seeds3-4-5-6-7/

Each case is one `python train.py -m ... trainer.precision=32-true,bf16-mixed seed=...` sweep, two 1-thread jobs
at once (joblib); rerunning the script continues each sweep (resume=): finished jobs are skipped. Seeds other than
0,1,2 go into a sibling folder (a sweep continues only the command that started it); the table pairs every seed found.
Parity: the interval includes 0 and the mean difference is within 1 point. Images/s are of jobs that shared the
cores with another job, so only their ratio within a case means something.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from common import DEFAULT_SOURCES, ROOT, command_line, cpu_model, print_table

from trickbench.report.stats import paired_ci

CIFAR_LECTURE = ["data=cifar10", "init=glorot_uniform", "optimizer=adam", "optimizer.lr=1e-3", "scheduler=none"]
CASES = {  # name: (what it is, overrides)
    "cnn_fashion": ("default cnn, Fashion-MNIST 12k train, 10 epochs", ["data.subset=12000", "trainer.max_epochs=10"]),
    "cnn12_cifar": (
        "lecture 12-conv at half width (32-256) + BN, CIFAR-10 4k, 6 epochs",
        [*CIFAR_LECTURE, "model=cnn_12conv", "model.channels=[32,64,128,256]", "norm=batch"]
        + ["data.subset=4000", "trainer.max_epochs=6"],
    ),
    "resnet20_cifar": (
        "ResNet-20, Nesterov 0.1 cosine, crop+flip, CIFAR-10 4k, 8 epochs",
        ["data=cifar10", "model=resnet20", "optimizer=nesterov", "scheduler=cosine", "augment=crop_flip"]
        + ["data.subset=4000", "trainer.max_epochs=8"],
    ),
    "sigmoid_2block": (
        "Part B's 2-block sigmoid net (16, 32; FC 512; inputs in [0,1]), CIFAR-10 8k, 8 epochs",
        [*CIFAR_LECTURE, "activation=sigmoid", "norm=none", "augment=none", "data.normalize=none"]
        + ["model.channels=[16,32]", "model.head=[512]", "data.subset=8000", "trainer.max_epochs=8"],
    ),
}
PRECISIONS = ("32-true", "bf16-mixed")
DEFAULT_SEEDS = "0,1,2"


def sweep(case: str, seeds: str, out: Path) -> int:
    """The case's sweep into out (continued where it stopped); the command's exit status."""
    _, overrides = CASES[case]
    dataset = "cifar10" if "data=cifar10" in overrides else "fashion_mnist"
    source = next((p for p in DEFAULT_SOURCES[dataset] if p.exists()), None)
    where = f"resume={out}" if out.exists() else f"hydra.sweep.dir={out}"
    cmd = [sys.executable, "train.py", "-m", *overrides, f"trainer.precision={','.join(PRECISIONS)}"]
    cmd += [f"seed={seeds}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.enable_progress_bar=false"]
    cmd += [f"data.source={source.resolve()}"] if source else []
    print("$", " ".join(cmd[1:] + [where]), flush=True)
    return subprocess.run([*cmd, where], cwd=ROOT).returncode


def folder(out: Path, case: str, seeds: str) -> Path:
    return out / (case if seeds == DEFAULT_SEEDS else f"{case}+seeds{seeds.replace(',', '-')}")


def jobs(out: Path) -> list[dict]:
    """The ok jobs of a case's sweeps: out itself and its sibling folders of other seeds."""
    found = []
    for path in sorted([*out.glob("*/results.json"), *out.parent.glob(f"{out.name}+seeds*/*/results.json")]):
        r = json.loads(path.read_text())
        if r.get("status") == "ok":
            precision = next(o.split("=", 1)[1] for o in r["overrides"] if o.startswith("trainer.precision="))
            found.append({**r, "precision_asked": precision})
    return found


def row(case: str, out: Path) -> list[str]:
    found = jobs(out)
    by = {p: {r["seed"]: r for r in found if r["precision_asked"] == p} for p in PRECISIONS}
    seeds = sorted(set(by["32-true"]) & set(by["bf16-mixed"]))
    if not seeds:
        return [case, CASES[case][0], "not run", "", "", "", "", ""]
    acc = {p: [100 * by[p][s]["test"]["acc"] for s in seeds] for p in PRECISIONS}
    train = {p: [100 * by[p][s]["train"]["acc_last"] for s in seeds] for p in PRECISIONS}
    rate = {p: statistics.median(by[p][s]["images_per_s"] for s in seeds) for p in PRECISIONS}
    diff, low, high = paired_ci([b - f for f, b in zip(acc["32-true"], acc["bf16-mixed"], strict=True)])

    def ms(values):
        return (
            f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
            if len(values) > 1
            else f"{values[0]:.2f}"
        )

    interval = "n/a (one seed)" if low is None else f"[{low:+.2f}, {high:+.2f}]"
    parity = low is not None and low <= 0 <= high and abs(diff) <= 1.0
    return [
        case,
        f"{CASES[case][0]}; {len(seeds)} seeds",
        f"{ms(acc['32-true'])} (train {statistics.fmean(train['32-true']):.1f})",
        f"{ms(acc['bf16-mixed'])} (train {statistics.fmean(train['bf16-mixed']):.1f})",
        f"{diff:+.2f} {interval}",
        "**yes**" if parity else f"**no** (bf16 {'higher' if diff > 0 else 'lower'})",
        f"{rate['32-true']:,.0f} / {rate['bf16-mixed']:,.0f}",
        f"{rate['bf16-mixed'] / rate['32-true']:.2f}",
    ]


HEADER = [
    "case",
    "what",
    "test acc % fp32",
    "test acc % bf16",
    "bf16 - fp32 (paired, 95% CI)",
    "parity",
    "train img/s fp32 / bf16",
    "speed-up",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=list(CASES), help="default: every case")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS)
    parser.add_argument("--out", default=str(ROOT / "logs" / "parity"))
    parser.add_argument("--table-only", action="store_true", help="no training: the table from the sweeps there")
    args = parser.parse_args(argv)
    cases = args.case or list(CASES)
    failed = 0
    if not args.table_only:
        failed = sum(sweep(c, args.seeds, folder(Path(args.out), c, args.seeds)) != 0 for c in cases)
    print(f"\nCPU {cpu_model()}, torch {torch.__version__}; each job 1 torch thread, 2 jobs at once")
    print_table(command_line(__file__, argv), HEADER, [row(c, Path(args.out) / c) for c in cases])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
