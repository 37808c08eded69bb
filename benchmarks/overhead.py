"""Seconds per epoch of trickbench against a bare PyTorch loop on the same net, data, augmentation, optimizer and
precision. Not a test: copy its table row into docs/benchmarks.md.

    python benchmarks/overhead.py --device cuda --setting gpu            # resnet18_bf16 and cnn12_fp32, CIFAR-10
    python benchmarks/overhead.py --device cpu --setting cpu_default     # default cnn, Fashion-MNIST, 1 epoch

The trickbench side is train.run(cfg) in this process, on a config composed as train.py composes it: default
callbacks, loggers, validation, checkpoints and the test after fit, what `python train.py` does. In-process rather
than a subprocess so that both sides share one CUDA context, warm cuDNN and allocator caches and the decoded data
cache, and the A/B pairs differ only in the loop; interpreter and import start-up are not per-epoch costs.
Each pair runs the bare loop then trickbench (A, B, A, B, ...); the ratio is the median of the pairs' ratios.
"""

import argparse
import math

import lightning as L
import torch
from common import (
    add_common_args,
    clock,
    command_line,
    compose_cfg,
    machine,
    median,
    print_table,
    run_overrides,
    trickbench_run,
    write_json,
)
from hydra.utils import instantiate

from trickbench import speed
from trickbench.data import batch_ops
from trickbench.models import build_model
from trickbench.optim import build_optimizer
from trickbench.sweep.context import threads_for

SETTINGS = {  # name: (dataset, overrides, default epochs)
    "resnet18_bf16": (
        "cifar10",
        ["data=cifar10", "model=resnet18", "norm=batch", "augment=crop_flip", "optimizer=nesterov"]
        + ["data.batch_size=512", "trainer.precision=bf16-mixed"],
        2,
    ),
    "cnn12_fp32": (
        "cifar10",
        ["data=cifar10", "model=cnn_12conv", "norm=batch", "augment=crop_flip", "optimizer=nesterov"]
        + ["data.batch_size=128", "trainer.precision=32-true"],
        2,
    ),
    "cpu_default": ("fashion_mnist", ["data.batch_size=128"], 1),  # the default run: cnn, Adam, no augmentation
}
GROUPS = {"gpu": ["resnet18_bf16", "cnn12_fp32"], "all": list(SETTINGS)}
# augment keys the bare loop writes out (crop and flip); any other one switched on would make the comparison unfair
BARE_AUGMENT = {"crop_padding", "crop_padding_mode", "hflip", "tta"}


def bare_loop(cfg, device: str, epochs: int, max_batches: int | None) -> dict:
    """What a careful person writes by hand: uint8 splits on the device, a randperm per epoch there, index slices,
    the batch ops, autocast for bf16, no host sync inside an epoch; a validation pass every epoch."""
    settings = speed.resolve(cfg)  # the precision, TF32, autotuning and memory format the trickbench run uses
    speed.reset_backend_flags(threads_for(cfg.get("threads"), 1))
    speed.apply_backend_flags(settings)
    torch.backends.cudnn.benchmark = settings["benchmark"]
    extra = {k for k, v in cfg.augment.items() if v and k not in BARE_AUGMENT}
    if extra or cfg.scheduler.get("lr_scheduler") or cfg.scheduler.get("warmup_epochs"):
        raise SystemExit(f"bare loop: crop/flip and a constant lr only; this config also sets {sorted(extra)}")
    if settings["precision"] not in ("32-true", "bf16-mixed"):
        raise SystemExit(f"bare loop: precision 32-true or bf16-mixed, not {settings['precision']}")

    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    L.seed_everything(cfg.seed, verbose=False)
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, dm.shape, dm.num_classes).to(device)
    net = speed.prepare_model(net, settings)
    optimizer = build_optimizer(net, cfg.optimizer, cfg.data.batch_size)
    loss_fn = instantiate(cfg.loss)
    x_train, y_train = dm.train_set.x.to(device), dm.train_set.y.to(device)
    x_val, y_val = dm.val_set.x.to(device), dm.val_set.y.to(device)
    norm = dm.info["normalization"]
    mean, std = (torch.tensor(norm[k], device=device).view(1, -1, 1, 1) if norm[k] else None for k in ("mean", "std"))
    aug = cfg.augment

    def prepare(x: torch.Tensor, train: bool) -> torch.Tensor:
        x = x.float().div_(255)
        if train and aug.get("crop_padding"):
            x = batch_ops.random_crop(x, aug.crop_padding, aug.get("crop_padding_mode") or "constant")
        if train and aug.get("hflip"):
            x = batch_ops.random_hflip(x)
        if dm.normalize == "minus_one_one":
            x = x.mul_(2).sub_(1)
        elif dm.normalize == "standardize":
            x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if settings["channels_last"] else x

    bf16 = settings["precision"] == "bf16-mixed"
    batch, eval_batch = cfg.data.batch_size, cfg.data.eval_batch_size
    train_batches = min(math.ceil(len(y_train) / batch), max_batches or math.inf)
    val_batches = min(math.ceil(len(y_val) / eval_batch), max_batches or math.inf)
    train_s, val_s, epoch_s, images = [], [], [], 0
    for _ in range(epochs):
        start = clock(device)
        net.train()
        train_loss = torch.zeros((), device=device)
        order = torch.randperm(len(y_train), device=device)
        for i in range(train_batches):
            idx = order[i * batch : (i + 1) * batch]
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(net(prepare(x_train[idx], train=True)), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss += loss.detach()
            images += len(idx)
        train_end = clock(device)
        net.eval()
        correct, val_loss, seen = torch.zeros((), device=device, dtype=torch.long), torch.zeros((), device=device), 0
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for i in range(val_batches):
                x, y = x_val[i * eval_batch : (i + 1) * eval_batch], y_val[i * eval_batch : (i + 1) * eval_batch]
                logits = batch_ops.tta_logits(net, prepare(x, train=False), aug.get("tta"))
                correct += (logits.argmax(1) == y).sum()
                val_loss += loss_fn(logits, y) * len(y)
                seen += len(y)
        # the epoch's host syncs, as trickbench's epoch-end logging makes them
        val_acc, last_train_loss = correct.item() / seen, (train_loss / train_batches).item()
        end = clock(device)
        train_s.append(train_end - start)
        val_s.append(end - train_end)
        epoch_s.append(end - start)
    return {
        "train_s": sum(train_s),
        "val_s": sum(val_s),
        "epoch_s": epoch_s,
        "train_images_per_s": images / sum(train_s),
        "val_acc": val_acc,
        "train_loss": last_train_loss,
    }


def trickbench_side(overrides: list[str], device: str, epochs: int) -> dict:
    results = trickbench_run([*overrides, f"trainer.max_epochs={epochs}"], device)
    return {**results["timing"], "val_acc": results["val"]["acc_last"], "run_wall_s": results["run_wall_s"]}


def steady_epoch_s(timing: dict) -> float:
    """Seconds per epoch (train + val) once warm: the epochs after the first, when there are any."""
    epochs = timing["epoch_s"]
    return median(epochs[1:] if len(epochs) > 1 else epochs)


def measure(name: str, args) -> dict:
    dataset, setting_overrides, default_epochs = SETTINGS[name]
    overrides = setting_overrides + run_overrides(args, dataset)
    epochs = args.epochs or default_epochs
    cfg = compose_cfg(overrides)  # the bare loop reads the same composed config as the trickbench run
    for _ in range(args.warmup):  # CUDA context, cuDNN autotuning, the decoded data cache: not counted
        bare_loop(cfg, args.device, 1, args.limit_batches)
        trickbench_side(overrides, args.device, 1)
    bare, ours = [], []
    for pair in range(args.repeats):
        bare.append(bare_loop(cfg, args.device, epochs, args.limit_batches))
        ours.append(trickbench_side(overrides, args.device, epochs))
        b, t = steady_epoch_s(bare[-1]), steady_epoch_s(ours[-1])
        print(f"{name} pair {pair}: bare {b:.3f} s/epoch, trickbench {t:.3f} s/epoch, ratio {t / b:.3f}", flush=True)
    return {"setting": name, "epochs": epochs, "overrides": overrides, "bare": bare, "trickbench": ours}


def table_row(m: dict, device: str) -> list[str]:
    bare_epoch, ours_epoch = ([steady_epoch_s(t) for t in m[side]] for side in ("bare", "trickbench"))
    bare_ips, ours_ips = ([t["train_images_per_s"] for t in m[side]] for side in ("bare", "trickbench"))
    epoch_ratio = median([o / b for o, b in zip(ours_epoch, bare_epoch, strict=True)])
    ips_ratio = median([b / o for o, b in zip(ours_ips, bare_ips, strict=True)])  # > 1: trickbench is slower

    def runs(values, fmt):
        return f"{fmt(median(values))} ({', '.join(fmt(v) for v in values)})"

    seconds, rate = "{:.2f}".format, "{:,.0f}".format
    return [
        machine(device),
        f"{m['setting']}, {m['epochs']} ep x {len(bare_epoch)} pairs",
        runs(bare_epoch, seconds),
        runs(ours_epoch, seconds),
        f"**{epoch_ratio:.3f}**",
        runs(bare_ips, rate),
        runs(ours_ips, rate),
        f"{ips_ratio:.3f}",
        f"{m['bare'][-1]['val_acc']:.3f} / {m['trickbench'][-1]['val_acc']:.3f}",
    ]


HEADER = [
    "machine",
    "setting",
    "bare s/epoch (train+val)",
    "trickbench s/epoch",
    "ratio (median of pairs)",
    "bare train img/s",
    "trickbench train img/s",
    "ratio",
    "val acc bare / trickbench",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--setting", default="gpu", choices=[*SETTINGS, *GROUPS], help="gpu = the two GPU settings")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: 2 on the GPU settings, 1 on cpu_default)")
    parser.add_argument("--repeats", type=int, default=3, help="A/B pairs (default 3)")
    args = parser.parse_args(argv)
    measured = [measure(name, args) for name in GROUPS.get(args.setting, [args.setting])]
    print_table(command_line(__file__, argv), HEADER, [table_row(m, args.device) for m in measured])
    write_json(args.json, {"machine": machine(args.device), "measured": measured})


if __name__ == "__main__":
    main()
