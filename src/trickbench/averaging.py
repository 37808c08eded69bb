"""Weight averaging callbacks: Lookahead (below) and SWA, Lightning's StochasticWeightAveraging fitted to this project.

Lookahead-style weight averaging (airbench94, after hlb-CIFAR10): an average the weights are pulled back to.

From epoch start_epoch on, every every_n_steps optimizer steps t (the first time, avg = w):
    avg <- avg + (1 - decay_t) (w - avg),    w <- avg,
    decay_t = decay_base ** every_n_steps x (t / total steps) ** decay_power,
so the weights move almost freely at first (decay_t about 0) and are averaged strongly at the end. After each
epoch's last batch w <- avg (steps since the last update are dropped, as in airbench), so validation, the
checkpoints and the end of training see the average. Every floating-point parameter and buffer of the net is
averaged, BatchNorm's running statistics included (as airbench)."""

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging
from torch import Tensor

from trickbench import run_length
from trickbench.errors import ConfigError, is_int, is_number
from trickbench.rules import NodeCheck, Rule, integer, nonnegative, number


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
        # here, not in __init__: instantiate() would wrap the ConfigError into a traceback
        key, max_epochs = "callbacks.lookahead", trainer.max_epochs
        if not run_length.epochs_or_fraction(0)(self.start_epoch):
            allowed = "an integer >= 0 (the first averaging epoch, 0-based) or a fraction of the run in (0, 1)"
            raise ConfigError(f"{key}.start_epoch", self.start_epoch, allowed)
        if run_length.is_fraction(self.start_epoch) and max_epochs is not None and max_epochs > 0:
            self._first_epoch = int(self.start_epoch * max_epochs + 0.5)  # the nearest epoch, 0-based
        if max_epochs is not None and 0 < max_epochs <= self._first_epoch:
            allowed = f"less than trainer.max_epochs={max_epochs}: it would never average"
            raise ConfigError(f"{key}.start_epoch", self.start_epoch, allowed)
        if not (is_int(self.every_n_steps) and self.every_n_steps >= 1):
            raise ConfigError(f"{key}.every_n_steps", self.every_n_steps, "an integer >= 1")
        if not (is_number(self.decay_base) and 0 <= self.decay_base < 1):
            raise ConfigError(f"{key}.decay_base", self.decay_base, "a number in [0, 1)")
        if not (is_number(self.decay_power) and self.decay_power >= 0):
            raise ConfigError(f"{key}.decay_power", self.decay_power, "a number >= 0 (0: a constant decay)")

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


def _check_swa_node(node, cfg) -> None:
    max_epochs = cfg.trainer.max_epochs
    check_swa(node, max_epochs, run_length.in_epochs(cfg.scheduler.get("warmup_epochs", 0), max_epochs))


# found by config.validate from trick=swa's _target_: a start inside the warmup is refused before any data is read
RULES = [
    NodeCheck("callbacks.swa", _check_swa_node),
    Rule("callbacks.lookahead.start_epoch", run_length.epochs_or_fraction(0), "an epoch >= 0 or a fraction in (0, 1)"),
    Rule("callbacks.lookahead.every_n_steps", integer(1), "an integer >= 1"),
    Rule("callbacks.lookahead.decay_base", number(0, 1, open_low=True), "a number in (0, 1]"),
    Rule("callbacks.lookahead.decay_power", nonnegative, "a number >= 0 (0: a constant decay)"),
]


def check_swa(node, max_epochs: int, warmup_epochs: float = 0, key: str = "callbacks.swa") -> None:
    """conf/trick/swa.yaml's values (a mapping), raising ConfigError. Lightning rejects some only with a traceback
    (in its __init__, inside instantiate) and accepts others that silently spoil the run: a start at epoch 1 averages
    the random init, a start after the run puts the untrained weights back at its end, a start inside the warmup
    cuts it short (SWA's lr schedule replaces conf/scheduler's)."""
    lrs, factor = node.get("swa_lrs"), node.get("swa_lr_factor", 0.5)
    if not (lrs is None or _positive(lrs) or (isinstance(lrs, Sequence) and lrs and all(map(_positive, lrs)))):
        raise ConfigError(f"{key}.swa_lrs", lrs, "null (swa_lr_factor x the optimizer's lr), a number > 0 or a list")
    if not _positive(factor):
        raise ConfigError(f"{key}.swa_lr_factor", factor, "a number > 0: the SWA lr over the optimizer's lr")
    start = node.get("swa_epoch_start", 0.75)
    first = swa_first_epoch(start, max_epochs)
    if first is None or not max(1, warmup_epochs) <= first < max_epochs:
        allowed = (
            "a fraction in (0, 1] or an epoch number from 1 (Lightning averages from the start of epoch "
            f"int(fraction x max_epochs), 1-based): a start after epoch 1, after the warmup ({warmup_epochs} epochs) "
            f"and within trainer.max_epochs={max_epochs}"
        )
        raise ConfigError(f"{key}.swa_epoch_start", start, allowed)
    epochs = node.get("annealing_epochs", 1)
    if not (is_int(epochs) and epochs >= 0):
        raise ConfigError(f"{key}.annealing_epochs", epochs, "an integer >= 0 (0: the SWA lr at once)")
    if node.get("annealing_strategy", "cos") not in ("cos", "linear"):
        raise ConfigError(f"{key}.annealing_strategy", node.get("annealing_strategy"), "cos or linear")


def _positive(v) -> bool:
    return is_number(v) and v > 0


def swa_first_epoch(start, max_epochs: int) -> int | None:
    """The 0-based epoch at whose start Lightning first updates the average (with the weights the epoch before ended
    with), for swa_epoch_start: an int n, the n-th epoch (1-based); a float f, the int(f x max_epochs)-th. None: not a
    valid swa_epoch_start."""
    if is_int(start):
        return start - 1
    if is_number(start) and 0 < start <= 1:
        return int(start * max_epochs) - 1
    return None


class SWA(StochasticWeightAveraging):
    """Lightning's StochasticWeightAveraging (Izmailov et al. 2018) with two changes: it ends with its BatchNorm pass
    for every net (pl_module_contains_batch_norm), and swa_lrs=null gives each param group swa_lr_factor x its lr
    (optimizer.lr spans 1e-3 (adam) to 0.1 (nesterov)). Bad values raise ConfigError at setup (check_swa)."""

    def __init__(
        self,
        swa_lrs: float | Sequence[float] | None = None,
        swa_lr_factor: float = 0.5,
        swa_epoch_start: int | float = 0.75,
        annealing_epochs: int = 1,
        annealing_strategy: str = "cos",
    ):
        # placeholders: Lightning checks its arguments here, where a failure is a traceback through instantiate;
        # check_swa checks them at setup instead
        super().__init__(swa_lrs=1.0)
        self.values = {
            "swa_lrs": swa_lrs,
            "swa_lr_factor": swa_lr_factor,
            "swa_epoch_start": swa_epoch_start,
            "annealing_epochs": annealing_epochs,
            "annealing_strategy": annealing_strategy,
        }
        self._swa_epoch_start, self._annealing_epochs = swa_epoch_start, annealing_epochs
        self._annealing_strategy = annealing_strategy

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: L.LightningModule) -> bool:
        # the final pass for every net: else the average comes at on_train_end, after the last validation and checkpoint
        return True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_swa(self.values, trainer.max_epochs)
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # resumed mid-epoch (SIGTERM, requeue), Lightning skips on_train_epoch_start, where SWA sets up its lr and pass
        if trainer.fit_loop.restarted_mid_epoch:
            buffers = {n: b.clone() for n, b in pl_module.named_buffers()}  # a resumed BN pass goes on from its sums
            self.on_train_epoch_start(trainer, pl_module)
            for n, b in pl_module.named_buffers():
                b.copy_(buffers[n])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        groups, lrs = trainer.optimizers[0].param_groups, self.values["swa_lrs"]
        if lrs is None:  # initial_lr: the lr before any schedule changed it (a warmup starts low)
            self._swa_lrs = [self.values["swa_lr_factor"] * g.get("initial_lr", g["lr"]) for g in groups]
        elif isinstance(lrs, Sequence):
            if len(lrs) != len(groups):
                raise ConfigError("callbacks.swa.swa_lrs", lrs, f"one lr per param group ({len(groups)} here)")
            self._swa_lrs = [float(v) for v in lrs]
        else:
            self._swa_lrs = [float(lrs)] * len(groups)
        super().on_fit_start(trainer, pl_module)
