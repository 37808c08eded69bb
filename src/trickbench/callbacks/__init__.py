"""Every Lightning callback trickbench ships, one concern per file (Lightning's own layout), re-exported here.
conf/ names each by the module that defines it (_target_: trickbench.callbacks.<file>.<Class>), so the validation
layer finds that module's RULES. Beside them, the checkpoint writer every run plugs into its Trainer
(checkpoint_io.py: a Lightning plugin, not a callback, but what a save calls back into). A new callback: one file
here, one yaml in conf/callbacks/ (or a trick's yaml)."""

from trickbench.callbacks.checkpoint_io import AtomicCheckpointIO
from trickbench.callbacks.ema import EMAWeightAveraging
from trickbench.callbacks.lookahead import Lookahead
from trickbench.callbacks.monitors import CheckpointOnSigterm, DivergenceGuard, FirstLossCheck, GradientNorms
from trickbench.callbacks.overfit import OverfitCheck
from trickbench.callbacks.requeue import RequeueAtTimeLimit, ResumeMidEpoch
from trickbench.callbacks.swa import SWA
from trickbench.callbacks.timing import CompileClock, EpochTimer
from trickbench.callbacks.whitening import FreezeWhiteningBias

__all__ = [
    "SWA",
    "AtomicCheckpointIO",
    "CheckpointOnSigterm",
    "CompileClock",
    "DivergenceGuard",
    "EMAWeightAveraging",
    "EpochTimer",
    "FirstLossCheck",
    "FreezeWhiteningBias",
    "GradientNorms",
    "Lookahead",
    "OverfitCheck",
    "RequeueAtTimeLimit",
    "ResumeMidEpoch",
]
