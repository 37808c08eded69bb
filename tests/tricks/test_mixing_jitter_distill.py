"""Bag-of-Tricks batch and teacher/EMA pieces: mixup/CutMix (soft targets, training only), color jitter and
PCA lighting (per sample, train-split eigenvectors), distillation (the loss formula; a frozen teacher outside
the student's checkpoint) and EMA of the weights (the update formula; what is validated, saved and tested)."""

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, compose_cfg, learnable_images, tiny_run_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from trickbench import train
from trickbench.config.validate import check_trick_conflicts, validate
from trickbench.data import DATASETS, BatchTransform, ImageDataModule
from trickbench.data.augment import PCALighting
from trickbench.errors import ConfigError
from trickbench.models import build_model, count_params
from trickbench.models.teacher import load_teacher
from trickbench.rules import check
from trickbench.tricks import StepTrick, distill
from trickbench.tricks.mixing import MixUpCutMix

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def augment(*overrides: str):
    return compose_cfg(list(overrides)).augment


def datamodule(name, source, root, **kw) -> ImageDataModule:
    dm = ImageDataModule(name, source=str(source), root=str(root), download=False, val_size=20, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def training_batch(dm: ImageDataModule, batch, step: int):
    """The batch as the training step sees it at a global step: from the datamodule, then mixed (tricks/mixing.py):
    (images, labels) or (mixed images, labels, soft targets)."""
    dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
    x, y = dm.on_after_batch_transfer(batch, 0)
    mix = MixUpCutMix(dm.augment_cfg.get("mixup_alpha"), dm.augment_cfg.get("cutmix_alpha"))
    if not mix.active:
        return x, y
    mix.setup(None, SimpleNamespace(hparams=SimpleNamespace(num_classes=dm.num_classes)), "fit")
    mixed, soft = mix.batch(x, y)
    return mixed, y, soft


# ---- mixup / CutMix ------------------------------------------------------------------------------------
def partner_of(x: torch.Tensor, mixed: torch.Tensor, lam: float) -> list[int]:
    """For each image, the index of the image it was mixed with: (mixed - lam * x) / (1 - lam) is that image."""
    other = (mixed - lam * x) / (1 - lam)
    distances = torch.cdist(other.flatten(1), x.flatten(1))
    return distances.argmin(dim=1).tolist()


@pytest.fixture(scope="module")
def cifar_batch(cifar_folder, tmp_path_factory):
    dm = datamodule("cifar10", cifar_folder, tmp_path_factory.mktemp("data"))
    return next(iter(dm.train_dataloader()))


def test_mixup_is_a_convex_combination_of_images_and_one_hot_targets(cifar_folder, cifar_batch, tmp_path):
    # alpha 1 (uniform lam) in place of trick=mixup's 0.2, whose lam is often within 1e-4 of 0 or 1
    mix = augment("trick=mixup", "augment.mixup_alpha=1.0")
    dm = datamodule("cifar10", cifar_folder, tmp_path, augment=mix, normalize="minus_one_one")
    x, y = cifar_batch
    plain = dm.transform(x, train=False)
    lams = set()
    for step in range(3):
        mixed, labels, soft = training_batch(dm, (x, y), step)
        assert torch.equal(labels, y)  # the original labels, for train accuracy
        onehot = F.one_hot(y, 10).float()
        # lam from the soft targets: the weight left on an image's own label when its partner's label differs
        own = soft[torch.arange(len(y)), y]
        lam = float(own[(own > 0) & (own < 1)][0])
        perm = partner_of(plain, mixed, lam)
        assert sorted(perm) == list(range(len(y))) and perm != list(range(len(y)))
        torch.testing.assert_close(mixed, lam * plain + (1 - lam) * plain[perm])
        torch.testing.assert_close(soft, lam * onehot + (1 - lam) * onehot[perm])
        lams.add(round(lam, 6))
    assert len(lams) == 3  # a new lam every batch
    dm.trainer.training = False
    val = dm.on_after_batch_transfer((x, y), 0)
    assert len(val) == 2 and torch.equal(val[0], plain) and torch.equal(val[1], y)


def test_cutmix_pastes_a_box_whose_area_sets_the_targets(fmnist_mirror, tmp_path):
    dm = datamodule("fashion_mnist", fmnist_mirror, tmp_path, augment=augment("trick=cutmix"))
    n = 16
    x = torch.arange(n, dtype=torch.uint8).mul(10).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    y = torch.arange(n) % 10
    for step in range(3):
        mixed, labels, soft = training_batch(dm, (x, y), step)
        source = mixed.mul(255).round().div(10).long()[:, 0]  # which image each pixel came from
        pasted = source != torch.arange(n).view(n, 1, 1)
        assert torch.equal(labels, y)
        for i in range(n):
            rows, cols = pasted[i].any(dim=1).nonzero(), pasted[i].any(dim=0).nonzero()
            if len(rows):  # the pasted pixels fill one rectangle, all from one other image
                box = pasted[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                assert box.all() and pasted[i].sum() == box.numel()
                assert len(source[i][pasted[i]].unique()) == 1
        area = pasted.flatten(1).float().mean(dim=1)
        lam = 1 - float(area[0])
        assert torch.allclose(area, torch.full_like(area, 1 - lam))  # one box size per batch
        partner = [int(source[i][pasted[i]][0]) if pasted[i].any() else (i - 1) % n for i in range(n)]
        expected = lam * F.one_hot(y, 10).float() + (1 - lam) * F.one_hot(y[partner], 10).float()
        torch.testing.assert_close(soft, expected)


def test_mixup_and_cutmix_together_choose_one_per_batch(fmnist_mirror, tmp_path):
    mix = augment("trick=[mixup,cutmix]", "augment.mixup_alpha=1.0")  # lam away from 0 and 1: off the grid
    dm = datamodule("fashion_mnist", fmnist_mirror, tmp_path, augment=mix)
    n = 16
    x = torch.arange(n, dtype=torch.uint8).mul(10).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    y = torch.arange(n) % 10
    kinds = set()
    for step in range(12):
        mixed = training_batch(dm, (x, y), step)[0]
        on_grid = torch.allclose(mixed * 25.5, (mixed * 25.5).round(), atol=1e-4)  # CutMix only copies pixels
        kinds.add("cutmix" if on_grid else "mixup")
    assert kinds == {"mixup", "cutmix"}


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


@pytest.mark.parametrize(
    "key,value",
    [
        ("mixup_alpha", -0.1),
        ("cutmix_alpha", -1),
        ("pca_lighting", -0.1),
        ("color_jitter", {"brightness": 1.5}),
        ("color_jitter", {"hue": 0.6}),
        ("color_jitter", {"gamma": 0.1}),
    ],
)
def test_bad_augment_values_fail_before_data_is_read(key, value, tmp_path):
    cfg = OmegaConf.merge(augment(), {key: value})
    dm = ImageDataModule("cifar10", source=str(tmp_path / "absent"), root=str(tmp_path), augment=cfg)
    with pytest.raises(ConfigError) as err:  # the absent source would be the error once data is read
        dm.prepare_data()
    assert str(err.value).startswith(f"augment.{key}")
    with pytest.raises(ConfigError) as err:
        BatchTransform("none", cfg)
    assert str(err.value).startswith(f"augment.{key}")


# ---- color jitter and PCA lighting ---------------------------------------------------------------------
def jitter_of(transform: BatchTransform):
    return next(m for m in transform.augment if type(m).__name__ == "ColorJitter")


def test_color_jitter_factors_are_per_sample_within_0_6_and_1_4():
    transform = BatchTransform("none", augment("augment=color_jitter"), (32, 32))
    x, _ = learnable_images(64, (3, 32, 32), 0)
    transform(x, train=True)
    params = jitter_of(transform)._params
    for name in ("brightness_factor", "contrast_factor", "saturation_factor"):
        factors = params[name]
        assert len(factors) == 64 and factors.min() >= 0.6 and factors.max() <= 1.4
        assert factors.std() > 0.1  # drawn per image: uniform on [0.6, 1.4] has std 0.23
    assert torch.equal(params["hue_factor"], torch.zeros(64))


def test_brightness_jitter_scales_each_image_by_its_own_factor():
    cfg = OmegaConf.merge(augment(), {"color_jitter": {"brightness": 0.4}})
    transform = BatchTransform("none", cfg, (32, 32))
    x = torch.randint(0, 128, (32, 3, 32, 32), dtype=torch.uint8)  # <= 0.5: x 1.4 is not clamped
    out = transform(x, train=True)
    ratio = out.sum(dim=(1, 2, 3)) / x.float().div(255).sum(dim=(1, 2, 3))
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5 and ratio.std() > 0.1
    torch.testing.assert_close(ratio, jitter_of(transform)._params["brightness_factor"])


def test_color_jitter_on_grayscale_keeps_brightness_and_contrast_only():
    lighting = (torch.tensor([0.01]), torch.ones(1, 1))
    transform = BatchTransform("none", augment("augment=baseline"), (28, 28), channels=1, lighting=lighting)
    out = transform(learnable_images(32, (1, 28, 28), 0)[0], train=True)
    assert out.shape == (32, 1, 28, 28)
    params = jitter_of(transform)._params
    assert params["brightness_factor"].std() > 0.1
    assert torch.equal(params["saturation_factor"], torch.ones(32))
    assert torch.equal(params["hue_factor"], torch.zeros(32))


def pixel_covariance(images: torch.Tensor) -> torch.Tensor:
    pixels = images.double().div(255).transpose(0, 1).flatten(1)
    return torch.cov(pixels, correction=0).reshape(len(pixels), len(pixels))  # 1 channel: cov gives a scalar


@pytest.mark.parametrize("name,mirror", [("cifar10", "cifar_folder"), ("fashion_mnist", "fmnist_mirror")])
def test_pca_lighting_uses_the_train_splits_eigenvectors(name, mirror, request, tmp_path):
    dm = datamodule(name, request.getfixturevalue(mirror), tmp_path, augment=augment("augment=pca_lighting"))
    eigval = torch.tensor(dm.info["pca_lighting"]["eigval"], dtype=torch.float64)
    eigvec = torch.tensor(dm.info["pca_lighting"]["eigvec"], dtype=torch.float64)
    want_val, want_vec = torch.linalg.eigh(pixel_covariance(dm.train_set.x))
    torch.testing.assert_close(eigval, want_val, rtol=1e-5, atol=1e-7)
    # eigenvectors are defined up to sign
    torch.testing.assert_close((eigvec * want_vec).sum(dim=0).abs(), torch.ones(len(eigval), dtype=torch.float64))
    other_splits = torch.linalg.eigvalsh(pixel_covariance(torch.cat([dm.val_set.x, dm.test_set.x])))
    assert not torch.allclose(eigval, other_splits, rtol=1e-3)
    lighting = next(m for m in dm.transform.augment if isinstance(m, PCALighting))
    assert torch.equal(lighting.eigval, eigval.float()) and torch.equal(lighting.eigvec, eigvec.float())


def test_pca_lighting_adds_one_offset_per_image_along_the_eigenvectors():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    eigval = torch.tensor([0.002, 0.01, 0.05])
    lighting = PCALighting(0.1, eigval, q)
    x = torch.rand(4000, 3, 4, 4)
    offset = lighting(x) - x
    per_image = offset[:, :, :1, :1]
    torch.testing.assert_close(offset, per_image.expand_as(offset), atol=1e-6, rtol=0)  # constant over pixels
    # the offset is eigvec @ (alpha * eigval): recover alpha, which is N(0, 0.1) per image and eigenvector
    alpha = (per_image.flatten(1).double() @ q.double()) / eigval.double()
    assert alpha.std(dim=0).sub(0.1).abs().max() < 0.006  # std error of the std: 0.1 / sqrt(2 * 4000) = 0.0011
    assert alpha.mean(dim=0).abs().max() < 0.008
    assert torch.corrcoef(alpha.T).sub(torch.eye(3, dtype=torch.float64)).abs().max() < 0.06


# ---- knowledge distillation ----------------------------------------------------------------------------
def test_distillation_loss_equals_the_formula_on_known_logits():
    student = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    teacher = [[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
    T, alpha, hard = 2.0, 0.7, 1.25

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    kl = sum(
        sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(t), softmax(s), strict=True))
        for s, t in zip(student, teacher, strict=True)
    ) / len(student)
    want = alpha * T * T * kl + (1 - alpha) * hard
    got = distill.distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(hard), T, alpha)
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    "node,error_key",
    [
        ({"teacher_ckpt": None, "T": 4.0, "alpha": 0.5}, "distill.teacher_ckpt"),
        ({"teacher_ckpt": "???", "T": 4.0, "alpha": 0.5}, "distill.teacher_ckpt"),
        ({"teacher_ckpt": "t.ckpt", "T": 0.0, "alpha": 0.5}, "distill.T"),
        ({"teacher_ckpt": "t.ckpt", "T": 4.0, "alpha": 1.5}, "distill.alpha"),
    ],
)
def test_bad_distill_values_are_config_errors(node, error_key):
    with pytest.raises(ConfigError) as err:  # the rules validate() runs, then the trick's own refusal of null
        check(OmegaConf.create({"distill": node}), distill.RULES)
        distill.Distill(**node)
    assert str(err.value).startswith(error_key)


def test_distillation_is_off_without_a_distill_node():
    assert not any(isinstance(t, distill.Distill) for t in train.build_step_tricks(compose_cfg([])))
    assert compose_cfg([]).get("distill") is None  # the default config has no distill node: off
    assert compose_cfg(["trick=distill"]).distill.teacher_ckpt is None  # and trick=distill alone fails (above)


class Probe(L.Callback):
    """Records what the module holds during fit and test."""

    def __init__(self):
        self.teacher_modes, self.steps, self.validated, self.tested = [], [], [], None

    def on_train_start(self, trainer, module):
        self.module_params = sum(p.numel() for p in module.parameters())
        teacher = next((t.teacher for t in module.step_tricks if isinstance(t, distill.Distill)), None)
        if teacher is not None:
            teacher.register_forward_pre_hook(lambda m, args: self.teacher_modes.append(m.training))
            self.teacher_at_start = {k: v.clone() for k, v in teacher.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_test_start(self, trainer, module):
        self.tested = {k: v.detach().clone() for k, v in module.state_dict().items()}


def run_with_probe(cfg, monkeypatch) -> tuple[dict, Probe]:
    probe, callbacks = Probe(), train._callbacks
    monkeypatch.setattr(train, "_callbacks", lambda c: [*callbacks(c), probe])
    return train.run(cfg), probe


@pytest.fixture(scope="module")
def teacher_ckpt(fmnist_mirror, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train.run(compose_cfg(tiny_run_overrides(fmnist_mirror, root=out / "data"), out / "run"))["checkpoints"][
        "best"
    ]


def test_student_distils_from_a_frozen_teacher_outside_its_checkpoint(
    teacher_ckpt, fmnist_mirror, tmp_path, monkeypatch
):
    # with mixup/CutMix on: the batches carry soft targets through the same run
    student = ["trick=[distill,mixup,cutmix]", f"distill.teacher_ckpt={teacher_ckpt}", "model.channels=[2,4]"]
    cfg = compose_cfg([*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), *student], tmp_path / "run")
    results, probe = run_with_probe(cfg, monkeypatch)

    assert probe.teacher_modes == [False] * 3  # called on every training batch (3), always in eval mode
    stored = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    for k, v in probe.teacher_at_start.items():
        assert torch.equal(v, stored[f"net.{k}"])  # the checkpoint's weights, untouched by training
    student_net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (1, 28, 28), 10)
    saved = torch.load(results["checkpoints"]["best"], weights_only=True)["state_dict"]
    assert set(saved) == {f"net.{k}" for k in student_net.state_dict()}
    assert results["params"] == probe.module_params == count_params(student_net)
    assert set(probe.steps[-1]) == set(saved)  # nor is the teacher in the module's state_dict


def test_teacher_must_match_the_students_classes_shape_and_normalization(teacher_ckpt, tmp_path):
    data = compose_cfg(["data=fashion_mnist"]).data
    teacher = load_teacher(teacher_ckpt, data.normalize, DATASETS[data.name].shape, 10)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    checkpoint = torch.load(teacher_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["num_classes"] = 5
    five_classes = tmp_path / "five.ckpt"
    torch.save(checkpoint, five_classes)
    cases = [
        (str(five_classes), data, "classes"),
        (teacher_ckpt, compose_cfg(["data=cifar10"]).data, "(3, 32, 32) images"),
        (teacher_ckpt, compose_cfg(["data.normalize=standardize"]).data, "data.normalize"),
    ]
    for path, student_data, words in cases:
        with pytest.raises(ConfigError) as err:
            load_teacher(path, student_data.normalize, DATASETS[student_data.name].shape, 10)
        assert str(err.value).startswith("distill.teacher_ckpt=") and words in str(err.value)


# ---- EMA of the weights --------------------------------------------------------------------------------
def ema_callback(decay: float | None = None):
    cfg = compose_cfg(["trick=ema", *([f"callbacks.ema.decay={decay}"] if decay else [])])
    return instantiate(cfg.callbacks.ema), float(cfg.callbacks.ema.decay)


def expected_ema(sequence: list[torch.Tensor], decay: float) -> torch.Tensor:
    ema = sequence[0]  # the first update copies the weights
    for w in sequence[1:]:
        ema = decay * ema + (1 - decay) * w
    return ema


def test_ema_callback_follows_the_formula_on_a_known_sequence():
    callback, decay = ema_callback()
    assert decay == 0.999
    module = train.build_module(compose_cfg([]), nn.Linear(2, 1), num_classes=2)
    callback.setup(SimpleNamespace(), module, "fit")
    sequence = [torch.full((1, 2), v) for v in (1.0, 3.0, -2.0, 5.0)]
    for step, w in enumerate(sequence, start=1):
        module.net.weight.data.copy_(w)
        callback.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, step - 1)
    averaged = callback._average_model.module.net.weight
    want = expected_ema([w.double() for w in sequence], decay)
    torch.testing.assert_close(averaged.double(), want, rtol=1e-6, atol=1e-6)
    by_hand = 1.0 * 0.999**3 + 0.001 * (3 * 0.999**2 - 2 * 0.999 + 5)  # d^3 w1 + (1 - d)(d^2 w2 + d w3 + w4)
    assert averaged.flatten()[0].item() == pytest.approx(by_hand, rel=1e-6)


def test_ema_weights_are_validated_checkpointed_and_tested(fmnist_mirror, tmp_path, monkeypatch):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "trick=ema", "callbacks.ema.decay=0.5"]
    results, probe = run_with_probe(compose_cfg(overrides, tmp_path / "run"), monkeypatch)
    checkpoint = torch.load(results["checkpoints"]["best"], weights_only=True)
    assert len(probe.steps) == 3 and checkpoint["global_step"] == 3
    for key, raw in probe.steps[-1].items():
        ema = expected_ema([step[key].double() for step in probe.steps], 0.5)
        if raw.is_floating_point():
            assert not torch.allclose(raw.double(), ema)  # the raw weights moved away from their average
        torch.testing.assert_close(checkpoint["state_dict"][key].double(), ema, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probe.validated[-1][key], checkpoint["state_dict"][key])
        torch.testing.assert_close(probe.tested[key], checkpoint["state_dict"][key])
        torch.testing.assert_close(checkpoint["current_model_state"][key], raw)


# ---- reachable from trick= and combinable ---------------------------------------------------------------
MINE = ["mixup", "cutmix", "ema", "distill"]


def test_the_tricks_compose_together_and_with_every_other_trick():
    cfg = compose_cfg(["trick=[mixup,cutmix,ema,distill]"])
    validate(cfg)
    assert (cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha, cfg.distill.T) == (0.2, 1.0, 20.0)
    assert cfg.callbacks.ema._target_.endswith("EMAWeightAveraging")
    for other in sorted(p.stem for p in (CONF / "trick").glob("*.yaml")):
        if other not in MINE:
            check_trick_conflicts([*MINE, other], CONF / "trick")
