"""trick=ema: Lightning's EMAWeightAveraging (an exponential moving average of the weights and BatchNorm buffers),
with one change to its checkpoint handling, and a start that may be a fraction of the run."""

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.trainer.states import TrainerFn

from trickbench import run_length
from trickbench.rules import Rule, integer, number

RULES = [
    Rule("callbacks.ema.decay", number(0, 1), "a number in [0, 1] (the average's weight on its past)"),
    Rule("callbacks.ema.update_every_n_steps", integer(1), "an integer >= 1"),
]


class EMAWeightAveraging(LightningEMA):
    """update_starting_at_step: an optimizer step (integer), or a fraction of the run's steps in (0, 1)
    (run_length.py), resolved when training starts."""

    def __init__(self, *args, update_starting_at_step: int | float | None = None, **kwargs):
        fraction = run_length.is_fraction(update_starting_at_step)
        super().__init__(*args, update_starting_at_step=None if fraction else update_starting_at_step, **kwargs)
        self._start_fraction = update_starting_at_step if fraction else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start_fraction is not None:
            self.update_starting_at_step = round(self._start_fraction * trainer.estimated_stepping_batches)
        super().on_train_start(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Lightning's would put the raw weights (current_model_state) back when the best checkpoint is loaded for
        # testing; outside fit, the averaged weights (state_dict, already loaded) are the ones to evaluate
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
