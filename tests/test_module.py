"""The LightningModule (module.py): the training step takes the loss on a step trick's soft targets and the
accuracy on the labels."""

import torch
import torch.nn.functional as F
from conftest import compose_cfg
from torch import nn

from trickbench import train
from trickbench.tricks import StepTrick


class SoftTargets(StepTrick):
    """A step trick handing the loss fixed soft targets, as mixup/CutMix do."""

    def __init__(self, soft):
        self.soft = soft

    def batch(self, x, targets):
        return x, self.soft


def test_training_step_uses_soft_targets_for_the_loss_and_labels_for_accuracy():
    cfg = compose_cfg(["loss.label_smoothing=0.1"])
    net = nn.Linear(4, 3)
    x = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    soft = F.one_hot((y + 1) % 3, 3).float() * 0.7 + F.one_hot(y, 3).float() * 0.3
    module = train.build_module(cfg, net, num_classes=3, step_tricks=[SoftTargets(soft)])
    loss = module.training_step((x, y), 0)
    logits = net(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, soft, label_smoothing=0.1))
    expected_acc = (logits.argmax(1) == y).float().mean()
    torch.testing.assert_close(module.acc["train_acc"].compute(), expected_acc)
