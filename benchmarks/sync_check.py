"""Host syncs of a user's run on a GPU, counted by CUDA itself: torch.cuda.set_sync_debug_mode("warn") makes every
synchronizing CUDA call warn, and a callback notes the training batch each warning falls in. The README's "no
host sync per step" holds when every one falls in a batch where the checks run (the run's first batch, a batch
Lightning logs in, an epoch's last batch), as tests/run/test_fast_path.py asserts on the CPU with its probe.

    python benchmarks/sync_check.py --device cuda [--setting resnet18_bf16] [--batches 60]

On a CPU nothing is counted (no CUDA calls to watch); the script still runs the training, as a smoke test.
"""

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch
from common import add_common_args, command_line, compose_cfg, machine, print_table, run_overrides
from overhead import SETTINGS

from trickbench.callbacks.monitors import checked_batch
from trickbench.train import run


class SyncWatch(L.Callback):
    """Added as +callbacks.sync_watch._target_=sync_check.SyncWatch; the last one made is SyncWatch.last."""

    last: "SyncWatch | None" = None

    def __init__(self):
        self.syncs: dict[int, int] = {}  # global step at the batch's start -> synchronizing CUDA calls
        self.checked: set[int] = set()  # the steps whose batch runs the checks
        self.step: int | None = None
        self._show = None
        SyncWatch.last = self

    def setup(self, trainer, pl_module, stage):
        trainer.callbacks.remove(self)  # first among the callbacks: a batch's calls are not the previous one's
        trainer.callbacks.insert(0, self)

    def _record(self, message, category, *args, **kwargs):
        if self.step is not None and "synchronizing" in str(message):
            self.syncs[self.step] = self.syncs.get(self.step, 0) + 1
        elif self._show is not None:
            self._show(message, category, *args, **kwargs)

    def on_fit_start(self, trainer, pl_module):
        warnings.filterwarnings("always", message=".*synchronizing.*")
        self._show, warnings.showwarning = warnings.showwarning, self._record
        if pl_module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        if checked_batch(trainer, stepped=False) or batch_idx + 1 >= trainer.num_training_batches:
            self.checked.add(self.step)

    def on_validation_start(self, trainer, pl_module):
        self.step = None

    def on_train_epoch_end(self, trainer, pl_module):
        self.step = None

    def on_fit_end(self, trainer, pl_module):
        self.step = None
        if pl_module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._show


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--setting", default="resnet18_bf16", choices=list(SETTINGS))
    parser.add_argument("--batches", type=int, default=60, help="training batches per epoch (default 60)")
    args = parser.parse_args(argv)
    dataset, setting_overrides, _ = SETTINGS[args.setting]
    overrides = setting_overrides + run_overrides(args, dataset)
    overrides += [
        "trainer.max_epochs=2",
        f"trainer.limit_train_batches={args.batches}",
        "trainer.log_every_n_steps=10",
        "+callbacks.sync_watch._target_=sync_check.SyncWatch",
    ]
    with tempfile.TemporaryDirectory(prefix="trickbench-sync-") as tmp:
        run(compose_cfg(overrides, Path(tmp)))
    watch = sys.modules["sync_check"].SyncWatch.last  # the instance Hydra made, in the module it imported
    steps = 2 * args.batches
    stray = sorted(s for s in watch.syncs if s not in watch.checked)
    verdict = "no host sync outside the checked batches" if not stray else f"syncs in unchecked batches {stray}"
    print_table(
        command_line(__file__, argv),
        ["machine", "setting", "training batches", "checked batches", "batches with syncs", "syncs", "verdict"],
        [
            [
                machine(args.device),
                args.setting,
                str(steps),
                str(len(watch.checked)),
                str(len(watch.syncs)),
                str(sum(watch.syncs.values())),
                verdict if args.device == "cuda" else "CPU: no CUDA calls to watch",
            ]
        ],
    )
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
