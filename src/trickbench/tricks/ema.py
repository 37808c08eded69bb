"""trick=ema: Lightning's EMAWeightAveraging (an exponential moving average of the weights and BatchNorm buffers),
with one change to its checkpoint handling."""

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeightAveraging(LightningEMA):
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Lightning's would put the raw weights (current_model_state) back when the best checkpoint is loaded for
        # testing; outside fit, the averaged weights (state_dict, already loaded) are the ones to evaluate
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
