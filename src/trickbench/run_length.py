"""Lengths given relative to the run, so one preset is right at any trainer.max_epochs.

The convention, for the warmup, step milestones and step sizes (conf/scheduler/) and the SWA, Lookahead and EMA
starts: an integer is a number of epochs; a float in (0, 1) is a fraction of the run, counted from its first step
(warmup included). A fraction that names an epoch (a milestone, a start) is the epoch nearest to it, at least 1:
0.5 of 15 epochs is the end of epoch 8 (round half up), so epoch schedules still change the lr at epoch ends. The
warmup, which runs per step anyway, is round(fraction x the run's optimizer steps)."""

import math

from trickbench.errors import is_int, is_number


def is_fraction(v) -> bool:
    """A fraction of the run: a float in (0, 1) (YAML's 0.5; an integer is epochs)."""
    return is_number(v) and not is_int(v) and 0 < v < 1


def epochs_or_fraction(low: int = 0):
    """The predicate of a Rule: an integer >= low (epochs), or a fraction of the run."""
    return lambda v: (is_int(v) and v >= low) or is_fraction(v)


def to_epoch(v, max_epochs: int) -> int:
    """Epochs for v: an integer as it is, a fraction as the nearest epoch of max_epochs (at least 1)."""
    if is_fraction(v):
        return max(1, math.floor(v * max_epochs + 0.5))
    return int(v)


def in_epochs(v, max_epochs: int) -> float:
    """v as a (possibly fractional) number of epochs: a fraction x max_epochs, an integer as it is."""
    return v * max_epochs if is_fraction(v) else float(v)


def to_steps(v, steps_per_epoch: int, total_steps: int) -> int:
    """Optimizer steps for a warmup v: whole epochs x steps_per_epoch, or round(fraction x total_steps)."""
    if is_fraction(v):
        return round(v * total_steps)
    return int(v) * steps_per_epoch
