"""conf/tune: tune=lr_find runs Lightning's learning-rate finder (Tuner.lr_find) before fit, saves its plot and
suggestion in the run folder, and either prints the `optimizer.lr=` override (the run stops there) or, with
tune.apply=true, returns the lr to train with: train.run sets optimizer.lr and builds the module and callbacks again
from that config, with the same seed, so the run is the one `optimizer.lr=<suggestion>` would have started."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from trickbench.optim import scaled_lr
from trickbench.results import write_json
from trickbench.rules import Relation, Rule, boolean, integer, one_of, positive

RULES = [
    Rule("tune.name", one_of(("lr_find",)), "lr_find (the one tuner; tune=lr_find)"),
    Rule("tune.apply", boolean, "true (train with the suggested lr) or false (print it and stop)"),
    Rule("tune.min_lr", positive, "a number > 0"),
    Rule("tune.max_lr", positive, "a number > 0, above tune.min_lr"),
    Rule("tune.num_training", integer(13), "an integer >= 13 (the suggestion skips 10 steps + 1)"),
    Rule("tune.mode", one_of(("exponential", "linear")), "exponential or linear"),
    Relation(
        "tune.max_lr", lambda v, cfg: v > cfg.tune.min_lr, lambda cfg: f"a number above tune.min_lr={cfg.tune.min_lr}"
    ),
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LrFound:
    lr: float | None = None  # tune.apply=true with a suggestion: the optimizer.lr to train with (3 digits)
    stop: dict | None = None  # tune.apply=false: what the run returns, stopping here


def maybe_lr_find(cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, dm) -> LrFound:
    """Nothing to do (LrFound()) unless cfg.tune is lr_find. Else the finder's result, written to lr_find.json and
    lr_find.png in the run folder: the run's stop (tune.apply=false) or the lr to train with (tune.apply=true)."""
    tune = cfg.get("tune")
    if not tune or tune.get("name") != "lr_find":
        return LrFound()
    out_dir = Path(cfg.paths.output_dir)
    # the finder steps num_training batches in one fit: with short epochs, max_epochs would end it first (every epoch
    # has a batch, so num_training epochs are enough; -1, no limit, would leave the scheduler a run of infinite steps)
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, tune.num_training)
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=dm,
            min_lr=tune.min_lr,
            max_lr=tune.max_lr,
            num_training=tune.num_training,
            mode=tune.mode,
            update_attr=False,  # the lr lives in the config: train.run builds the module again from it
        )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggestion = finder.suggestion()
    # the finder sets the optimizer's lr itself; optimizer.lr is that lr before optimizer.scale_lr_to_batch
    global_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    lr = None if suggestion is None else suggestion * cfg.optimizer.lr / scaled_lr(cfg.optimizer, global_batch)
    result = {
        "suggestion": lr,
        "override": None if lr is None else f"optimizer.lr={lr:.3g}",
        "applied": bool(tune.apply and lr is not None),
        "min_lr": tune.min_lr,
        "max_lr": tune.max_lr,
        "steps": len(finder.results["lr"]),
        "lr": finder.results["lr"],
        "loss": [x if math.isfinite(x) else None for x in finder.results["loss"]],
    }
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        fig = finder.plot(suggest=suggestion is not None)
        fig.axes[0].set_title("no suggestion" if lr is None else f"suggestion (red): {result['override']}")
        fig.savefig(out_dir / "lr_find.png", dpi=100)
        write_json(out_dir / "lr_find.json", result)
    stop = {"status": "ok", "error": None, "lr_find": {k: result[k] for k in ("suggestion", "override", "steps")}}
    if lr is None:
        log.warning(
            "lr_find: no suggestion from %d steps (plot: %s); try other tune.min_lr, tune.max_lr%s",
            result["steps"],
            out_dir / "lr_find.png",
            f"; training with optimizer.lr={cfg.optimizer.lr:g} as configured" if tune.apply else "",
        )
        return LrFound() if tune.apply else LrFound(stop=stop)
    if not tune.apply:
        log.info(
            "lr_find: suggested %s: rerun with that override, or add tune.apply=true (plot: %s)",
            result["override"],
            out_dir / "lr_find.png",
        )
        return LrFound(stop=stop)
    log.info("lr_find: training with %s (plot: %s)", result["override"], out_dir / "lr_find.png")
    return LrFound(lr=float(f"{lr:.3g}"))
