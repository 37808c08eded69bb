"""Config composition (every group option, tricks, experiments), validate() and train.py --help."""

import re
import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose_cfg
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from trickbench.callbacks.swa import check_swa
from trickbench.config.command_choices import (
    check_preset_sweep,
    check_trick_against_command_line,
    check_trick_conflicts,
    trick_keys,
)
from trickbench.config.validate import validate
from trickbench.errors import ConfigError

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")  # hydra: Hydra's own settings


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def as_dict(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def leaves(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


@pytest.fixture(scope="module")
def baseline() -> dict:
    return as_dict(compose_cfg([]))


GROUP_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]
# tricks that set an option only ResNets have (their yaml says "ResNets only"): validated on one, and refused on the
# default cnn in one line naming that option
RESNET_ONLY = {"trick=resnet_d": "model.variant", "trick=stochastic_depth": "model.stochastic_depth"}
RESNET_ONLY["trick=zero_gamma"] = "model.zero_init_residual"


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_validates(group, option):
    choice = f"{group}={option}"
    cfg = compose_cfg([choice, *(["model=resnet20"] if choice in RESNET_ONLY else [])])
    assert HydraConfig.get().runtime.choices[group] == option
    validate(cfg)


@pytest.mark.parametrize("choice", sorted(RESNET_ONLY))
def test_a_resnet_only_trick_on_the_default_cnn_is_refused_naming_its_option(choice):
    assert re.search(r"ResNets (with a norm )?only", (CONF / f"{choice.replace('=', '/')}.yaml").read_text())
    with pytest.raises(ConfigError, match=rf"^{RESNET_ONLY[choice]}=.*not an option of model=cnn"):
        validate(compose_cfg([choice]))


def test_groups_are_the_defaults_list_groups():
    # the folders enumerated above are exactly the groups conf/train.yaml composes
    defaults = OmegaConf.load(CONF / "train.yaml").defaults
    assert GROUPS == sorted(k for d in defaults if not isinstance(d, str) for k in d if k != "hydra")


@pytest.mark.parametrize("trick", options("trick"))
def test_trick_changes_config_unless_none(trick, baseline):
    changed = as_dict(compose_cfg([f"trick={trick}"])) != baseline
    assert changed == (trick != "none")


def test_two_tricks_apply_both():
    cfg = compose_cfg(["trick=[batchnorm,he_init]"])
    assert cfg.norm.name == "batch" and cfg.init.name == "he_normal"
    validate(cfg)  # different keys: no conflict


def test_trick_wins_over_experiment():
    exp = compose_cfg(["experiment=vgg16_cifar10"])
    assert exp.model.name == "vgg16" and exp.model.skip is False
    cfg = compose_cfg(["experiment=vgg16_cifar10", "trick=skip"])
    assert cfg.model.skip is True
    # the rest of the experiment still applies
    assert (cfg.model.name, cfg.data.name, cfg.task_name) == ("vgg16", "cifar10", "vgg16_cifar10")
    assert cfg.trainer.max_epochs == 30
    assert cfg.scheduler.lr_scheduler._target_.endswith("CosineAnnealingLR")


EXP_TRICKS = [(e, t) for e in options("experiment") for t in options("trick") if t != "none"]


@pytest.mark.parametrize("experiment,trick", EXP_TRICKS, ids=[f"{e}+{t}" for e, t in EXP_TRICKS])
def test_every_trick_value_survives_every_experiment(experiment, trick, baseline):
    set_by_trick = {
        k: v
        for k, v in leaves(as_dict(compose_cfg([f"trick={trick}"]))).items()
        if leaves(baseline).get(k, object()) != v
    }
    assert set_by_trick
    combined = leaves(as_dict(compose_cfg([f"experiment={experiment}", f"trick={trick}"])))
    assert {k: combined.get(k) for k in set_by_trick} == set_by_trick


# The stock experiment sets none of the tricks' keys in its own body, so an experiment that does is added
# on the search path: without it, the defaults-list order (trick after experiment) would go untested.
EXPERIMENT_BODY = """# @package _global_
optimizer:
  lr: 0.5
model:
  skip: false
data:
  normalize: standardize
"""


@pytest.mark.parametrize(
    "trick,key,value",
    [
        ("low_lr", "optimizer.lr", 1e-4),
        ("skip", "model.skip", True),
        ("minus_one_one", "data.normalize", "minus_one_one"),
    ],
)
def test_trick_overrides_a_value_the_experiment_sets(trick, key, value, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "sets_trick_keys.yaml").write_text(EXPERIMENT_BODY)
    overrides = [f"hydra.searchpath=[file://{tmp_path}]", "experiment=sets_trick_keys"]
    assert OmegaConf.select(compose_cfg(overrides), key) != value
    assert OmegaConf.select(compose_cfg([*overrides, f"trick={trick}"]), key) == value


def test_tricks_setting_the_same_key_are_rejected():
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(["trick=[standardize,minus_one_one]"]))
    msg = str(e.value)
    assert msg.startswith("trick=")
    assert "standardize" in msg and "minus_one_one" in msg and "data.normalize" in msg


def test_default_config_validates():
    assert validate(compose_cfg([])) is None


BAD_VALUES = [
    ("optimizer.lr", "0", 0),
    ("optimizer.lr", "-1", -1),
    ("data.batch_size", "0", 0),
    ("model.dropout", "1.0", 1.0),
    ("model.dropout", "-0.1", -0.1),
    ("data.normalize", "bogus", "bogus"),
    ("seed", "abc", "abc"),
    ("seed", "1.5", 1.5),
]


@pytest.mark.parametrize("key,text,value", BAD_VALUES, ids=[f"{k}={t}" for k, t, _ in BAD_VALUES])
def test_validate_rejects_bad_value(key, text, value):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([f"{key}={text}"]))
    assert str(e.value).splitlines()[0].startswith(f"{key}={value!r}: ")
    assert e.value.key == key


def test_help_lists_groups_and_trick_options():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for group in GROUPS:
        # a group of folders (ladder/) is listed per folder, as Hydra lists subgroups
        subgroups = [group] if options(group) else [f"{group}/{d.name}" for d in sorted((CONF / group).iterdir())]
        for sub in subgroups:
            assert f"{sub}: {', '.join(options(sub))}" in lines


# ---- the trick files of callbacks/ and tricks/ composed together and with every other trick ---------------------
MINE = ["mixup", "cutmix", "ema", "distill"]


def test_the_tricks_compose_together_and_with_every_other_trick():
    cfg = compose_cfg(["trick=[mixup,cutmix,ema,distill]"])
    validate(cfg)
    assert (cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha, cfg.distill.T) == (0.2, 1.0, 20.0)
    assert cfg.callbacks.ema._target_.endswith("EMAWeightAveraging")
    for other in sorted(p.stem for p in (CONF / "trick").glob("*.yaml")):
        if other not in MINE:
            check_trick_conflicts([*MINE, other], CONF / "trick")


def test_swa_and_grad_clip_compose_with_other_tricks():
    cfg = compose_cfg(["trick=[swa,cosine,label_smoothing]"])
    validate(cfg)
    check_swa(cfg.callbacks.swa, cfg.trainer.max_epochs, cfg.scheduler.warmup_epochs)
    assert cfg.callbacks.swa._target_ == "trickbench.callbacks.swa.SWA"
    assert cfg.scheduler.lr_scheduler._target_.endswith("CosineAnnealingLR") and cfg.loss.label_smoothing == 0.1
    cfg = compose_cfg(["trick=[grad_clip,cosine,label_smoothing]"])
    validate(cfg)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    assert cfg.scheduler.lr_scheduler._target_.endswith("CosineAnnealingLR") and cfg.loss.label_smoothing == 0.1
    mine = ["swa", "grad_clip"]
    for other in sorted(p.stem for p in (CONF / "trick").glob("*.yaml")):
        if other not in mine:
            check_trick_conflicts([*mine, other], CONF / "trick")


# ---- a trick and an explicit setting of what it sets; a preset's sweep without -m ---------------------------------
def test_a_trick_whose_every_key_the_command_line_sets_is_refused_and_one_it_tunes_is_not():
    parser = OverridesParser.create()
    for trick in sorted(p.stem for p in (CONF / "trick").glob("*.yaml")):
        keys = sorted(trick_keys(CONF / "trick" / f"{trick}.yaml"))
        if not keys:
            continue  # trick=none
        given = parser.parse_overrides([f"{k}=1" for k in keys])
        with pytest.raises(ConfigError) as e:  # the trick would change nothing
            check_trick_against_command_line([trick], CONF / "trick", given)
        assert e.value.key == keys[0] and f"trick={trick} sets only {keys[0]}" in str(e.value), trick
        assert str(e.value).endswith("so the trick would change nothing: give one of them")
        check_trick_against_command_line([trick], CONF / "trick", given[1:])  # one key left: the command tunes it


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["scheduler=step", "trick=cosine"], "scheduler='step': trick=cosine sets only scheduler; Hydra runs"),
        (["optimizer.lr=0.05", "trick=[he_init,low_lr]"], "optimizer.lr=0.05: trick=low_lr sets only optimizer.lr;"),
    ],
)
def test_a_trick_and_the_command_lines_own_value_of_its_key_are_refused(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    validate(compose_cfg([*overrides[1:], "scheduler.warmup_epochs=1"]))  # a key of the trick's choice: the user's
    validate(compose_cfg(["trick=swa", "callbacks.swa.swa_epoch_start=0.5"]))  # tuning a trick of several keys


def sweeping_presets() -> list[str]:
    """The experiment presets whose own params sweep (a single value is one configuration, not a sweep)."""
    parser, found = OverridesParser.create(), []
    for path in sorted((CONF / "experiment").rglob("*.yaml")):
        name = path.relative_to(CONF / "experiment").with_suffix("").as_posix()
        params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
        if any(parser.parse_override(f"{k}={v}").is_sweep_override() for k, v in params.items()):
            found.append(name)
    return found


def test_a_preset_that_sweeps_run_without_m_is_refused_unless_every_swept_key_is_given():
    assert len(sweeping_presets()) > 5
    for name in sweeping_presets():
        compose_cfg([f"experiment={name}"])
        params, parser = dict(HydraConfig.get().sweeper.params), OverridesParser.create()
        swept = [k for k, v in params.items() if parser.parse_override(f"{k}={v}").is_sweep_override()]
        with pytest.raises(ConfigError) as e:
            check_preset_sweep()
        assert e.value.key == swept[0] and f"experiment={name} sweeps " in str(e.value), name
        assert str(e.value).endswith("run it with -m, or give it a value") or "give each a value" in str(e.value)
        given = [f"{k}={v.split(',')[0]}" for k, v in params.items() if "(" not in str(v)]
        if len(given) == len(params):  # a search space (interval(...)) has no plain first value
            compose_cfg([f"experiment={name}", *given])
            check_preset_sweep()
