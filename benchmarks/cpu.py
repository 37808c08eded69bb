"""CPU training speed per net, side by side in one process: the bare PyTorch loop of overhead.py in fp32 and in bf16
autocast, trickbench in 32-true and with trainer.precision=null (auto: bf16-mixed where the CPU has native bf16).
Not a test: copy its tables into docs/benchmarks.md.

    python benchmarks/cpu.py                          # the four nets, 2 rounds of the four sides
    python benchmarks/cpu.py --net cnn12 --knobs      # and trickbench auto with each CPU knob switched
    python benchmarks/cpu.py --net cnn12 --profile    # where one trickbench auto epoch's time goes, by kind of op

The sides alternate (bare fp32, bare bf16, trickbench fp32, trickbench auto, then again), after one untimed round
that fills oneDNN's kernel cache, so a load that comes and goes hits every side alike; figures are medians of the
rounds. Each run is one epoch of --batches training batches (validation and test limited to one batch).
GFLOP/s: train images/s x the FLOPs of one image's forward and backward, counted by torch's FlopCounterMode on one
fp32 batch (convolutions and matrix products, forward and both backward products; normalization, activations and
the optimizer are not counted: they are a few percent of a conv net's FLOPs).
Peak: torch threads x FMA pipes x float32 lanes per pipe x 2 FLOP x clock, from /proc/cpuinfo: 16 lanes with
AVX-512 on Intel, 8 on AMD Zen (its AVX-512 runs on two 256-bit pipes) and with AVX2 only, 2 FMA pipes per core,
the clock measured: one chain of dependent adds per thread at once (an add a cycle; a VM's "cpu MHz" is the nominal
clock, turbo runs above it), else the kernel's maximum frequency, else "cpu MHz". AVX512_BF16's dot
product does twice the float32 FLOPs per instruction, so the bf16 peak is twice that (AMX: far more, not computed).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from common import (
    ROOT,
    _cpuinfo,
    add_common_args,
    command_line,
    compose_cfg,
    cpu_model,
    print_table,
    run_overrides,
    write_json,
)
from overhead import bare_loop, trickbench_side
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils.flop_counter import FlopCounterMode

from trickbench import speed
from trickbench.data import DATASETS
from trickbench.models import build_model

CIFAR = ["data=cifar10", "norm=batch", "optimizer=nesterov", "augment=crop_flip", "data.batch_size=128"]
NETS = {  # name: (dataset, overrides)
    "cnn": ("fashion_mnist", ["data.batch_size=128"]),  # the default run: cnn, Adam, no augmentation
    "cnn12": ("cifar10", [*CIFAR, "model=cnn_12conv"]),  # the lecture's 12-conv, 64-512 channels, + BN
    "resnet20": ("cifar10", [*CIFAR, "model=resnet20"]),
    "speednet": ("cifar10", [*CIFAR, "model=speednet", "activation=gelu"]),
}
SIDES = {  # name: (bare loop?, trainer.precision)
    "bare fp32": (True, "32-true"),
    "bare bf16": (True, "bf16-mixed"),
    "trickbench fp32": (False, "32-true"),
    "trickbench auto": (False, "null"),
}
KNOBS = {  # trickbench auto with one switch changed (overrides, oneDNN's float32 math for convs and matmuls)
    "channels_last": (["model.channels_last=true"], None),
    "compile": (["compile=true"], None),
    "1 thread": (["threads=1"], None),
    "augment=none": (["augment=none"], None),
    "32-true, oneDNN bf16 math": (["trainer.precision=32-true"], "bf16"),
}


def flops_per_image(cfg) -> float:
    """Forward + backward FLOPs of one image, counted on one fp32 batch of the net this config builds."""
    shape = DATASETS[cfg.data.name].shape
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10)
    x = torch.randn(cfg.data.batch_size, *shape)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() / len(x)


# 8 dependent adds a loop turn, each 1 cycle on any x86 core: a turn takes 8 cycles, whatever the loop's own overhead
CLOCK_LOOP = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
int main(void) {
    uint64_t x = 0, turns = 200000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < turns; i++)
        __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", 8.0 * turns / ((b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec)) / 1e9 + 0 * (double)x);
    return 0;
}
"""


def measured_clock_ghz(threads: int) -> float | None:
    """The clock the cores run at under load (a VM's /proc/cpuinfo shows the nominal one; turbo runs above it): a
    chain of dependent adds, one copy per thread at once, the slowest copy's adds per second. None without cc/x86."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "clock.c", Path(tmp) / "clock"
        src.write_text(CLOCK_LOOP)
        if subprocess.run(["cc", "-O1", "-o", str(exe), str(src)], capture_output=True).returncode != 0:
            return None
        copies = [subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True) for _ in range(threads)]
        return min(float(c.communicate()[0]) for c in copies)


def peak_gflops(threads: int) -> tuple[float, str]:
    """float32 FMA peak of `threads` cores and how it was computed."""
    info = "\n".join(_cpuinfo())
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    amd = "AuthenticAMD" in info
    lanes = 16 if "avx512f" in flags and not amd else 8 if ("avx2" in flags or "avx512f" in flags) else 4
    max_khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    measured = measured_clock_ghz(threads)
    if measured:
        ghz, where = measured, f"measured: {threads} chains of dependent adds at once"
    elif max_khz.exists():
        ghz, where = int(max_khz.read_text()) / 1e6, "cpuinfo_max_freq"
    else:
        mhz = next((ln.split(":")[1] for ln in info.splitlines() if ln.startswith("cpu MHz")), "0")
        ghz, where = float(mhz) / 1e3, "cpu MHz"
    peak = threads * 2 * lanes * 2 * ghz
    return peak, f"{threads} cores x 2 FMA pipes x {lanes} fp32 lanes x 2 FLOP x {ghz:.2f} GHz ({where})"


def one_run(side: str, extra: list[str], dataset_overrides: list[str]) -> dict:
    bare, precision = SIDES[side]
    overrides = [*dataset_overrides, *extra, f"trainer.precision={precision}"]
    if bare:
        cfg = compose_cfg(overrides)
        return {"images_per_s": bare_loop(cfg, "cpu", 1, None)["train_images_per_s"], "precision": precision}
    out = trickbench_side(overrides, "cpu", 1)
    return {"images_per_s": out["train_images_per_s"], "precision": precision}


def measure(net: str, args) -> dict:
    dataset, net_overrides = NETS[net]
    base = [*net_overrides, *run_overrides(args, dataset)]
    base += [
        f"trainer.limit_train_batches={args.batches}",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    base += [] if args.subset else [f"data.subset={args.batches * 128 + 256}"]  # the batches, a small val split
    sides = {side: [] for side in SIDES} | ({f"auto + {k}": [] for k in KNOBS} if args.knobs else {})

    def run_side(side):
        if not side.startswith("auto + "):
            return one_run(side, [], base)["images_per_s"]
        overrides, fp32_math = KNOBS[side[7:]]
        for backend in (torch.backends.mkldnn.conv, torch.backends.mkldnn.matmul):
            backend.fp32_precision = fp32_math or "none"
        try:
            return trickbench_side([*base, "trainer.precision=null", *overrides], "cpu", 1)["train_images_per_s"]
        finally:
            torch.backends.mkldnn.conv.fp32_precision = torch.backends.mkldnn.matmul.fp32_precision = "none"

    for _ in range(args.warmup):  # untimed: oneDNN builds its kernels for each shape and precision once per process
        for side in sides:
            run_side(side)
    for r in range(args.rounds):
        for side in sides:
            sides[side].append(run_side(side))
        print(f"{net} round {r}: " + ", ".join(f"{s} {v[-1]:,.0f}" for s, v in sides.items()), flush=True)
    cfg = compose_cfg(base)
    return {"net": net, "flops_per_image": flops_per_image(cfg), "images_per_s": sides, "overrides": base}


CATEGORIES = [  # (kind, substrings of aten op names); the first that matches an op's name is its kind
    ("convolution forward", ("mkldnn_convolution", "onednn_convolution", "_convolution", "conv2d")),
    ("convolution backward", ("convolution_backward",)),
    ("batch norm", ("batch_norm",)),
    ("activation, pooling, dropout", ("relu", "gelu", "max_pool", "avg_pool", "dropout", "threshold")),
    ("linear layers", ("addmm", "aten::mm", "aten::matmul", "aten::linear")),
    ("optimizer", ("_foreach", "sgd", "adam", "lerp")),
    ("bf16 casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("data: slicing, crop, flip, normalize", ("index", "gather", "where", "flip", "pad", "randperm", "sub", "div")),
]


class TrainProfile(L.Callback):
    """torch.profiler over the first epoch's training batches only (started at the epoch's start, stopped when
    validation starts): the span EpochTimer's train_s measures."""

    last = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.prof = torch_profile(activities=[ProfilerActivity.CPU])
        self.prof.__enter__()

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking and getattr(self, "prof", None) is not None:
            self.prof.__exit__(None, None, None)
            TrainProfile.last, self.prof = self.prof, None


def profile(net: str, args) -> list[list[str]]:
    """Self time of each kind of op in the training batches of one trickbench auto epoch (after one warm run),
    against the epoch's training seconds: what remains is Python, Lightning and the ops not listed."""
    dataset, net_overrides = NETS[net]
    base = [*net_overrides, *run_overrides(args, dataset), f"trainer.limit_train_batches={args.batches}"]
    base += ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", f"data.subset={args.batches * 128 + 256}"]
    base += ["trainer.precision=null", "+trainer.num_sanity_val_steps=0"]
    trickbench_side(base, "cpu", 1)
    train_s = trickbench_side([*base, "+callbacks.profile._target_=cpu.TrainProfile"], "cpu", 1)["train_s"]
    spent = dict.fromkeys([k for k, _ in CATEGORIES], 0.0)
    for event in sys.modules["cpu"].TrainProfile.last.key_averages():
        kind = next((k for k, names in CATEGORIES if any(n in event.key for n in names)), None)
        if kind and event.key.startswith("aten::"):
            spent[kind] += event.self_cpu_time_total / 1e6
    out = [[net, kind, f"{s:.2f}", f"{100 * s / train_s:.0f}%"] for kind, s in spent.items()]
    rest = train_s - sum(spent.values())
    out.append([net, "the rest: Python, Lightning, ops not listed", f"{rest:.2f}", f"{100 * rest / train_s:.0f}%"])
    return out + [[net, f"training, {args.batches} batches of 128", f"{train_s:.2f}", "100%"]]


def rows(m: dict, peak: float, native: bool) -> list[list[str]]:
    ips = {s: statistics.median(v) for s, v in m["images_per_s"].items()}
    out = []
    for side in m["images_per_s"]:
        gflops = ips[side] * m["flops_per_image"] / 1e9
        in_bf16 = side in ("bare bf16", "auto + 32-true, oneDNN bf16 math") or ("auto" in side and native)
        against = "trickbench auto" if side.startswith("auto + ") else "bare bf16" if "auto" in side else "bare fp32"
        out.append(
            [
                m["net"],
                f"{m['flops_per_image'] / 1e9:.3f}",
                side,
                f"{ips[side]:,.0f}",
                f"{gflops:.1f}",
                f"{100 * gflops / peak:.0f}%",
                f"{100 * gflops / (2 * peak if in_bf16 else peak):.0f}%",
                f"{ips[against] / ips[side]:.2f}x {against}",
                f"{ips[side] / ips['trickbench fp32']:.2f}",
            ]
        )
    return out


HEADER = [
    "net",
    "GFLOP/image (fwd+bwd)",
    "side",
    "train img/s",
    "GFLOP/s",
    "% fp32 peak",
    "% of its precision's peak",
    "time per image vs",
    "speed vs trickbench fp32",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    next(a for a in parser._actions if a.dest == "device").required = False  # CPU only
    parser.add_argument("--net", action="append", choices=list(NETS), help="default: every net")
    parser.add_argument("--batches", type=int, default=20, help="training batches of 128 per run (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of the four sides (default 2)")
    parser.add_argument("--knobs", action="store_true", help="also trickbench auto with each of " + ", ".join(KNOBS))
    parser.add_argument("--profile", action="store_true", help="only: the op-time profile of each --net")
    args = parser.parse_args(argv)
    if args.profile:
        header = ["net", "kind of op", "self seconds", "share of training"]
        print_table(command_line(__file__, argv), header, [r for n in args.net or ["cnn12"] for r in profile(n, args)])
        return
    threads = torch.get_num_threads()
    peak, how = peak_gflops(threads)
    measured = [measure(net, args) for net in args.net or list(NETS)]
    native = speed.cpu_native_bf16()
    print(f"\nCPU {cpu_model()}, native bf16: {native}, {threads} torch threads, torch {torch.__version__}")
    print(f"fp32 peak {peak:.0f} GFLOP/s = {how}; bf16 peak {2 * peak:.0f} GFLOP/s" if native else "")
    print_table(command_line(__file__, argv), HEADER, [r for m in measured for r in rows(m, peak, native)])
    write_json(args.json, {"cpu": cpu_model(), "peak_gflops": peak, "peak_how": how, "measured": measured})


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
