"""What overhead.py and speedrun.py share: composing a config as train.py would, one trickbench run as a user
makes it, clocks that wait for the GPU, the machine's name, and the markdown table rows for docs/benchmarks.md."""

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from trickbench.config.validate import compose_run_config as compose_cfg
from trickbench.train import run

ROOT = Path(__file__).resolve().parents[1]
# data.source when --source is not given: a copy brought along to the GPU machine (.bench/, git-ignored),
# else the shared offline mirror of the dev machine
DEFAULT_SOURCES = {
    "fashion_mnist": (ROOT / ".bench/fashion-mnist", ROOT / "../shared/datasets/fashion-mnist"),
    "cifar10": (ROOT / ".bench/cifar10-jpeg.tar.gz", ROOT / "../shared/datasets/cifar10-jpeg.tar.gz"),
}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--source", help="data.source (default: .bench/ copy, else ../shared/datasets/)")
    parser.add_argument("--data-root", help="data.root, where the decoded cache lives (default: the config's data/)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (default 1)")
    parser.add_argument("--subset", type=int, help="smoke tests: data.subset (val_size a fifth of it)")
    parser.add_argument("--limit-batches", type=int, help="smoke tests: at most this many batches per epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, both sides")
    parser.add_argument("--json", help="also write every run's numbers to this file")


def run_overrides(args, dataset: str) -> list[str]:
    """The overrides every run of this invocation shares: data, device and the smoke-test limits."""
    source = args.source or next((str(p) for p in DEFAULT_SOURCES[dataset] if p.exists()), None)
    out = [f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]
    out += [f"data.source={Path(source).resolve()}"] if source else []
    out += [f"data.root={Path(args.data_root).resolve()}"] if args.data_root else []
    if args.subset:
        out += [f"data.subset={args.subset}", f"data.val_size={max(args.subset // 5, 1)}"]
    if args.limit_batches:
        out += [f"trainer.limit_{s}_batches={args.limit_batches}" for s in ("train", "val", "test")]
    return out + list(args.set)


def trickbench_run(overrides: list[str], device: str) -> dict:
    """One train.run(cfg) in a fresh temporary run folder (default callbacks, loggers, validation and the test
    after fit, as `python train.py` runs it); results.json plus the wall time of the whole call."""
    with tempfile.TemporaryDirectory(prefix="trickbench-bench-") as tmp:
        cfg = compose_cfg(overrides, Path(tmp))
        start = clock(device)
        results = run(cfg)
        results["run_wall_s"] = clock(device) - start
    if "timing" not in results:
        sys.exit("error: results.json has no 'timing' (a trickbench without the EpochTimer callback)")
    return results


def clock(device: str) -> float:
    """perf_counter after the GPU's queue is empty: a reading before that would miss queued work."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def cpu_model() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")), "CPU")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def median(values: list[float]) -> float:
    return statistics.median(values)


def command_line(script: str, argv: list[str] | None) -> str:
    path = Path(script).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return " ".join(["python", str(shown), *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def print_table(command: str, header: list[str], rows: list[list[str]]) -> None:
    """A markdown table under the date and the command line, its rows dated, ready for docs/benchmarks.md."""
    today = date.today().isoformat()
    print(f"\n{today}  {command}", flush=True)
    print("| date | " + " | ".join(header) + " |")
    print("|" + "---|" * (len(header) + 1))
    for row in rows:
        print(f"| {today} | " + " | ".join(row) + " |", flush=True)


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
