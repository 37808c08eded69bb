"""docs/results.md: every preset of conf/experiment/results/ composes at both scales (every value it sweeps) and
trains one step on tiny data; the page generator, on sweep folders written by hand, writes the parts' sections,
the numbers put there, "not measured yet" where nothing ran, and the plots."""

import csv
import json
import math

import pytest
from conftest import CONF, ONE_BATCH, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from trickbench.config import validate
from trickbench.loggers import COLUMNS
from trickbench.report import results_page
from trickbench.train import run

T_975_2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom
PRESETS = sorted(p.stem for p in (CONF / "experiment" / "results").glob("*.yaml"))
SWEEPS = [p for p in PRESETS if p not in ("part_d_teacher", "part_d_pilot")]  # one run; GPU-only, takes no scale
# one job per preset: the configuration that exercises the most of it (at CPU scale unless it is GPU-only)
ONE_STEP = {
    "part_a": ["data=cifar10", "variant=part_a/lenet5"],
    "part_b": ["variant=part_b/sigmoid_9conv"],
    "part_b_solutions": ["trick=batchnorm"],
    "part_c": ["ladder=generalization/lr_decay"],
    "part_d": ["variant=part_d/mixup"],
    "part_d_pilot": ["variant=part_d/baseline", "results.length=p30"],
    "part_d_teacher": [],
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


def test_every_swept_configuration_composes_and_validates():
    """Every value a preset sweeps, composed as its job is: at CPU scale, then at GPU scale those the CPU scale
    leaves out (composing takes a third of a second: each job once)."""
    for preset in SWEEPS:
        cpu, gpu = _sweep_values(preset, "cpu"), _sweep_values(preset, "gpu")
        assert (cpu["seed"], gpu["seed"]) == (["0", "1"], ["0", "1", "2"])
        for scale, values in (("cpu", cpu), ("gpu", {k: [v for v in vs if v not in cpu[k]] for k, vs in gpu.items()})):
            for key, options in values.items():
                if key in ("seed", "trick"):
                    continue  # every trick composes in test_config.py
                for option in options:
                    cfg = compose_cfg([f"experiment=results/{preset}", f"scale={scale}", f"{key}={option}"])
                    validate(cfg)
                    assert cfg.trainer.max_epochs >= 1
    pilot = _sweep_values("part_d_pilot", None)
    assert pilot["results.length"] == ["p30", "p60", "p120"] and pilot["seed"] == ["0"]
    for length in pilot["results.length"]:
        cfg = compose_cfg(["experiment=results/part_d_pilot", f"results.length={length}", "variant=part_d/warmup"])
        assert cfg.trainer.max_epochs == int(length[1:]) and cfg.scheduler.warmup_epochs == 2


def test_scales_differ_as_the_page_says():
    cpu, gpu = _sweep_values("part_a", "cpu"), _sweep_values("part_a", "gpu")
    assert "variant=part_a/vgg16" not in cpu["variant"] and "part_a/vgg16" in gpu["variant"]
    assert gpu["seed"] == ["0", "1", "2"] and cpu["data"] == ["fashion_mnist", "cifar10"]
    assert "part_d/distill" in _sweep_values("part_d", "gpu")["variant"]
    assert "part_d/distill" not in _sweep_values("part_d", "cpu")["variant"]
    c = compose_cfg(["experiment=results/part_b", "scale=cpu", "variant=part_b/relu_12conv", "data=cifar10"])
    g = compose_cfg(["experiment=results/part_b", "scale=gpu", "variant=part_b/relu_12conv"])
    assert list(g.model.channels) == [64, 128, 256, 512] and list(c.model.channels) == [16, 32, 64, 128]
    assert (c.data.subset, g.data.subset) == (4000, None)
    assert compose_cfg(["experiment=results/part_a", "scale=cpu", "data=fashion_mnist"]).data.subset is None
    # copies of another preset's numbers stay equal to it
    raw = {p: OmegaConf.load(CONF / "experiment" / "results" / f"{p}.yaml").results for p in PRESETS}
    assert raw["part_b_solutions"].epochs == raw["part_b"].epochs
    assert raw["part_b_solutions"].widths_at == raw["part_b"].widths_at
    assert raw["part_d_teacher"].epochs.gpu == raw["part_d"].epochs.gpu


def test_part_d_is_the_bag_of_tricks_ladder():
    """Part D restates experiment=ablation/bag_of_tricks (which sweeps ladder=): every rung trains what that
    preset's rung trains, but for the length and the step decay's milestones."""
    for rung in ("baseline", "resnet_d", "mixup"):
        ours = compose_cfg(["experiment=results/part_d", f"variant=part_d/{rung}", "trainer.max_epochs=10"])
        theirs = compose_cfg(["experiment=ablation/bag_of_tricks", f"ladder=bag_of_tricks/{rung}"])
        ours, theirs = (OmegaConf.to_container(c, resolve=True) for c in (ours, theirs))
        if rung != "mixup":  # step decay at Part D's GPU length: the same epochs, counted after warmup from resnet_d on
            assert ours["scheduler"]["lr_scheduler"]["milestones"] == ([60, 90] if rung == "baseline" else [58, 88])
            ours["scheduler"]["lr_scheduler"]["milestones"] = theirs["scheduler"]["lr_scheduler"]["milestones"]
        for key in ("data", "model", "norm", "init", "activation", "optimizer", "scheduler", "augment", "loss", "step"):
            assert ours[key] == theirs[key], (rung, key)


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


# ---- the page, from sweep folders written by hand ---------------------------------------------------------
def _job(folder, overrides, seed, train, val, test, dataset="cifar10 (JPEG q75 copy)"):
    folder.mkdir(parents=True)
    results = {
        "status": "ok",
        "error": None,
        "overrides": [*overrides, f"seed={seed}", "experiment=results/x", "scale=cpu"],
        "seed": seed,
        "test": {"acc": test, "loss": 1.0},
        "val": {"acc_best": val, "acc_last": val},
        "train": {"acc_last": train, "loss_last": 0.5},
        "epochs": 4,
        "wall_time_s": 10.0 + seed,
        "device": "cpu",
        "dataset": dataset,
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / ".hydra").mkdir()
    subset = None if dataset == "fashion_mnist" else 4000
    config = {"data": {"subset": subset, "val_size": 400 if subset else 5000}, "results": {"widths": [16, 32, 64]}}
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(config))
    with open(folder / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for e in range(4):
            w.writerow({"epoch": e, "step": 10 * (e + 1), "train_loss": 2.0 / (e + 1), "val_acc": val * (e + 1) / 4})


def _grad_norms(folder, first_layer: float):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder / "tensorboard")) as w:
        for i, name in enumerate(
            ["net.features.0.convs.0.0.weight", "net.features.1.convs.0.0.weight", "net.head.2.weight"]
        ):
            for step in (4, 9):
                w.add_scalar(f"grad_norm/{name}", first_layer * 10**i, step)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Part B's sequence at CPU scale (3 seeds of two variants), Part A's two datasets (one seed); nothing else."""
    tmp_path = tmp_path_factory.mktemp("page")
    root = tmp_path / "logs" / "results"
    b = root / "cpu" / "part_b" / "sweep"
    sig = {0: (0.30, 0.25, 0.24), 1: (0.32, 0.27, 0.26), 2: (0.34, 0.29, 0.28)}
    relu = {0: (0.60, 0.50, 0.40), 1: (0.64, 0.52, 0.43), 2: (0.68, 0.54, 0.43)}
    n = 0
    for variant, accs in (("sigmoid_9conv", sig), ("relu_9conv", relu)):
        for seed, (train, val, test) in accs.items():
            _job(b / str(n), [f"variant=part_b/{variant}"], seed, train, val, test)
            _grad_norms(b / str(n), 1e-6 if variant.startswith("sigmoid") else 1e-2)
            n += 1
    (b / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=results/part_b, scale=cpu, resume=x]\n"
    )
    a = root / "cpu" / "part_a"
    for i, (dataset, variant, test) in enumerate(
        [("fashion_mnist", "mlp_1x256", 0.80), ("fashion_mnist", "lenet5", 0.85), ("cifar10", "mlp_1x256", 0.40)]
    ):
        _job(a / str(i), [f"data={dataset}", f"variant=part_a/{variant}"], 0, test + 0.05, test, test, dataset)
    out = tmp_path / "docs" / "results.md"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)  # the page names folders relative to where the command runs
        assert results_page.main(["--root", "logs/results", "--out", "docs/results.md"]) == 0
    return out.read_text(), out.parent / "results"


def test_page_sections_and_missing_scales(page):
    text, _ = page
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h[:9] for h in heads] == ["## Part A", "## Part B", "## Part C", "## Part D"]
    assert text.count("GPU: not measured yet") == 5  # five sweeps (B has two), none on a GPU
    assert text.count("CPU: not measured yet") == 3  # B's solutions, C, D
    assert "python train.py -m experiment=results/part_b scale=cpu hydra.sweep.dir=logs/results/cpu/part_b" in text
    assert "resume=" not in text


def test_page_numbers_are_what_the_runs_wrote(page):
    text, _ = page
    # sigmoid: train .30 .32 .34 -> 32.00 ± 2.00; val .25 .27 .29 -> 27.00 ± 2.00; test .24 .26 .28 -> 26.00 ± 2.00
    assert (
        "| **sigmoid_9conv** (baseline) | 0 1 2 | 32.00 ± 2.00 | 27.00 ± 2.00 | 26.00 ± 2.00 | baseline | 4 | 11 |"
        in text
    )
    # relu test .40 .43 .43: paired diffs .16 .17 .15 -> mean .16, sd .01
    half = 100 * T_975_2 * 0.01 / math.sqrt(3)
    ci = f"[{16 - half:+.2f}, {16 + half:+.2f}]"
    assert f"| relu_9conv | 0 1 2 | 64.00 ± 4.00 | 52.00 ± 2.00 | 42.00 ± 1.73 | +16.00 {ci} |" in text
    assert "| cpu | cifar10 (JPEG q75 copy) |" in text
    assert "excludes 0 for: relu_9conv (+16.00)" in text
    # Part A: a table per dataset, each against mlp_1x256; LeNet-5 beat it on Fashion-MNIST
    assert "##### fashion_mnist" in text and "##### cifar10" in text
    assert "| lenet5 | 0 | 90.00 | 85.00 | 85.00 | +5.00 (one seed: no interval) |" in text
    # the lecture's ordering checked on train accuracy: relu_9conv above sigmoid_9conv held
    assert "The expectation's comparisons on final train accuracy: 1 of 1 held." in text
    # what the runs trained, from their saved configs
    trained = "Trained: 4 epochs; cifar10 (JPEG q75 copy): a fixed subset, 3600 train, 400 val and 4000 test images; "
    assert trained + "conv widths [16, 32, 64]; not run here: sigmoid_2block, sigmoid_3block, relu_12conv." in text
    assert "Trained: 4 epochs; fashion_mnist: all of it; cifar10: a fixed subset" in text


def test_page_plots_exist_and_are_linked(page):
    text, pictures = page
    for name in ("part_b_cifar10_jpeg_q75_copy", "part_a_fashion_mnist", "part_a_cifar10"):
        for png in ("val_acc.png", "train_loss.png", "test_acc_delta.png"):
            path = pictures / "cpu" / name / png
            assert path.read_bytes()[:4] == b"\x89PNG" and f"(results/cpu/{name}/{png})" in text
    assert (pictures / "cpu" / "part_b_grad_norm.png").read_bytes()[:4] == b"\x89PNG"
    assert "(results/cpu/part_b_grad_norm.png)" in text
