"""The one validation layer. A Rule is one key's type or range check, declared once, beside the code that uses the key
(that module's RULES list); config.validate runs every module's rules before any data is read, and a builder called
on its own (tests, notebooks) checks its node with the same Rule objects. Every failure is one line: key=value and
what is allowed (errors.ConfigError)."""

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import get_object, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trickbench.errors import ConfigError, first_line, is_int, is_number

MISSING = object()


@dataclass(frozen=True)
class Rule:
    """key's value must pass ok(value); allowed says what is allowed."""

    key: str
    ok: Callable[[Any], bool]
    allowed: str

    def check(self, value, cfg=None) -> None:
        if not self.ok(value):
            raise ConfigError(self.key, value, self.allowed)


@dataclass(frozen=True)
class Relation:
    """A limit set by another key: ok(value, cfg) with cfg the whole config, checked after every Rule (so both keys
    have their types); a null value is not checked."""

    key: str
    ok: Callable[[Any, Any], bool]
    allowed: Callable[[Any], str]

    def check(self, value, cfg=None) -> None:
        if value is not None and not self.ok(value, cfg):
            raise ConfigError(self.key, value, self.allowed(cfg))


@dataclass(frozen=True)
class NodeCheck:
    """A node whose keys limit each other, checked by check(node, cfg) raising ConfigError on the bad key (e.g. SWA's
    start epoch against trainer.max_epochs); run after every Rule, like a Relation. A null node is not checked.
    whole: fn refuses every key of the node it does not read (config/every_key.py then counts them all as read)."""

    key: str
    fn: Callable[[Any, Any], None]
    whole: bool = False

    def check(self, value, cfg=None) -> None:
        if value is not None:
            self.fn(value, cfg)


def takes(key: str, given: tuple[str, ...] = (), own: tuple[str, ...] = ()) -> NodeCheck:
    """The node at key builds its _target_ with its keys as keywords: a key the target's signature lacks is named
    with what the target takes, read from its signature (torch's TypeError names neither the key nor the choices).
    given: what the builder passes itself (an optimizer's params); own: the node's keys this project reads."""

    def fn(node, cfg=None) -> None:
        target = node.get("_target_")
        keywords = keywords_of(target) if isinstance(target, str) else None
        if keywords is None:
            return  # any keyword, or an unknown target: Hydra's instantiate names it
        takes = [k for k in keywords if k not in given]
        for name in node.keys():
            name = str(name)
            if not name.startswith("_") and name not in takes and name not in own:
                ours = f"; and this project's {', '.join(own)}" if own else ""
                allowed = f"{choice_name(key, target)} takes {', '.join(takes)}{ours}{options_with(f'{key}.{name}')}"
                raise ConfigError(f"{key}.{name}", node[name], allowed)

    return NodeCheck(key, fn)


# Where a class's **kwargs go, when no class of its MRO names them: that class's keywords ("": nowhere).
FORWARDS = {
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter",
    "lightning.pytorch.callbacks.weight_averaging.WeightAveraging": "torch.optim.swa_utils.AveragedModel",
    "lightning.pytorch.callbacks.model_summary.ModelSummary": "",  # its summarize_kwargs style RichModelSummary's
}


@cache
def keywords_of(target: str) -> tuple[str, ...] | None:
    """The keywords target takes, in signature order, its base classes' too where its **kwargs pass them on; None:
    any (a **kwargs that goes nowhere known, or a target that cannot be imported: Hydra's instantiate names it)."""
    try:
        obj = get_object(target)
        classes = [c for c in obj.__mro__ if c is not object] if inspect.isclass(obj) else []
        inits = [c.__dict__["__init__"] for c in classes if "__init__" in c.__dict__] if classes else [obj]
        names: dict[str, None] = {}
        for fn in inits:
            params = inspect.signature(fn).parameters.values()
            skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_KEYWORD)
            names |= dict.fromkeys(p.name for p in params if p.kind not in skip and p.name != "self")
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                return tuple(names)
            qualified = [f"{c.__module__}.{c.__qualname__}" for c in classes]
            forward = next((FORWARDS[n] for n in qualified if n in FORWARDS), None)
            if forward is not None:
                more = keywords_of(forward) if forward else ()
                return None if more is None else tuple(dict.fromkeys([*names, *more]))
        return tuple(names) if classes else None  # a class's **kwargs up to object's: none taken
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def options_with(key: str) -> str:
    """'; momentum is optimizer=sgd's' for optimizer.momentum: the options of key's group whose yaml sets it."""
    from trickbench.config import CONF_DIR

    group, _, rest = key.partition(".")
    folder = Path(CONF_DIR) / group
    found = [
        f"{group}={path.stem}"
        for path in sorted(folder.glob("*.yaml") if rest and folder.is_dir() else [])
        if OmegaConf.select(OmegaConf.load(path), rest, default=None) is not None
    ]
    return f"; {key.rsplit('.', 1)[-1]} is {' and '.join(found)}'s" if found else ""


def choice_name(key: str, target: str) -> str:
    """optimizer=adam as the command line chose it; else the target's name (a config composed without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    group = key.split(".", 1)[0]
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return f"{group}={choice}"
    return target


def select(cfg, key: str):
    """cfg's value at a dotted key, MISSING when the config lacks it (or a node above it is null)."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node.keys() and OmegaConf.is_missing(node, part):
            return "???"  # a mandatory value never given: the rule names it (`in` says a missing key is absent)
        if not isinstance(node, (Mapping, DictConfig)) or part not in node:
            return MISSING
        node = node[part]
    return node


def check(cfg, rules: Iterable[Rule | Relation | NodeCheck], prefix: str = "") -> None:
    """Every rule whose key cfg has (a key the config lacks, e.g. model.conv_dropout of resnet18, is not checked),
    Rules before the others. prefix: cfg is the node at that key, as a builder holds it (check(cfg.optimizer, RULES,
    "optimizer")); Relations and NodeChecks need the whole config and are then skipped."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    rules = sorted(rules, key=lambda r: not isinstance(r, Rule))  # stable: declared order within each kind
    for rule in rules:
        if prefix and (not isinstance(rule, Rule) or not rule.key.startswith(f"{prefix}.")):
            continue
        key = rule.key.removeprefix(f"{prefix}.") if prefix else rule.key
        try:
            value = select(cfg, key)
        except OmegaConfBaseException as e:  # an interpolation naming a key that is not there, e.g. results.scale=7
            raw = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
            raise ConfigError(rule.key, raw, f"an interpolation that resolves ({first_line(e)})") from None
        if value is not MISSING:
            rule.check(value, cfg)


# ---- predicates the rules are written with
def integer(low: int | None = None) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and (low is None or v >= low)


def number(low: float = -math.inf, high: float = math.inf, *, open_low=False, open_high=False) -> Callable:
    """A number in [low, high]; open_low/open_high exclude the bound."""

    def ok(v) -> bool:
        if not is_number(v) or math.isnan(v):
            return False
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return ok


def one_of(options: Iterable) -> Callable[[Any], bool]:
    options = tuple(options)
    return lambda v: v in options


def optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """ok, or null."""
    return lambda v: v is None or ok(v)


def boolean(v) -> bool:
    return isinstance(v, bool)


def mapping(v) -> bool:
    return isinstance(v, Mapping | DictConfig)


def text(v) -> bool:
    """A non-empty string (a name, a path)."""
    return isinstance(v, str) and v != ""


def existing_file(v) -> bool:
    """A path to a file, relative to the directory the command started from (Hydra may change into the run dir)."""
    return isinstance(v, str) and Path(to_absolute_path(v)).is_file()


positive = number(0, open_low=True)
nonnegative = number(0)
fraction = number(0, 1, open_high=True)  # [0, 1): dropout, label smoothing, momentum
