"""SLURM through submitit (hydra/launcher=slurm) and its time limit. SLURM sends submitit's signal (USR2)
signal_delay_s before the limit; submitit's own handler requeues at once, and the requeue kills the job before
anything is saved. RequeueAtTimeLimit takes the signal over while fit runs: the signal only marks the run, the next
batch end writes checkpoints/last.ckpt (mid-epoch, with the loader's place in the epoch), and only then does
submitit's handler requeue the job (submitit alone requeues; Lightning's auto-requeue stays off, trickbench.train).
The requeued job finds last.ckpt in its folder and resumes from it."""

import logging
import os
import signal
import sys
import time
from pathlib import Path

import lightning as L

from trickbench.callbacks.monitors import checked_batch

log = logging.getLogger(__name__)


def submitit_signal() -> signal.Signals | None:
    """The signal submitit asks SLURM to send before the time limit, inside a submitit SLURM job; else None."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class ResumeMidEpoch(L.Callback):
    """Hands a mid-epoch checkpoint's loader position (data.loader.TensorLoader.state_dict) to the train loader.
    Lightning loads it only into a loader made after the checkpoint is restored; a module whose optimizer setup
    asks for trainer.estimated_stepping_batches makes the loader before that, and the resumed epoch would start
    over at its first batch. The loader starts its next pass from the position, so this still comes in time."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if fit_loop.restarting and fit_loop._combined_loader_states_to_load:
            fit_loop._load_combined_loader_states()


class RequeueAtTimeLimit(L.Callback):
    """Inside a submitit SLURM job: on the time-limit signal, save last.ckpt at the next batch end, then requeue.
    Saving is collective under DDP, so the ranks agree on the batch, at the batches where checks already sync
    (signal_delay_s must cover trainer.log_every_n_steps batches). Elsewhere it does nothing."""

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.signum: signal.Signals | None = None
        self.submitit_handler = None  # submitit's: requeues (rank 0) and exits
        self.signalled = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        signum = submitit_signal()
        if stage == "fit" and signum is not None and callable(handler := signal.getsignal(signum)):
            self.signum, self.submitit_handler = signum, handler
            signal.signal(signum, self._mark)

    def _mark(self, signum, frame) -> None:
        self.signalled = True  # only a flag: the step in progress finishes first

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.submitit_handler is None:
            return
        if trainer.world_size > 1 and not (
            checked_batch(trainer, stepped=True) or batch_idx + 1 >= trainer.num_training_batches
        ):
            return
        if trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            trainer.save_checkpoint(self.path)
            log.warning("time limit near: saved %s at step %d; requeueing", self.path, trainer.global_step)
            self._requeue()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.submitit_handler is None:
            return
        signal.signal(self.signum, self.submitit_handler)  # while testing, submitit requeues at once
        if self.signalled:  # the signal came after the last batch: last.ckpt holds the whole fit already
            self._requeue()
        self.submitit_handler = None

    def _requeue(self) -> None:
        handler, self.submitit_handler = self.submitit_handler, None
        handler(self.signum, None)  # rank 0: requeues and exits; the other ranks return
        time.sleep(60)  # other ranks: SLURM stops the job now; exiting first would leave rank 0 hanging
        sys.exit(-1)
