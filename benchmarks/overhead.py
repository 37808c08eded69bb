"""Training throughput of trickbench's loop (Lightning + batch pipeline) against a hand-written PyTorch loop
on the same model, data and batch size. Not a test: run it and copy its table into docs/benchmarks.md.

    python benchmarks/overhead.py --source ../shared/datasets/fashion-mnist [--steps 200] [--repeats 3]
"""

import argparse
import statistics
import time

import lightning as L
import torch
from omegaconf import OmegaConf

from trickbench.data import ImageDataModule
from trickbench.models import build_model
from trickbench.module import TrickModule


def make_net(dm):
    return build_model(
        {"name": "cnn"}, {"name": "relu"}, {"name": "none"}, {"name": "default"}, dm.shape, dm.num_classes
    )


def hand_written(dm, steps: int, warmup: int, device: torch.device) -> float:
    """images/s of the plain loop: index a batch, to float, forward, backward, Adam step."""
    torch.manual_seed(0)
    net = make_net(dm).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_all, y_all = dm.train_set.x, dm.train_set.y
    perm = torch.randperm(len(y_all))
    bs = dm.batch_size
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        idx = perm[(i * bs) % (len(perm) - bs) :][:bs]
        x = x_all[idx].to(device, non_blocking=True).float().div_(255)
        y = y_all[idx].to(device, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * bs / (time.perf_counter() - start)


class StepClock(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()
        self.end, self.steps = time.perf_counter(), trainer.global_step - self.warmup


def trickbench_loop(dm, steps: int, warmup: int, accelerator: str) -> float:
    """images/s of trickbench's training loop: same model and optimizer, validation and logging off."""
    torch.manual_seed(0)
    config = OmegaConf.to_container(
        OmegaConf.create(
            {
                "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
                "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                "scheduler": {"interval": None, "lr_scheduler": None},
            }
        )
    )
    module = TrickModule(make_net(dm), config, dm.num_classes)
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        limit_train_batches=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, dm)
    return clock.steps * dm.batch_size / (clock.end - clock.start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="data.source (default: the cache / system copy / download)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    dm = ImageDataModule("fashion_mnist", source=args.source, batch_size=128)
    dm.prepare_data()
    dm.setup()
    device = torch.device("cuda" if args.accelerator in ("auto", "gpu") and torch.cuda.is_available() else "cpu")
    plain, ours = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both
        plain.append(hand_written(dm, args.steps, args.warmup, device))
        ours.append(trickbench_loop(dm, args.steps, args.warmup, "gpu" if device.type == "cuda" else "cpu"))
    p, o = statistics.median(plain), statistics.median(ours)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print("\n| device | model | batch | hand-written img/s | trickbench img/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {name} | cnn (default) | {dm.batch_size} | {p:,.0f} | {o:,.0f} | {o / p:.2f} |")
    print(f"runs: hand-written {[round(v) for v in plain]}, trickbench {[round(v) for v in ours]}")


if __name__ == "__main__":
    main()
