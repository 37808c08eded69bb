"""The config before any data is touched: composing it from Python, running every module's rules (rules.py) and
refusing two tricks that set the same key. Every failure is a ConfigError whose message starts with key=value and
what is allowed."""

import importlib
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from trickbench import checkpoints, models, nn, optim, speed, tuning
from trickbench.callbacks import monitors
from trickbench.config import CONF_DIR
from trickbench.config.command_choices import check_command_choices
from trickbench.config.every_key import check_every_key_read
from trickbench.data import augment, datamodule
from trickbench.errors import ConfigError
from trickbench.report import callback as report_callback
from trickbench.rules import (
    NodeCheck,
    Rule,
    boolean,
    check,
    fraction,
    integer,
    number,
    one_of,
    optional,
    positive,
    select,
    text,
)
from trickbench.sweep import context
from trickbench.tricks import distill


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


def _batches(v) -> bool:
    """limit_*_batches, overfit_batches: a count (0: none) or a fraction of the epoch."""
    return integer(0)(v) or number(0, 1)(v)


def _devices(v) -> bool:
    """Lightning's forms: auto, -1 (all), a count, a list of indices, or the same as a string ("2", "0,1")."""
    if isinstance(v, str):
        return v == "auto" or re.fullmatch(r"-1|\d+(,\d+)*,?", v) is not None and v not in ("0", "0,")
    if isinstance(v, list | ListConfig):
        return len(v) > 0 and all(integer(0)(d) for d in v)
    return v == -1 or integer(1)(v)


# The Trainer's keys (conf/trainer, debug=...) and the arguments our conf files give Lightning's callbacks and
# loggers: Lightning refuses most bad values only once fit starts, with a traceback, or takes them silently
# (save_top_k='x' fails at the first save).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
TRAINER = [
    Rule("trainer.accelerator", one_of(ACCELERATORS), f"one of {list(ACCELERATORS)}"),
    Rule("trainer.devices", _devices, "auto, -1 (all), an integer >= 1 or a list of device indices, e.g. [0, 1]"),
    Rule("trainer.num_nodes", integer(1), "an integer >= 1"),
    Rule("trainer.log_every_n_steps", integer(1), "an integer >= 1"),
    Rule("trainer.check_val_every_n_epoch", optional(integer(1)), "null or an integer >= 1"),
    Rule("trainer.deterministic", lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"),
    Rule("trainer.detect_anomaly", boolean, "true or false"),
    Rule("trainer.enable_progress_bar", boolean, "true or false"),
    *[
        Rule(f"trainer.{k}", optional(_batches), "null (all), an integer >= 0 (batches) or a fraction in [0, 1]")
        for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches")
    ],
    Rule("trainer.overfit_batches", _batches, "an integer >= 0 (batches; 0: off) or a fraction in [0, 1]"),
    Rule(
        "trainer.strategy",
        one_of(["auto", *StrategyRegistry.available_strategies()]),
        "auto or a Lightning strategy name, e.g. ddp",
    ),
    Rule("trainer.profiler.dirpath", optional(text), "null (the Trainer's log folder) or a folder"),
    Rule("trainer.profiler.filename", optional(text), "null (the report goes to the console) or a file name"),
]

# class name -> {argument: (ok, allowed)}
FOLDER = (text, "a folder")
MODE = (one_of(("min", "max")), "min or max")
MONITOR = (optional(text), "null or a logged metric's name, e.g. val/acc")
ARGUMENTS = {
    "ModelCheckpoint": {
        "dirpath": FOLDER,
        "filename": (text, "a file name pattern"),
        "monitor": MONITOR,
        "mode": MODE,
        "save_top_k": (integer(-1), "an integer >= -1 (-1: every epoch, 0: none)"),
        "save_last": (lambda v: v is None or isinstance(v, bool) or v == "link", "null, true, false or link"),
        "auto_insert_metric_name": (boolean, "true or false"),
        "enable_version_counter": (boolean, "true or false"),
    },
    "LearningRateMonitor": {"logging_interval": (optional(one_of(("step", "epoch"))), "null, step or epoch")},
    "ModelSummary": {"max_depth": (integer(-1), "an integer >= -1 (-1: every layer, 0: none)")},
    "EarlyStopping": {
        "monitor": (text, "a logged metric's name, e.g. train/acc"),
        "mode": MODE,
        "stopping_threshold": (optional(number()), "null or a number"),
        "patience": (integer(0), "an integer >= 0"),
        "check_on_train_epoch_end": (optional(boolean), "null, true or false"),
    },
    "TensorBoardLogger": {
        "save_dir": FOLDER,
        "name": (optional(text), "null or a folder name"),
        "default_hp_metric": (boolean, "true or false"),
    },
}


def _entries(group: str):
    """callbacks.<name>, logger.<name>, step.<name>: null (off) or a node with a _target_; Lightning's classes'
    arguments."""

    def check(node, cfg=None) -> None:
        for name, entry in node.items():
            if entry is None:
                continue
            if not (isinstance(entry, DictConfig) and isinstance(entry.get("_target_"), str)):
                raise ConfigError(f"{group}.{name}", entry, "null (off) or a node with a _target_ (a class to build)")
            cls = entry["_target_"].rsplit(".", 1)[-1]
            for arg, spec in ARGUMENTS.get(cls, {}).items():
                ok, allowed = spec
                if spec is FOLDER and entry.get(arg) is None and select(cfg, "paths.output_dir") is None:
                    continue  # composed outside a run (no paths.output_dir yet): no folder to check, nothing is built
                if arg in entry and not ok(entry[arg]):
                    raise ConfigError(f"{group}.{name}.{arg}", entry[arg], allowed)
            if cls == "ModelCheckpoint" and entry.get("monitor") is None and entry.get("save_top_k") not in (-1, 0, 1):
                allowed = "-1, 0 or 1 with monitor=null (no metric to rank checkpoints by)"
                raise ConfigError(f"{group}.{name}.save_top_k", entry.get("save_top_k"), allowed)

    return NodeCheck(group, check)


# Keys no module of ours reads itself (the seed, torch's loss, the Trainer's, the arguments our conf files give
# Lightning's callbacks and loggers) and train.py's own (it imports this module). Every other key's rules live beside
# the code that uses it, as that module's RULES.
RULES = [
    Rule("seed", lambda v: integer(0)(v) and v < 2**32, "an integer in [0, 2**32) (Lightning's seed_everything)"),
    Rule("trainer.max_epochs", integer(1), "an integer >= 1"),
    Rule("task_name", lambda v: text(v) and "/" not in v, "a folder name: runs go to <paths.log_dir>/<task_name>/"),
    Rule("loss.label_smoothing", fraction, "a number in [0, 1)"),
    # Lightning takes a value <= 0 as "off" without a word, and refuses a bad algorithm only with a traceback
    Rule("trainer.gradient_clip_val", optional(positive), "null (off) or a number > 0"),
    Rule("trainer.gradient_clip_algorithm", optional(one_of(("norm", "value"))), "null, norm or value"),
    Rule("test_after_fit", boolean, "true or false"),
    Rule("test_last", boolean, "true or false (also test last.ckpt, the last epoch's weights)"),
    Rule("train_clean", boolean, "true or false (also evaluate last.ckpt on the training split, unaugmented)"),
    *[Rule(f"paths.{k}", text, "a folder") for k in ("log_dir", "data_dir")],
    Rule("paths.output_dir", optional(text), "a folder (null only while composing outside a run)"),
    *TRAINER,
    _entries("callbacks"),
    _entries("logger"),
    _entries("step"),  # train.build_step_tricks checks it again when called on its own
]
CORE_RULES = [
    *RULES,
    *augment.RULES,
    *optim.RULES,
    *speed.RULES,
    *models.RULES,
    *nn.RULES,
    *monitors.RULES,
    *tuning.RULES,
    *distill.RULES,  # also without trick=distill: a distill node the user wrote by hand
    *context.RULES,
    *checkpoints.RULES,
    *report_callback.RULES,
    *datamodule.RULES,  # last: a value is named before data.source's missing folder
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
    rules = list(dict.fromkeys([*CORE_RULES, *target_rules(cfg)]))  # a core module can also be a _target_
    check(cfg, rules)
    check_every_key_read(cfg, rules)
    check_command_choices()  # trick choices live in Hydra's record of the command line
