"""speednet's whitening conv (models/speednet.py): its bias trains for the first epochs only."""

import lightning as L

from trickbench.rules import Rule, integer

RULES = [Rule("callbacks.freeze_whitening_bias.epochs", integer(0), "an integer >= 0 (epochs the bias trains)")]


class FreezeWhiteningBias(L.Callback):
    """Trains the whitening conv's bias for the first `epochs` epochs only (airbench: 3; it converges early, and a
    first layer with nothing to train spares the backward pass its input gradients). Set at every epoch start from
    the epoch number, so a resumed run freezes it too. Models without a whitening conv are left alone."""

    def __init__(self, epochs: int = 3):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_trainable = getattr(getattr(pl_module, "net", pl_module), "set_whitening_bias_trainable", None)
        if set_trainable is not None:  # duck-typed: a torch.compile'd net forwards the attribute
            set_trainable(trainer.current_epoch < self.epochs)
