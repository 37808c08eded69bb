"""Lookahead-style weight averaging (airbench94, after hlb-CIFAR10): an average the weights are pulled back to.

From epoch start_epoch on, every every_n_steps optimizer steps t (the first time, avg = w):
    avg <- avg + (1 - decay_t) (w - avg),    w <- avg,
    decay_t = decay_base ** every_n_steps x (t / total steps) ** decay_power,
so the weights move almost freely at first (decay_t about 0) and are averaged strongly at the end. After each
epoch's last batch w <- avg (steps since the last update are dropped, as in airbench), so validation, the
checkpoints and the end of training see the average. Every floating-point parameter and buffer of the net is
averaged, BatchNorm's running statistics included (as airbench)."""

import lightning as L
import torch
from torch import Tensor

from trickbench import run_length
from trickbench.rules import Relation, Rule, integer, nonnegative, number


def first_epoch(start, max_epochs: int) -> int:
    """The first averaging epoch, 0-based: an integer as it is, a fraction of the run as its nearest epoch."""
    return int(start * max_epochs + 0.5) if run_length.is_fraction(start) else int(start)


KEY = "callbacks.lookahead"
# found by config.validate from trick=lookahead's _target_, before any data is read
RULES = [
    Rule(
        f"{KEY}.start_epoch",
        run_length.epochs_or_fraction(0),
        "an integer >= 0 (the first averaging epoch, 0-based) or a fraction of the run in (0, 1)",
    ),
    Rule(f"{KEY}.every_n_steps", integer(1), "an integer >= 1"),
    Rule(f"{KEY}.decay_base", number(0, 1, open_high=True), "a number in [0, 1)"),
    Rule(f"{KEY}.decay_power", nonnegative, "a number >= 0 (0: a constant decay)"),
    Relation(
        f"{KEY}.start_epoch",
        lambda v, cfg: first_epoch(v, cfg.trainer.max_epochs) < cfg.trainer.max_epochs,
        lambda cfg: f"less than trainer.max_epochs={cfg.trainer.max_epochs}: it would never average",
    ),
]


class Lookahead(L.Callback):
    def __init__(
        self, start_epoch: int | float = 3, every_n_steps: int = 5, decay_base: float = 0.95, decay_power: float = 3.0
    ):
        self.start_epoch, self.every_n_steps = start_epoch, every_n_steps
        self._first_epoch = start_epoch  # 0-based; a fraction of the run is resolved at setup
        self.decay_base, self.decay_power = decay_base, decay_power
        self._average: dict[str, Tensor] | None = None  # in the order of _named_weights
        self._restored: dict[str, Tensor] | None = None  # from a checkpoint, until the net is on its device
        self._total_steps = 0
        self._last_step = -1

    def decay(self, step: int, total_steps: int) -> float:
        """The weight of the old average at optimizer step `step` (1-based) of `total_steps`."""
        return self.decay_base**self.every_n_steps * (step / total_steps) ** self.decay_power

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the values were checked before any data was read (RULES); a fraction of the run needs the run's length
        if run_length.is_fraction(self.start_epoch) and trainer.max_epochs is not None and trainer.max_epochs > 0:
            self._first_epoch = first_epoch(self.start_epoch, trainer.max_epochs)

    @staticmethod
    def _named_weights(pl_module: L.LightningModule) -> dict[str, Tensor]:
        """The net's floating-point parameters and buffers, looked up anew each time: moving a module to another
        device replaces its buffers."""
        net = getattr(pl_module, "net", pl_module)
        named = [(n, p.detach()) for n, p in net.named_parameters()] + list(net.named_buffers())
        return {n: t for n, t in named if t.is_floating_point()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total_steps = int(trainer.estimated_stepping_batches)
        self._last_step = trainer.global_step
        if self._restored is not None:
            weights = self._named_weights(pl_module)
            self._average = {n: self._restored[n].to(w) for n, w in weights.items()}
            self._restored = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        step = trainer.global_step  # optimizer steps so far: Python ints, no host sync
        if step != self._last_step:  # else gradients are being accumulated: no step was taken
            self._last_step = step
            if trainer.current_epoch >= self._first_epoch and step % self.every_n_steps == 0:
                self._update(self._named_weights(pl_module), step)
        if batch_idx + 1 >= trainer.num_training_batches:
            self._copy_back(pl_module)

    def _update(self, weights: dict[str, Tensor], step: int) -> None:
        if self._average is None:
            self._average = {n: w.clone() for n, w in weights.items()}
            return
        average, current = list(self._average.values()), list(weights.values())
        torch._foreach_lerp_(average, current, 1 - self.decay(step, self._total_steps))
        torch._foreach_copy_(current, average)

    def _copy_back(self, pl_module: L.LightningModule) -> None:
        if self._average is not None:
            torch._foreach_copy_(list(self._named_weights(pl_module).values()), list(self._average.values()))

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._copy_back(pl_module)  # a run stopped mid-epoch (max_steps) ends on the average too

    def state_dict(self) -> dict:
        return {"average": self._average if self._average is not None else self._restored}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored, self._average = state_dict.get("average"), None
