"""Every config key refuses a bad value in one line. Each option of each group (tricks and experiment
presets included) is composed, unless its yaml only sets keys an earlier config already has; every leaf key is
then tried, in the first config that has it, with the bad values its type allows. Each attempt is either refused
before any data is read (config.validate, or a step trick's constructor, as train.run does) by a one-line
ConfigError, or it builds the model (on the meta device: no memory for a huge width), the datamodule (a tiny
mirror), the optimizer and scheduler, the callbacks and the loggers without an error. A key none of whose bad values
is refused has no rule: it fails here unless ALLOWED says why it accepts anything."""

import json

import pytest
import torch
from composed import file_values
from conftest import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from trickbench.config.every_key import READ_BY
from trickbench.config.validate import validate
from trickbench.data import DATASETS
from trickbench.errors import ConfigError, first_line
from trickbench.models import build_model
from trickbench.optim import build_optimizer, build_scheduler
from trickbench.train import build_step_tricks

HUGE = 10**12
# The one allow-list: a key (or a node: every key below it) that accepts any value, and why.
ALLOWED = {
    **READ_BY,  # nodes read whole by code that checks them itself (config/every_key.py)
    "logger.tensorboard.version": "any name or number: TensorBoard's subfolder ('': none)",
}


def allowed(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in ALLOWED)


# ---- which configs to compose, and their keys ----------------------------------------------------------------------
def leaves(node, prefix=""):
    """(dotted key, value) of every leaf; a null node is a leaf, a mapping is walked."""
    for k in node:
        key, value = f"{prefix}{k}", node._get_node(k) if isinstance(node, DictConfig) else node[k]
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, k):
            yield key, "???"
        elif isinstance(value, DictConfig) and not value._is_none():
            yield from leaves(value, f"{key}.")
        else:
            yield key, node[k]


def file_keys(group: str, path) -> set[str]:
    """The keys an option's yaml sets (Hydra's package: the group's, or _global_), without its defaults list."""
    return {k for k in file_values(path, group) if not k.startswith("hydra.")}


def options() -> list[str]:
    """Every group=option, in conf/train.yaml's order (models before the presets that use them)."""
    order = [next(iter(d)) for d in OmegaConf.load(CONF / "train.yaml").defaults if not isinstance(d, str)]
    found = []
    for group in [g for g in order if g != "hydra"]:
        for path in sorted((CONF / group).rglob("*.yaml")):
            if "common" in path.relative_to(CONF / group).parts:
                continue  # settings the group's options share (conf/data/common/, ...), composed within them
            found.append((group, path.relative_to(CONF / group).with_suffix("").as_posix(), path))
    return found


def bad_values(value, tmp):
    name = str(tmp / "nope")  # an unknown name, and a fresh folder wherever a path is meant
    if isinstance(value, bool):
        return [name, 2]
    if isinstance(value, int | float):
        return [0, -1, HUGE, name]
    if isinstance(value, str):
        return [7, name]
    if value is None:
        return [0, -1, HUGE, name]
    if isinstance(value, ListConfig | list):
        first = value[0] if len(value) and not isinstance(value[0], ListConfig | DictConfig) else None
        return [[], *([[b] for b in bad_values(first, tmp)] if first is not None else [])]
    return []


# ---- one attempt ---------------------------------------------------------------------------------------------------
def _memo(cache: dict, cfg, keys: tuple[str, ...], make):
    """make(), once per resolved value of the nodes at keys: most attempts change none of them (or change it back)."""
    nodes = {k: OmegaConf.select(cfg, k) for k in keys}
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in nodes.items()}
    tag = json.dumps([keys, plain], sort_keys=True, default=str)
    if tag not in cache:
        cache[tag] = make()
    return cache[tag]


def _datamodule(cfg):
    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build(cfg, cache: dict) -> None:
    """What train.run builds after validation, without a Trainer or any training."""
    _memo(cache, cfg, ("data", "augment", "seed"), lambda: _datamodule(cfg))
    shape = DATASETS[cfg.data.name].shape
    with torch.device("meta"):
        net = _memo(
            cache,
            cfg,
            ("model", "activation", "norm", "init", "data.name"),
            lambda: build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10),
        )
    epochs = cfg.trainer.max_epochs
    optimizer = build_optimizer(net, cfg.optimizer, cfg.data.batch_size)
    build_scheduler(optimizer, cfg.scheduler, 3 * epochs, epochs)
    for group in ("callbacks", "logger"):
        _memo(cache, cfg, (group,), lambda g=group: [instantiate(c) for c in (cfg.get(g) or {}).values() if c])


def attempt(base, key: str, value, cache: dict) -> str | None:
    """None when the value is refused in one line; "built" when it builds; else what went wrong."""
    raw = OmegaConf.to_container(base, resolve=False)
    for part in key.split("."):
        raw = raw[part]
    OmegaConf.update(base, key, value, merge=False)
    try:
        return _attempt(base, cache)
    finally:
        OmegaConf.update(base, key, raw, merge=False)


def _attempt(cfg, cache: dict) -> str | None:
    try:
        validate(cfg)
        build_step_tricks(cfg)
    except ConfigError as e:
        return None if "\n" not in str(e) else f"a ConfigError of several lines: {e}"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__} out of the validation: {first_line(e)}"
    try:
        build(cfg, cache)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__} out of a builder (validation let it through): {first_line(e)}"
    return "built"


# ---- the sweep -----------------------------------------------------------------------------------------------------
def base_config(option: list[str], tmp, mirrors):
    cfg = compose_cfg([*option, "data.subset=160", "data.download=false"], tmp / "out")
    OmegaConf.update(cfg, "data.source", str(mirrors[cfg.data.name]))
    OmegaConf.update(cfg, "data.root", str(tmp / "data"))
    OmegaConf.update(cfg, "data.val_size", 16)  # a preset's own (speedrun: 2000) is more than the mirror holds
    if OmegaConf.select(cfg, "distill") is not None:
        OmegaConf.update(cfg, "distill.teacher_ckpt", str(mirrors["teacher"]))  # read only once training starts
    return cfg


@pytest.fixture(scope="module")
def swept(tmp_path_factory, fmnist_mirror, cifar_folder) -> dict:
    tmp = tmp_path_factory.mktemp("every_key")
    (tmp / "teacher.ckpt").write_bytes(b"")
    mirrors = {"fashion_mnist": fmnist_mirror, "cifar10": cifar_folder, "teacher": tmp / "teacher.ckpt"}
    monkey = pytest.MonkeyPatch()
    monkey.chdir(tmp)  # a relative path a value names lands here
    cache, bases, seen, unbuilt = {}, {}, set(), set()
    try:
        for group, option, path in [(None, None, None), *options()]:
            if path is not None and file_keys(group, path) <= seen:
                continue  # only keys an earlier config has: swept there
            base = base_config([] if group is None else [f"{group}={option}"], tmp, mirrors)
            if attempt(base, "seed", 0, cache) != "built":
                unbuilt |= {key for key, _ in leaves(base)}  # a rung alone (ladder=...: with its experiment only)
                continue
            for key, value in leaves(base):
                if key not in seen:
                    seen.add(key)
                    bases[key] = (f"{group}={option}" if group else "the defaults", base, value)
        outcomes = {}
        for key, (where, base, value) in bases.items():
            if key.endswith(("._target_", "._partial_")):  # Hydra's own: which class, and whether to call it
                continue
            outcomes[key] = (where, {repr(v): attempt(base, key, v, cache) for v in bad_values(value, tmp)})
    finally:
        monkey.undo()
    return {"keys": seen, "unbuilt": unbuilt - seen, "outcomes": outcomes, "tmp": str(tmp)}


@pytest.mark.slow
def test_no_bad_value_raises_out_of_a_builder(swept):
    broken = [
        f"{key}={value} (in {where}): {what}"
        for key, (where, tried) in swept["outcomes"].items()
        for value, what in tried.items()
        if what not in (None, "built")
    ]
    assert not broken, "\n".join(broken).replace(swept["tmp"], "<tmp>")


@pytest.mark.slow
def test_every_key_has_a_rule_or_says_why_not(swept):
    unguarded = [
        f"{key} (in {where}): every bad value passes, {list(tried)}"
        for key, (where, tried) in swept["outcomes"].items()
        if tried and all(what is not None for what in tried.values()) and not allowed(key)
    ]
    assert not unguarded, "add a Rule beside the key's builder, or an ALLOWED entry:\n" + "\n".join(unguarded)


@pytest.mark.slow
def test_every_key_is_in_a_config_that_builds(swept):
    assert sorted(swept["unbuilt"]) == []


@pytest.mark.slow
def test_the_allow_list_names_real_keys(swept):
    assert [k for k in ALLOWED if not any(s == k or s.startswith(f"{k}.") for s in swept["keys"])] == []
