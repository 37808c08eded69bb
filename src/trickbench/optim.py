"""conf/optimizer and conf/scheduler: torch.optim classes by _target_, plus the keys that are ours, not the
classes': linear lr scaling, no-bias-decay and norm-lr-scale param groups (optimizer), linear warmup and an
exponential decay's final factor (scheduler). Warmup, milestones and step sizes may be fractions of the run
(run_length.py: an integer is epochs, a float in (0, 1) a fraction)."""

import logging
import math

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR, StepLR

from trickbench import run_length
from trickbench.data.registry import DATASETS
from trickbench.errors import ConfigError
from trickbench.rules import (
    NodeCheck,
    Relation,
    Rule,
    boolean,
    check,
    fraction,
    integer,
    mapping,
    nonnegative,
    number,
    one_of,
    optional,
    positive,
    takes,
)

log = logging.getLogger(__name__)

# keys of conf/optimizer that are not the torch class's arguments (conf/scheduler keeps its own beside lr_scheduler)
OPTIMIZER_KEYS = ("scale_lr_to_batch", "no_bias_decay", "norm_lr_scale")
# lr_scheduler arguments that give the schedule's length: null = the rest of the run after warmup
RUN_LENGTH_ARGS = ("T_max", "total_iters")
# _NormBase: batch and instance norms (private, but the one base class they share)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


INTERVALS = ("epoch", "step")


def _check_interval(lr_scheduler, cfg) -> None:
    interval = cfg.scheduler.get("interval")
    if interval not in INTERVALS:
        raise ConfigError("scheduler.interval", interval, "epoch or step (how often the lr_scheduler steps)")


def _epochs_after_warmup(cfg) -> float:
    max_epochs = cfg.trainer.max_epochs
    return max_epochs - run_length.in_epochs(cfg.scheduler.get("warmup_epochs", 0), max_epochs)


def _most_steps(cfg) -> int | None:
    """An upper bound on the run's optimizer steps before any data is read: every epoch a full pass over the train
    images the config names (data.subset, else the dataset's whole train set) in batches of data.batch_size."""
    data = cfg.get("data") or {}  # a builder's own check (check_scheduler) has no data node
    name, batch = data.get("name"), data.get("batch_size")
    if name not in DATASETS or not isinstance(batch, int) or batch < 1:
        return None
    images = min(data.get("subset") or DATASETS[name].train_size, DATASETS[name].train_size)
    return cfg.trainer.max_epochs * math.ceil(images / batch)


def _within_run(key: str, at_end_ok: bool = False) -> Relation:
    """A count of the schedule (integer milestones, step_size; T_max, total_iters: at_end_ok) at or past the run's
    epochs after the warmup: the lr never changes there (a milestone, a step) or the decay stops unfinished (a length
    past the run). Counts in steps (interval=step) against the most steps the run can have; build_scheduler checks
    them against its exact steps."""

    def ok(v, cfg) -> bool:
        counts = [m for m in (v if is_list(v) else [v]) if not run_length.is_fraction(m)]
        if cfg.scheduler.get("interval") == "step":
            most = _most_steps(cfg)
            return most is None or all(m <= most for m in counts)
        left = _epochs_after_warmup(cfg)
        return cfg.scheduler.get("interval") != "epoch" or all(m < left or (at_end_ok and m == left) for m in counts)

    def allowed(cfg) -> str:
        if cfg.scheduler.get("interval") == "step":
            most = "trainer.max_epochs x the train images / data.batch_size"
            return f"at most {_most_steps(cfg)}, the most steps this run can have ({most}): the decay would stop short"
        left = f"{_epochs_after_warmup(cfg):g}, the schedule's epochs (trainer.max_epochs after the warmup)"
        return f"at most {left}: the decay would stop short" if at_end_ok else f"below {left}: it would never fire"

    return Relation(f"scheduler.lr_scheduler.{key}", ok, allowed)


OPTIMIZER_TAKES = takes("optimizer", given=("params",), own=OPTIMIZER_KEYS)
RULES = [
    Rule("optimizer.lr", positive, "a number > 0"),
    Rule("optimizer.weight_decay", nonnegative, "a number >= 0"),
    Rule("optimizer.momentum", fraction, "a number in [0, 1)"),
    Rule(
        "optimizer.scale_lr_to_batch", optional(integer(1)), "null (off) or the reference batch size, an integer >= 1"
    ),
    Rule("optimizer.no_bias_decay", boolean, "true or false"),
    Rule("optimizer.nesterov", boolean, "true or false"),
    Relation(
        "optimizer.momentum",
        lambda v, cfg: v > 0 or not cfg.optimizer.get("nesterov"),
        lambda cfg: "a number in (0, 1) with optimizer.nesterov=true (torch: Nesterov needs a momentum)",
    ),
    OPTIMIZER_TAKES,
    Rule("optimizer.norm_lr_scale", positive, "a number > 0: the lr multiplier of norm layers (1: off)"),
    Rule(
        "scheduler.warmup_epochs",
        run_length.epochs_or_fraction(0),
        "an integer >= 0 (epochs; 0: no warmup) or a fraction of the run in (0, 1)",
    ),
    Rule("scheduler.warmup_start_factor", number(0, 1, open_low=True), "a number in (0, 1]"),
    Rule(
        "scheduler.lr_scheduler",
        optional(lambda v: mapping(v) and "_target_" in v),
        "null (a constant lr) or a node with a _target_ (a torch.optim.lr_scheduler class)",
    ),
    Rule("scheduler.interval", optional(one_of(INTERVALS)), "null (with lr_scheduler=null), epoch or step"),
    NodeCheck("scheduler.lr_scheduler", _check_interval),  # a schedule needs an interval
    takes("scheduler.lr_scheduler", given=("optimizer",)),
    Rule("scheduler.lr_scheduler.start_factor", number(0, 1, open_low=True), "a number in (0, 1]"),
    Rule("scheduler.lr_scheduler.gamma", positive, "a number > 0 (the lr factor per step of the decay)"),
    Rule("scheduler.lr_scheduler.eta_min", nonnegative, "a number >= 0 (the lowest lr)"),
    *[
        Rule(
            f"scheduler.lr_scheduler.{k}",
            optional(integer(1)),
            "null (the run's steps after warmup) or an integer >= 1",
        )
        for k in ("T_max", "total_iters")
    ],
    Rule("scheduler.lr_scheduler.end_factor", number(0, 1), "a number in [0, 1]"),
    Rule(
        "scheduler.lr_scheduler.milestones",
        lambda v: is_list(v) and all(map(run_length.epochs_or_fraction(0), v)),
        "a list of epochs (integers >= 0) or fractions of the run in (0, 1)",
    ),
    Rule(
        "scheduler.lr_scheduler.step_size",
        run_length.epochs_or_fraction(1),
        "an integer >= 1 (epochs) or a fraction of the run in (0, 1)",
    ),
    Rule(
        "scheduler.final_lr_factor",
        optional(number(0, 1, open_low=True)),
        "null (use lr_scheduler.gamma) or a number in (0, 1]: the lr factor the decay reaches at the run's end",
    ),
    Relation(
        "scheduler.warmup_epochs",
        lambda v, cfg: run_length.is_fraction(v) or v < cfg.trainer.max_epochs,
        lambda cfg: f"less than trainer.max_epochs={cfg.trainer.max_epochs} (the warmup must end before training does)",
    ),
    Relation(
        "scheduler.lr_scheduler.milestones",
        lambda v, cfg: all(_after_warmup(m, cfg) for m in v if run_length.is_fraction(m)),
        lambda cfg: (
            "fractions of the run after the warmup's end "
            f"({run_length.in_epochs(cfg.scheduler.warmup_epochs, cfg.trainer.max_epochs):g} of "
            f"trainer.max_epochs={cfg.trainer.max_epochs} epochs): a decay inside the warmup cuts it short"
        ),
    ),
    _within_run("milestones"),
    _within_run("step_size"),
    *[_within_run(k, at_end_ok=True) for k in RUN_LENGTH_ARGS],
]


def is_list(v) -> bool:
    return isinstance(v, list | ListConfig)


def _after_warmup(milestone: float, cfg) -> bool:
    """A fraction milestone's epoch (counted from the run's start) ends after the warmup."""
    max_epochs, warmup = cfg.trainer.max_epochs, cfg.scheduler.get("warmup_epochs", 0)
    return run_length.to_epoch(milestone, max_epochs) > run_length.in_epochs(warmup, max_epochs)


def check_optimizer(cfg: DictConfig) -> None:
    check(cfg, RULES, "optimizer")
    OPTIMIZER_TAKES.check(cfg)  # a NodeCheck: check() with a prefix skips it


def check_scheduler(cfg: DictConfig, max_epochs: int) -> None:
    check(
        {"scheduler": cfg, "trainer": {"max_epochs": max_epochs}}, [r for r in RULES if r.key.startswith("scheduler.")]
    )


def scaled_lr(cfg: DictConfig, global_batch: int) -> float:
    """Linear scaling (Goyal et al. 2017): optimizer.lr is the lr for a batch of scale_lr_to_batch images."""
    ref = cfg.get("scale_lr_to_batch")
    return cfg.lr if ref is None else cfg.lr * global_batch / ref


def param_groups(
    model: nn.Module, weight_decay: float, *, no_bias_decay: bool = True, norm_lr_scale: float = 1.0, lr: float = 0.0
) -> list[dict]:
    """no_bias_decay: weight decay on conv/linear weights only; biases and every norm layer's parameters get none.
    norm_lr_scale != 1: every norm layer's parameters in a group of their own with lr x norm_lr_scale (lr: the other
    groups') and weight decay / norm_lr_scale, so their decay per step (lr x weight_decay in SGD, AdamW) stays."""
    decay, no_decay, norm = [], [], []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for p in module.parameters(recurse=False):
            if is_norm and norm_lr_scale != 1:
                norm.append(p)
            elif no_bias_decay and (is_norm or p.ndim <= 1):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_bias_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if norm_lr_scale != 1:
        norm_decay = 0.0 if no_bias_decay else weight_decay / norm_lr_scale
        groups.append({"params": norm, "lr": lr * norm_lr_scale, "weight_decay": norm_decay})
    return groups


def build_optimizer(model: nn.Module, cfg: DictConfig, global_batch: int) -> Optimizer:
    """global_batch: the images behind one optimizer step (per device x devices x accumulated batches)."""
    check_optimizer(cfg)
    lr = scaled_lr(cfg, global_batch)
    if cfg.get("scale_lr_to_batch") is not None:
        log.info("lr %g = optimizer.lr %g x global batch %d / %d", lr, cfg.lr, global_batch, cfg.scale_lr_to_batch)
    make = instantiate({k: v for k, v in cfg.items() if k not in OPTIMIZER_KEYS})
    no_bias_decay, norm_lr_scale = cfg.get("no_bias_decay", False), cfg.get("norm_lr_scale", 1.0)
    if no_bias_decay and not cfg.get("weight_decay"):
        log.warning("optimizer.no_bias_decay=true has no effect: optimizer.weight_decay is 0")
    if norm_lr_scale != 1:
        log.info("norm layers: lr %g = lr %g x optimizer.norm_lr_scale %g", lr * norm_lr_scale, lr, norm_lr_scale)
    if no_bias_decay or norm_lr_scale != 1:
        groups = param_groups(
            model, cfg.get("weight_decay", 0.0), no_bias_decay=no_bias_decay, norm_lr_scale=norm_lr_scale, lr=lr
        )
        return make(groups, lr=lr)
    return make(model.parameters(), lr=lr)


def optimizer_factory(cfg: DictConfig, batch_size: int):
    """TrickModule's optimizer factory: (model, replicas) -> build_optimizer for a global batch of batch_size x
    replicas (devices x accumulated batches). cfg stays the run's node: tune=lr_find's lr reaches it."""
    return lambda model, replicas: build_optimizer(model, cfg, batch_size * replicas)


def scheduler_factory(cfg: DictConfig):
    """TrickModule's scheduler factory: (optimizer, total steps, epochs) -> build_scheduler."""
    return lambda optimizer, total_steps, max_epochs: build_scheduler(optimizer, cfg, total_steps, max_epochs)


def _per_step(cls: type, kwargs: dict, steps_per_epoch: int) -> tuple[type, dict]:
    """An epoch-interval schedule as the per-step one that changes the lr at the same epoch boundaries."""
    if cls is StepLR:
        return StepLR, {**kwargs, "step_size": kwargs["step_size"] * steps_per_epoch}
    if cls is MultiStepLR:
        return MultiStepLR, {**kwargs, "milestones": [round(m * steps_per_epoch) for m in kwargs["milestones"]]}
    if cls is ExponentialLR:  # lr x gamma once per epoch = a StepLR of one epoch
        return StepLR, {**kwargs, "step_size": steps_per_epoch}
    allowed = f"step for {cls.__name__} under warmup (epoch: StepLR, MultiStepLR, ExponentialLR)"
    raise ConfigError("scheduler.interval", "epoch", allowed)


def _relative(cls: type, kwargs: dict, cfg: DictConfig, max_epochs: int, warmup: float) -> dict:
    """The schedule's arguments in epochs counted from its start, `warmup` (epochs, maybe fractional) after the
    run's: fraction milestones are epochs of the whole run; integer ones already count from the warmup's end."""
    if cls is MultiStepLR:
        given = list(kwargs["milestones"])
        milestones = [run_length.to_epoch(m, max_epochs) - warmup if run_length.is_fraction(m) else m for m in given]
        if any(m <= 0 for m, g in zip(milestones, given, strict=True) if run_length.is_fraction(g)):
            raise ConfigError("scheduler.lr_scheduler.milestones", given, "fractions of the run after the warmup's end")
        kwargs["milestones"] = milestones
    if cls is StepLR:
        kwargs["step_size"] = run_length.to_epoch(kwargs["step_size"], max_epochs)
    if cls is ExponentialLR and cfg.get("final_lr_factor") is not None:  # lr x gamma per epoch reaches it at the end
        kwargs["gamma"] = cfg.final_lr_factor ** (1 / max(1.0, max_epochs - warmup))
    return kwargs


def _schedule(
    optimizer, cfg: DictConfig, length: int, steps_per_epoch: int | None, max_epochs: int, warmup: float = 0.0
) -> LRScheduler:
    """cfg.lr_scheduler on the optimizer, `length` long in its interval; steps_per_epoch given: converted to run
    per optimizer step."""
    partial = instantiate(cfg.lr_scheduler)
    cls, kwargs = partial.func, dict(partial.keywords)
    for key in RUN_LENGTH_ARGS:  # in epochs, a Relation checked it before any data was read
        if cfg.interval == "step" and kwargs.get(key) is not None and kwargs[key] > length:
            allowed = f"at most {length}, the run's steps after the warmup: the decay would stop short (null: all)"
            raise ConfigError(f"scheduler.lr_scheduler.{key}", kwargs[key], allowed)
    kwargs |= {k: length for k in RUN_LENGTH_ARGS if k in kwargs and kwargs[k] is None}
    kwargs = _relative(cls, kwargs, cfg, max_epochs, warmup)
    if steps_per_epoch is not None and cfg.interval == "epoch":
        cls, kwargs = _per_step(cls, kwargs, steps_per_epoch)
    return cls(optimizer, **kwargs)


def build_scheduler(optimizer, cfg: DictConfig, total_steps: int, max_epochs: int) -> dict | None:
    """{"scheduler", "interval"} for Lightning, or None for a constant lr. A null T_max/total_iters is the
    whole run, in the schedule's interval. With scheduler.warmup_epochs, the lr rises linearly per step from
    warmup_start_factor x lr to lr, then the schedule starts as if training began there (its epoch 0 is the
    first epoch after warmup); everything runs per step, epoch schedules still changing the lr at epoch ends."""
    check_scheduler(cfg, max_epochs)
    steps_per_epoch = total_steps // max_epochs
    warmup_steps = run_length.to_steps(cfg.get("warmup_epochs", 0), steps_per_epoch, total_steps)
    if not warmup_steps:
        if cfg.get("lr_scheduler") is None:
            return None
        length = total_steps if cfg.interval == "step" else max_epochs
        return {"scheduler": _schedule(optimizer, cfg, length, None, max_epochs), "interval": cfg.interval}
    warmup = LinearLR(optimizer, start_factor=cfg.warmup_start_factor, end_factor=1.0, total_iters=warmup_steps)
    if cfg.get("lr_scheduler") is None:  # LinearLR holds lr x end_factor once warmup is over
        return {"scheduler": warmup, "interval": "step"}
    after = _schedule(
        optimizer, cfg, total_steps - warmup_steps, steps_per_epoch, max_epochs, warmup_steps / steps_per_epoch
    )
    return {"scheduler": SequentialLR(optimizer, [warmup, after], milestones=[warmup_steps]), "interval": "step"}
