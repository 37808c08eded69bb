"""Scaling across processes, as a user starts them (`python train.py` in a subprocess). Not a test: copy its table
rows into docs/benchmarks.md.

    python benchmarks/scaling.py ddp --device cpu --ranks 2           # gloo DDP, 2 ranks vs 1, same global batch
    python benchmarks/scaling.py packing --device cuda --jobs 8       # hydra/launcher=gpus, jobs_per_gpu 1, 2, 4

ddp: training images/s (results.json images_per_s: rank 0's rate x ranks, validation and checkpoints excluded) of
one process against N DDP ranks, each with batch_size/N, so that the global batch and the steps per epoch are the
same; pairs run alternately (1, N, 1, N, ...) and the speed-up is the median of the pairs' ratios. On a CPU the
ranks share the cores (each gets cores/N torch threads, as `threads=null` gives them).
packing: wall time of a whole sweep of --jobs small jobs on one GPU with K = 1, 2, 4 jobs at a time.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_common_args, command_line, machine, median, print_table, run_overrides, write_json

ROOT = Path(__file__).resolve().parents[1]
DDP_BASE = ["data=fashion_mnist", "trainer.enable_progress_bar=false", "test_after_fit=false"]


def train(args: list[str], timeout: float = 1800) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        sys.exit(f"error: python train.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc, time.perf_counter() - start


def ddp_run(args, ranks: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="trickbench-ddp-") as tmp:
        place = ["trainer=ddp", f"trainer.devices={ranks}"] if ranks > 1 else []
        batch = f"data.batch_size={args.global_batch // ranks}"
        overrides = [*DDP_BASE, *run_overrides(args, "fashion_mnist"), *place, batch, f"hydra.run.dir={tmp}"]
        train([*overrides, f"trainer.max_epochs={args.epochs}"])
        return json.loads((Path(tmp) / "results.json").read_text())


def ddp(args) -> None:
    if args.global_batch % args.ranks:
        sys.exit(f"error: --global-batch={args.global_batch}: a multiple of --ranks={args.ranks}")
    for _ in range(args.warmup):
        ddp_run(args, 1), ddp_run(args, args.ranks)
    pairs = []
    for i in range(args.repeats):
        one, many = ddp_run(args, 1), ddp_run(args, args.ranks)
        pairs.append({"one": one["images_per_s"], "many": many["images_per_s"], "threads": many["threads"]})
        print(
            f"pair {i}: 1 process {one['images_per_s']:.0f} img/s, {args.ranks} ranks {many['images_per_s']:.0f} "
            f"img/s ({many['threads']} threads each)",
            flush=True,
        )
    speedup = median([p["many"] / p["one"] for p in pairs])
    label = f"{args.device} ({'gloo' if args.device == 'cpu' else 'nccl'})"
    rows = [
        [
            machine(args.device),
            label,
            f"{args.ranks} vs 1",
            str(args.global_batch),
            f"{median([p['one'] for p in pairs]):.0f}",
            f"{median([p['many'] for p in pairs]):.0f}",
            f"{speedup:.2f}x (median of {len(pairs)} pairs)",
        ]
    ]
    header = ["machine", "backend", "ranks", "global batch", "img/s 1 process", f"img/s {args.ranks} ranks", "speed-up"]
    print_table(command_line(__file__, None), header, rows)
    write_json(args.json, {"pairs": pairs, "speedup": speedup})


def packing(args) -> None:
    rows, results = [], {}
    for k in args.per_gpu:
        with tempfile.TemporaryDirectory(prefix="trickbench-pack-") as tmp:
            seeds = ",".join(map(str, range(args.jobs)))
            launcher = ["hydra/launcher=gpus", "hydra.launcher.devices=[0]", f"hydra.launcher.jobs_per_gpu={k}"]
            overrides = [*DDP_BASE, *run_overrides(args, "fashion_mnist"), f"trainer.max_epochs={args.epochs}"]
            _, seconds = train(["-m", *overrides, *launcher, f"seed={seeds}", f"hydra.sweep.dir={tmp}"])
        results[k] = seconds
        print(f"jobs_per_gpu={k}: {args.jobs} jobs in {seconds:.1f} s", flush=True)
        rows.append([machine(args.device), str(args.jobs), str(k), f"{seconds:.1f}", f"{results[1] / seconds:.2f}x"])
    print_table(command_line(__file__, None), ["machine", "jobs", "jobs_per_gpu", "sweep wall s", "vs K=1"], rows)
    write_json(args.json, {"sweep_s": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("ddp", help="N DDP ranks vs 1 process")
    d.add_argument("--ranks", type=int, default=2)
    d.add_argument("--global-batch", type=int, default=256)
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--repeats", type=int, default=3, help="timed pairs (default 3)")
    p = sub.add_parser("packing", help="a sweep on one GPU with jobs_per_gpu 1, 2, 4 (needs a GPU)")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--epochs", type=int, default=2)
    for s in (d, p):
        add_common_args(s)
    args = parser.parse_args()
    (ddp if args.what == "ddp" else packing)(args)


if __name__ == "__main__":
    main()
