"""Checks that run before any data is touched. Every failure is a ConfigError whose message starts
with key=value and what is allowed."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict

from trickbench.data.augment import NORMALIZE_MODES
from trickbench.data.registry import DATASETS
from trickbench.errors import ConfigError, is_int, is_number
from trickbench.optim import check_optimizer, check_scheduler
from trickbench.speed import MATMUL_PRECISIONS

_MISSING = object()
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


def _is_file(v) -> bool:
    return isinstance(v, str) and Path(to_absolute_path(v)).is_file()


# key, test, what is allowed. A key the config does not have (e.g. model.conv_dropout of resnet18) is not checked.
RULES = [
    ("seed", is_int, "an integer"),
    ("data.split_seed", is_int, "an integer"),
    ("optimizer.lr", lambda v: is_number(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: is_number(v) and v >= 0, "a number >= 0"),
    ("data.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("data.val_size", lambda v: is_int(v) and v >= 1, "an integer >= 1, below the train set size"),
    ("data.subset", lambda v: v is None or (is_int(v) and v >= 2), "null or an integer >= 2"),
    ("data.normalize", lambda v: v in NORMALIZE_MODES, f"one of {list(NORMALIZE_MODES)}"),
    # here, not only in ImageDataModule: instantiate() wraps a constructor's ConfigError into a traceback
    ("data.name", lambda v: v in DATASETS, f"one of {sorted(DATASETS)}"),
    ("model.dropout", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.conv_dropout", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("trainer.max_epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("optimizer.momentum", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("loss.label_smoothing", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("augment.mixup_alpha", lambda v: is_number(v) and v >= 0, "a number >= 0 (0: off)"),
    ("augment.cutmix_alpha", lambda v: is_number(v) and v >= 0, "a number >= 0 (0: off)"),
    ("scheduler.warmup_epochs", lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: no warmup)"),
    ("scheduler.warmup_start_factor", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    ("data.on_device", lambda v: v == "auto" or isinstance(v, bool), "auto, true or false"),
    ("model.channels_last", lambda v: isinstance(v, bool), "true or false"),
    ("trainer.benchmark", lambda v: v is None or isinstance(v, bool), "null (auto), true or false"),
    ("trainer.sync_batchnorm", lambda v: v is None or isinstance(v, bool), "null (auto), true or false"),
    ("matmul_precision", lambda v: v is None or v in MATMUL_PRECISIONS, f"null or one of {list(MATMUL_PRECISIONS)}"),
    ("compile", lambda v: isinstance(v, bool) or (isinstance(v, str) and v != ""), "false, true or a backend name"),
    ("distill.teacher_ckpt", lambda v: v is None or _is_file(v), "null or an existing .ckpt file written by train.py"),
    ("model.init_from", lambda v: v is None or _is_file(v), "null or an existing .ckpt file written by train.py"),
    ("model.freeze_backbone", lambda v: isinstance(v, bool), "true or false"),
    ("callbacks.first_loss.factor", lambda v: is_number(v) and v > 1, "a number > 1 (how far from ln(classes))"),
    ("tune.apply", lambda v: isinstance(v, bool), "true (train with the suggested lr) or false (print it and stop)"),
    ("tune.min_lr", lambda v: is_number(v) and v > 0, "a number > 0"),
    ("tune.max_lr", lambda v: is_number(v) and v > 0, "a number > 0, above tune.min_lr"),
    ("tune.num_training", lambda v: is_int(v) and v >= 13, "an integer >= 13 (the suggestion skips 10 steps + 1)"),
    ("tune.mode", lambda v: v in ("exponential", "linear"), "exponential or linear"),
]

# key, test(value, cfg), what is allowed given cfg: limits set by another key, checked once every key has its type.
RELATIONS = [
    (
        "scheduler.warmup_epochs",
        lambda v, cfg: v < cfg.trainer.max_epochs,
        lambda cfg: f"less than trainer.max_epochs={cfg.trainer.max_epochs} (the warmup must end before training does)",
    ),
    (
        "data.val_size",
        lambda v, cfg: cfg.data.get("subset") is None or v < cfg.data.subset,
        lambda cfg: f"less than data.subset={cfg.data.subset} (the subset is split into train and val)",
    ),
    (
        "tune.max_lr",
        lambda v, cfg: v > cfg.tune.min_lr,
        lambda cfg: f"a number above tune.min_lr={cfg.tune.min_lr}",
    ),
]


def validate(cfg: DictConfig) -> None:
    for key, ok, allowed in RULES:
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING and not ok(value):
            raise ConfigError(key, value, allowed)
    for key, ok, allowed in RELATIONS:
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING and value is not None and not ok(value, cfg):
            raise ConfigError(key, value, allowed(cfg))
    check_optimizer(cfg.optimizer)
    check_scheduler(cfg.scheduler, cfg.trainer.max_epochs)
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
