"""trick=distill (tricks/distill.py, models/teacher.py): the distillation loss formula, bad values, off without a
distill node, a student that distils from a frozen teacher kept outside its checkpoint, and a teacher that must match
the student's classes, image shape and normalization."""

import math

import pytest
import torch
from conftest import compose_cfg, run_with_probe, tiny_run_overrides
from omegaconf import OmegaConf

from trickbench import train
from trickbench.data import DATASETS
from trickbench.errors import ConfigError
from trickbench.models import build_model, count_params
from trickbench.models.teacher import load_teacher
from trickbench.rules import check
from trickbench.tricks import distill

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


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
