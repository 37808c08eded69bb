"""Model presets named after a published network bring its normalization (ResNets and speednet: batch norm) as the
default choice of norm; the command line, tricks, ladder rungs and experiments still choose over it, and the
lecture's presets keep norm=none."""

import pytest
from conftest import CONF, compose_cfg

from trickbench.config.validate import validate
from trickbench.models import build_model

# the norm each model preset composes to when nothing else chooses one
MODEL_NORM = {
    "cnn": "none",
    "cnn_2block": "none",
    "cnn_3block": "none",
    "cnn_9conv": "none",
    "cnn_12conv": "none",
    "mlp": "none",
    "lenet5": "none",  # LeNet-5 (1998) had none
    "vgg16": "none",  # the original VGG predates batch norm; norm=batch is VGG16-BN
    "resnet18": "batch",
    "resnet20": "batch",
    "resnet50": "batch",
    "speednet": "batch",  # airbench's BN; its settings are in experiment=speedrun/cifar10
}


def test_every_model_preset_is_listed():
    assert sorted(MODEL_NORM) == sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", sorted(MODEL_NORM))
def test_model_preset_brings_its_norm(model):
    assert compose_cfg([f"model={model}"]).norm.name == MODEL_NORM[model]


@pytest.mark.parametrize(
    "overrides,norm",
    [
        (["model=resnet20", "norm=none"], "none"),  # the command line wins
        (["norm=group", "model=resnet50"], "group"),  # in either order
        (["model=resnet20", "norm=batch", "norm.momentum=0.4"], "batch"),
        (["model=resnet20", "trick=batchnorm"], "batch"),
        (["model=vgg16", "trick=batchnorm"], "batch"),
        (["experiment=ablation/lecture_solutions", "model=resnet20"], "none"),  # the experiment's explicit norm=none
        (["experiment=ablation/lecture_solutions", "model=resnet20", "trick=batchnorm"], "batch"),
        (["experiment=ablation/bag_of_tricks", "norm=none"], "none"),
        (["experiment=speedrun/cifar10"], "batch"),
    ],
)
def test_command_line_tricks_and_experiments_choose_over_the_model(overrides, norm):
    assert compose_cfg(overrides).norm.name == norm


@pytest.mark.parametrize("experiment", ["lecture_solutions", "generalization", "activations", "inits", "norms"])
def test_lecture_presets_keep_norm_none(experiment):
    assert compose_cfg([f"experiment=ablation/{experiment}"]).norm.name == "none"
    text = (CONF / "experiment" / "ablation" / f"{experiment}.yaml").read_text()
    assert "- override /norm: none" in text  # stated, not inherited


@pytest.mark.parametrize(
    "rung,norm", [("base", "none"), ("erasing", "none"), ("batchnorm", "batch"), ("skip", "batch")]
)
def test_generalization_rungs_add_batch_norm_where_they_did(rung, norm):
    cfg = compose_cfg(["experiment=ablation/generalization", f"ladder=generalization/{rung}"])
    assert (cfg.model.name, cfg.norm.name) == ("cnn", norm)


def test_readme_resnet20_command_takes_zero_gamma():
    # python train.py data=cifar10 model=resnet20 model.zero_init_residual=true: refused while norm defaulted to none
    cfg = compose_cfg(["data=cifar10", "model=resnet20", "model.zero_init_residual=true"])
    validate(cfg)
    assert cfg.norm.name == "batch"
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (3, 32, 32), 10)
    gammas = [b.convs[-1][1].weight for b in net.features if hasattr(b, "shortcut")]
    assert len(gammas) == 9 and all((g == 0).all() for g in gammas)
