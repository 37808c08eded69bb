"""FreezeWhiteningBias (callbacks/whitening.py): speednet's whitening bias trains until the configured epoch and is
frozen from it on."""

from types import SimpleNamespace

from conftest import build_speednet as build

from trickbench.callbacks import FreezeWhiteningBias


def test_freeze_whitening_bias_follows_the_epoch():
    net = build("model.widths=[4,8,8]")
    callback, module = FreezeWhiteningBias(epochs=3), SimpleNamespace(net=net)
    for epoch, trainable in [(0, True), (2, True), (3, False), (7, False)]:
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), module)
        assert net.features[0].bias.requires_grad is trainable
