"""The config before any data is touched: composing it from Python, running every module's rules (rules.py) and
refusing two tricks that set the same key. Every failure is a ConfigError whose message starts with key=value and
what is allowed."""

import importlib
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from trickbench import callbacks, models, nn, optim, speed, tuning
from trickbench.data import augment, datamodule
from trickbench.errors import ConfigError
from trickbench.rules import Rule, check, fraction, integer, one_of, optional, positive
from trickbench.tricks import distill

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_run_config(overrides: list[str], out_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml with overrides, as `python train.py` sees it, for runs started from Python (tests,
    benchmarks, notebooks): Hydra's record of the command is set, so a run finds its overrides there; run folders
    go under out_dir when given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
        if out_dir is not None:
            cfg.paths.output_dir = str(out_dir)
            cfg.paths.log_dir = str(out_dir / "logs")
    return cfg


# Keys no module of ours reads itself (the seed, the Trainer's, torch's loss). Every other key's rules live beside the
# code that uses it, as that module's RULES.
RULES = [
    Rule("seed", integer(), "an integer"),
    Rule("trainer.max_epochs", integer(1), "an integer >= 1"),
    Rule("loss.label_smoothing", fraction, "a number in [0, 1)"),
    # Lightning takes a value <= 0 as "off" without a word, and refuses a bad algorithm only with a traceback
    Rule("trainer.gradient_clip_val", optional(positive), "null (off) or a number > 0"),
    Rule("trainer.gradient_clip_algorithm", optional(one_of(("norm", "value"))), "null, norm or value"),
]
CORE_RULES = [
    *RULES,
    *datamodule.RULES,
    *augment.RULES,
    *optim.RULES,
    *speed.RULES,
    *models.RULES,
    *nn.RULES,
    *callbacks.RULES,
    *tuning.RULES,
    *distill.RULES,  # also without trick=distill: a distill node the user wrote by hand
]


def target_rules(cfg: DictConfig) -> list:
    """The RULES of every module of ours that the config instantiates by _target_ (step tricks, callbacks): a trick's
    rules live in its own file and are found from its yaml, with no list to edit here."""
    modules, found = set(), []
    stack = [OmegaConf.to_container(cfg, resolve=False)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith("trickbench.") and "." in target:
                modules.add(target.rsplit(".", 1)[0])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for name in sorted(modules):
        found += getattr(importlib.import_module(name), "RULES", [])
    return found


def validate(cfg: DictConfig) -> None:
    """Every rule of every module, before any data is read: types and ranges first, then limits set by other keys."""
    check(cfg, list(dict.fromkeys([*CORE_RULES, *target_rules(cfg)])))  # a core module can also be a _target_
    if HydraConfig.initialized():  # trick choices live in Hydra's record of the command line
        check_trick_conflicts(selected_tricks(), trick_dir())


def selected_tricks() -> list[str]:
    """The trick options chosen on the command line (trick=a or trick=[a,b])."""
    for o in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        if o.key_or_group == "trick":
            value = o.value()
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def trick_dir() -> Path:
    main = next(s for s in HydraConfig.get().runtime.config_sources if s.provider == "main")
    return Path(main.path) / "trick"


def trick_keys(path: Path) -> set[str]:
    """The config keys a trick file sets: its plain values (dotted) and the groups it overrides."""
    node = OmegaConf.load(path)
    keys = set()
    for entry in node.pop("defaults", None) or []:
        if isinstance(entry, DictConfig):
            keys |= {k.removeprefix("override ").lstrip("/") for k in entry.keys()}

    def walk(n, prefix):
        for k, v in n.items():
            if isinstance(v, DictConfig) and len(v):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(f"{prefix}{k}")

    walk(node, "")
    return keys


def check_trick_conflicts(tricks: list[str], directory: Path) -> None:
    """Two tricks that set the same key are an error, not a silent last-wins."""
    seen: dict[str, str] = {}
    for trick in tricks:
        for key in sorted(trick_keys(directory / f"{trick}.yaml")):
            if key in seen and seen[key] != trick:
                raise ConfigError(
                    "trick",
                    f"[{','.join(tricks)}]",
                    f"{seen[key]} and {trick} both set {key}; combine tricks that set different keys",
                )
            seen[key] = trick
