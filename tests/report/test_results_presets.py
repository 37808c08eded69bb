"""docs/results.md: every preset of conf/experiment/results/ composes at both scales (every value it sweeps) and
trains one step on tiny data; the page generator, on sweep folders written by hand, writes the parts' sections,
the numbers put there, "not measured yet" where nothing ran, and the plots."""

import pytest
from conftest import CONF, ONE_BATCH, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from trickbench.config.validate import validate
from trickbench.report.lr_curves import first_decay_problem
from trickbench.train import run

T_975_2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom
PRESETS = sorted(p.stem for p in (CONF / "experiment" / "results").glob("*.yaml"))
PILOTS = ("part_d_teacher", "part_d_pilot", "part_d_zero_gamma_pilot", "part_d_converged_pilot", "part_b_pilot",
          "part_b_pilot_long", "part_b_pilot_data", "part_b_solutions_pilot")
SWEEPS = [p for p in PRESETS if p not in PILOTS]
# one job per preset: the configuration that exercises the most of it (at CPU scale unless it is GPU-only)
ONE_STEP = {
    "part_a": ["data=cifar10", "variant=part_a/lenet5", "seed=0"],
    "part_b": ["variant=part_b/sigmoid_9conv", "seed=0"],
    "part_b_solutions": ["trick=batchnorm", "seed=0"],
    "part_c": ["ladder=generalization/lr_decay", "seed=0"],
    "part_d": ["variant=part_d/mixup", "seed=0"],
    "part_d_pilot": ["variant=part_d/baseline", "results.length=p30", "seed=0"],
    "part_d_zero_gamma_pilot": ["variant=part_d/alone_zero_gamma", "results.length=p15", "seed=0"],
    "part_d_teacher": ["seed=0"],
    "part_b_pilot": ["variant=part_b/relu_12conv", "seed=0"],
    "part_b_pilot_long": ["variant=part_b/sigmoid_2block", "seed=0"],
    "part_b_pilot_data": ["variant=part_b/sigmoid_2block", "seed=0"],
    "part_d_converged_pilot": ["seed=0"],
    "part_b_solutions_pilot": ["trick=he_init", "seed=0"],
}


def test_every_preset_has_a_one_step_job():
    assert sorted(ONE_STEP) == PRESETS


def _sweep_values(preset: str, scale: str | None) -> dict[str, list[str]]:
    """hydra.sweeper.params of the preset at that scale, each value split (`a,b` -> [a, b])."""
    GlobalHydra.instance().clear()
    overrides = [f"experiment=results/{preset}", *([f"scale={scale}"] if scale else [])]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    out = {}
    for key, value in params.items():
        (o,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
        out[key] = [str(v) for v in o.sweep_iterator()] if o.is_sweep_override() else [str(value)]
    return out


@pytest.mark.slow
def test_every_swept_configuration_composes_and_validates():
    """Every value a preset sweeps, composed as its job is: at CPU scale, then at GPU scale those the CPU scale
    leaves out (composing takes a third of a second: each job once)."""
    for preset in SWEEPS:
        cpu, gpu = _sweep_values(preset, "cpu"), _sweep_values(preset, "gpu")
        assert cpu["seed"] == gpu["seed"] == ["0", "1", "2"]
        for scale, values in (("cpu", cpu), ("gpu", {k: [v for v in vs if v not in cpu[k]] for k, vs in gpu.items()})):
            for key, options in values.items():
                if key in ("seed", "trick"):
                    continue  # every trick composes in test_compose.py
                for option in options:
                    cfg = compose_cfg([f"experiment=results/{preset}", f"scale={scale}", f"{key}={option}"])
                    validate(cfg)
                    assert cfg.trainer.max_epochs >= 1
                    if cfg.scheduler.lr_scheduler is not None or cfg.scheduler.warmup_epochs:
                        assert first_decay_problem(cfg) is None, (preset, scale, option)
    pilot = _sweep_values("part_d_pilot", None)
    assert pilot["results.length"] == ["p30", "p60", "p120"] and pilot["seed"] == ["0"]
    for length in pilot["results.length"]:
        cfg = compose_cfg(["experiment=results/part_d_pilot", f"results.length={length}", "variant=part_d/warmup"])
        assert cfg.trainer.max_epochs == int(length[1:]) and cfg.scheduler.warmup_epochs == 0.04


@pytest.mark.slow
def test_scales_differ_as_the_page_says():
    cpu, gpu = _sweep_values("part_a", "cpu"), _sweep_values("part_a", "gpu")
    assert "variant=part_a/vgg16" not in cpu["variant"] and "part_a/vgg16" in gpu["variant"]
    assert gpu["seed"] == ["0", "1", "2"] and cpu["data"] == ["fashion_mnist", "cifar10"]
    assert "part_d/distill" in _sweep_values("part_d", "gpu")["variant"]
    assert "part_d/distill" not in _sweep_values("part_d", "cpu")["variant"]
    c = compose_cfg(["experiment=results/part_b", "scale=cpu", "variant=part_b/relu_12conv", "data=cifar10"])
    g = compose_cfg(["experiment=results/part_b", "scale=gpu", "variant=part_b/relu_12conv"])
    assert list(g.model.channels) == list(c.model.channels) == [64, 128, 256, 512]  # the lecture's, at both scales
    assert (c.data.subset, c.data.val_size, g.data.subset) == (20000, 2000, None)  # 18000 / 2000 / the test split
    assert (c.data.batch_size, g.data.batch_size) == (128, 256)  # the lecture's 256 at the GPU scale
    a = compose_cfg(["experiment=results/part_a", "scale=cpu", "data=cifar10"])
    assert (a.data.subset, a.data.val_size, a.data.batch_size, a.trainer.max_epochs) == (20000, 2000, 128, 20)
    d = compose_cfg(["experiment=results/part_d", "scale=cpu", "variant=part_d/alone_cosine"])
    assert (d.data.subset, d.data.val_size, d.trainer.max_epochs, d.test_last) == (5000, 500, 15, True)
    assert compose_cfg(["experiment=results/part_a", "scale=cpu", "data=fashion_mnist"]).data.subset is None


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_one_step(preset, fmnist_mirror, cifar_tarball, tmp_path):
    scale = [] if preset == "part_d_pilot" else ["scale=gpu" if preset == "part_d_teacher" else "scale=cpu"]
    cfg = compose_cfg(
        [
            f"experiment=results/{preset}",
            *scale,
            *ONE_STEP[preset],
            *(["data.source=" + str(cifar_tarball)] if not scale else []),
            *(
                [f"scale.sources.fashion_mnist={fmnist_mirror}", f"scale.sources.cifar10={cifar_tarball}"]
                if scale
                else []
            ),
            "data.subset=160",
            "data.batch_size=16",
            "data.eval_batch_size=16",
            *ONE_BATCH,
            f"data.root={tmp_path / 'data'}",
        ],
        tmp_path / "run",
    )
    assert run(cfg)["status"] == "ok"
