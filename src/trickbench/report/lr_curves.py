"""The learning rate of every optimizer step of a composed run config, without data or training: the schedule the
run's optimizer and scheduler builders make (optim.py), stepped as Lightning steps it. tests/report/
test_results_presets.py checks every results preset with first_decay_problem; the page draws the lr the runs
logged instead (results_lr.py), never this simulation of today's conf/."""

import math

from omegaconf import DictConfig

from trickbench import run_length

FULL_TRAIN_SET = {"cifar10": 50000, "fashion_mnist": 60000}  # images of each official train split


def steps_per_epoch(cfg: DictConfig) -> int:
    """Optimizer steps of one epoch: the train split (subset or full, minus val) in batches, the last one partial."""
    images = (cfg.data.subset or FULL_TRAIN_SET[cfg.data.name]) - cfg.data.val_size
    return math.ceil(images / cfg.data.batch_size)


def lr_per_step(cfg: DictConfig) -> tuple[list[float], int]:
    """The lr at each optimizer step of the run, and the steps per epoch."""
    import torch
    from torch import nn

    from trickbench.optim import build_optimizer, build_scheduler

    spe, epochs = steps_per_epoch(cfg), cfg.trainer.max_epochs
    layer = nn.Linear(1, 1)
    optimizer = build_optimizer(layer, cfg.optimizer, global_batch=cfg.data.batch_size)
    scheduler = build_scheduler(optimizer, cfg.scheduler, spe * epochs, epochs)
    with torch.no_grad():
        optimizer.step()  # once, so the scheduler steps after an optimizer step as in training (no gradient: no change)
    lrs = []
    for step in range(spe * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        if scheduler and (scheduler["interval"] == "step" or (step + 1) % spe == 0):
            scheduler["scheduler"].step()
    return lrs, spe


def warmup_steps(cfg: DictConfig) -> int:
    spe = steps_per_epoch(cfg)
    return run_length.to_steps(cfg.scheduler.get("warmup_epochs", 0), spe, spe * cfg.trainer.max_epochs)


def first_decay_problem(cfg: DictConfig) -> str | None:
    """Why the schedule decays too early, or None: the lr may not fall inside the warmup, and may not fall to half
    its peak within 10% of the run after the warmup's end (a step decay right after warmup, a no-op warmup)."""
    lrs, _ = lr_per_step(cfg)
    warm, total = warmup_steps(cfg), len(lrs)
    if any(lrs[t] < lrs[t - 1] for t in range(1, warm)):
        return f"the lr falls inside the warmup (its first {warm} of {total} steps)"
    peak = max(lrs)
    early = warm + math.ceil(0.1 * total)
    falls = [t for t in range(warm, min(early, total)) if lrs[t] <= 0.5 * peak]
    if falls:
        return f"the lr falls to half its peak at step {falls[0]} of {total}, within 10% of the run after the warmup"
    return None
