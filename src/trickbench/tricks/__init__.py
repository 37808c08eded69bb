"""Tricks that change the training step, one file each, enabled by one conf/trick yaml that adds the trick under
`step:` (conf/train.yaml). Each is a StepTrick (base.py): a Lightning callback with three more hooks inside the step.
Tricks that only set config values (optimizer, scheduler, model, data keys) need no code at all."""

from trickbench.tricks.base import StepTrick

__all__ = ["StepTrick"]
