"""SWA: Lightning's StochasticWeightAveraging fitted to this project (its checks in RULES, its BatchNorm pass for
every net)."""

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import StochasticWeightAveraging

from trickbench import run_length
from trickbench.errors import ConfigError, is_int, is_number
from trickbench.rules import NodeCheck, positive


def _check_swa_node(node, cfg) -> None:
    max_epochs = cfg.trainer.max_epochs
    check_swa(node, max_epochs, run_length.in_epochs(cfg.scheduler.get("warmup_epochs", 0), max_epochs))


# found by config.validate from trick=swa's _target_: a start inside the warmup is refused before any data is read
RULES = [NodeCheck("callbacks.swa", _check_swa_node)]


def check_swa(node, max_epochs: int, warmup_epochs: float = 0, key: str = "callbacks.swa") -> None:
    """conf/trick/swa.yaml's values (a mapping), raising ConfigError. Lightning rejects some only with a traceback
    (in its __init__, inside instantiate) and accepts others that silently spoil the run: a start at epoch 1 averages
    the random init, a start after the run puts the untrained weights back at its end, a start inside the warmup
    cuts it short (SWA's lr schedule replaces conf/scheduler's)."""
    lrs, factor = node.get("swa_lrs"), node.get("swa_lr_factor", 0.5)
    if not (lrs is None or positive(lrs) or (isinstance(lrs, Sequence) and lrs and all(map(positive, lrs)))):
        raise ConfigError(f"{key}.swa_lrs", lrs, "null (swa_lr_factor x the optimizer's lr), a number > 0 or a list")
    if not positive(factor):
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
