"""speednet: the 8-layer net of airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"), built from the kit:
a patch-whitening first conv (kernel 2, no padding) -> act, three blocks of conv3x3 -> max-pool 2 -> norm -> act ->
conv3x3 -> norm -> act, then a global max-pool, a bias-free linear layer and a fixed logit scale. Its tricks:
- model.whiten: init_from_data() sets the first conv from the eigenvectors of the training images' patch second
  moments, +v and -v, each scaled by 1 / sqrt(eigenvalue + whiten_eps): whitened patches, both signs passing the act.
- model.whiten_trainable: false freezes those filters (their bias still trains; FreezeWhiteningBias, in
  callbacks/whitening.py, can stop it).
- model.identity_init: the first c_in filters of every 3x3 conv start as the identity (an implicit residual); the
  rest keep the kit's init. It is set when the model is built, so init=default keeps it and other inits replace it.
- model.logit_scale: logits x a constant (airbench: 1/9), a temperature fixed before training."""

import torch
from torch import nn
from torch.nn import functional as F

from trickbench.errors import ConfigError, is_int, is_number
from trickbench.models.blocks import Backbone, ConvBlock, LayerKit
from trickbench.models.registry import WIDEST, int_list, register_model


class GlobalMaxPool(nn.Module):
    """(N, C, H, W) -> (N, C): the largest value of each map. Not amax: its backward finds the maximum again by
    equality, and torch.compile under bf16 autocast recomputes the fused input in float32, so no element equals the
    saved bf16 maximum, 0/0 = NaN in every gradient (measured on CPU, torch 2.14; pytorch issue 186799). Adaptive
    max-pooling keeps the argmax indices for its backward, and was also 2.5x faster than amax compiled on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, 1).flatten(1)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def speed_block(cin: int, cout: int, kit: LayerKit) -> nn.Sequential:
    """conv -> max-pool -> norm -> act, then conv -> norm -> act (norm.placement=after_act swaps act and norm).
    Pooling before the norm leaves it a quarter of the values to normalize."""
    conv, *norm_and_act = ConvBlock(cin, cout, kit, 3)
    return nn.Sequential(conv, nn.MaxPool2d(2), *norm_and_act, ConvBlock(cout, cout, kit, 3))


@torch.no_grad()
def patch_second_moments(images: torch.Tensor, kernel_size: int, chunk: int = 512) -> torch.Tensor:
    """E[p p^T] over every kernel_size x kernel_size patch p (flattened like a conv weight: channel, row, column)."""
    d = images.shape[1] * kernel_size**2
    total, count = torch.zeros(d, d, dtype=torch.float64, device=images.device), 0
    for part in images.split(chunk):
        patches = F.unfold(part.double(), kernel_size).transpose(1, 2).reshape(-1, d)
        total += patches.T @ patches
        count += len(patches)
    return total / count


class SpeedNet(Backbone):
    def __init__(self, features: nn.Sequential, head: nn.Module, whiten: bool, whiten_eps: float):
        super().__init__(features, head)
        self.whiten, self.whiten_eps = whiten, whiten_eps

    @property
    def whitening(self) -> nn.Conv2d:
        return self.features[0]

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Patch-whitening init of the first conv (model.whiten=true; else nothing). images: a float (N, C, H, W)
        batch of training images, normalized as the network will see them (airbench uses 5000). train.py calls
        this, when the model has it, after building the model and before fit; a resumed run's checkpoint then
        overwrites it. Filters i and i + C*k*k are +v_i / sqrt(lambda_i + whiten_eps) and its negation (eigenpairs
        of the patch second-moment matrix, largest lambda first): the first half's outputs on such images have
        about the identity as second-moment matrix."""
        if not self.whiten or "features.0.weight" in getattr(self, "loaded_keys", ()):
            return  # model.init_from loaded the filters the later layers were trained on (models/transfer.py)
        conv = self.whitening
        cin, k = conv.in_channels, conv.kernel_size[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(patch_second_moments(images, k))
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = (eigenvectors / (eigenvalues + self.whiten_eps).sqrt()).T.reshape(-1, cin, k, k)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))

    def set_whitening_bias_trainable(self, trainable: bool) -> None:
        if self.whitening.bias is not None:
            self.whitening.bias.requires_grad_(trainable)


def _check(in_shape, widths, whiten_kernel_size, whiten, whiten_trainable, whiten_eps, identity_init, logit_scale):
    if not int_list()(widths):
        raise ConfigError("model.widths", list(widths), f"a list of integers in [1, {WIDEST}], one per block")
    side = min(in_shape[1:])
    if not (is_int(whiten_kernel_size) and 1 <= whiten_kernel_size <= side):
        raise ConfigError("model.whiten_kernel_size", whiten_kernel_size, f"an integer in [1, {side}], the image side")
    for key, value in (("whiten", whiten), ("whiten_trainable", whiten_trainable), ("identity_init", identity_init)):
        if not isinstance(value, bool):
            raise ConfigError(f"model.{key}", value, "true or false")
    if not (is_number(whiten_eps) and whiten_eps > 0):
        raise ConfigError("model.whiten_eps", whiten_eps, "a number > 0")
    if not (is_number(logit_scale) and logit_scale > 0):
        raise ConfigError("model.logit_scale", logit_scale, "a number > 0 (1: logits as the linear layer gives them)")


@register_model
def speednet(
    in_shape,
    num_classes,
    kit: LayerKit,
    widths=(64, 256, 256),
    whiten_kernel_size=2,
    whiten=True,
    whiten_trainable=False,
    whiten_eps=5e-4,
    identity_init=True,
    logit_scale=1 / 9,
):
    _check(in_shape, widths, whiten_kernel_size, whiten, whiten_trainable, whiten_eps, identity_init, logit_scale)
    cin = in_shape[0]
    # both signs of every whitening filter: the activation after it would otherwise drop half of each component
    whitening = nn.Conv2d(cin, 2 * cin * whiten_kernel_size**2, whiten_kernel_size, padding=0, bias=True)
    nn.init.zeros_(whitening.bias)  # as airbench: the whitened patches pass the activation unshifted at first
    if whiten and not whiten_trainable:
        whitening.weight.requires_grad_(False)
    layers, width = [whitening, kit.act()], whitening.out_channels
    for cout in widths:
        layers.append(speed_block(width, cout, kit))
        width = cout
    if identity_init:
        block_convs = [m for block in layers[2:] for m in block.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv in block_convs:
                nn.init.dirac_(conv.weight[: conv.in_channels])
    head = nn.Sequential(GlobalMaxPool(), nn.Linear(width, num_classes, bias=False), Scale(logit_scale))
    return SpeedNet(nn.Sequential(*layers), head, whiten, whiten_eps)
