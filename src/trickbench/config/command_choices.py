"""What the command line asks, against what its presets set, where Hydra would settle it silently: two tricks that
set one key (last wins), a trick and an explicit setting of what it sets (Hydra lets the command line's group choice
or value beat the trick's), and a preset's sweep run without -m (one job of it would train, with the preset's
first values). Each is refused in one line naming both sides."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError


def _command_line() -> list:
    return OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))


def selected_tricks(overrides: list) -> list[str]:
    """The trick options chosen on the command line (trick=a or trick=[a,b])."""
    for o in overrides:
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


def check_trick_against_command_line(tricks: list[str], directory: Path, overrides: list) -> None:
    """scheduler=step trick=cosine, optimizer.lr=0.05 trick=low_lr: Hydra runs the command line's, and a trick all of
    whose keys the command line sets changes nothing. Some of them set is tuning it (trick=swa
    callbacks.swa.swa_epoch_start=2)."""
    given = {o.key_or_group: o for o in overrides if o.key_or_group != "trick"}
    for trick in tricks:
        keys = sorted(trick_keys(directory / f"{trick}.yaml"))
        if keys and all(k in given for k in keys):
            o = given[keys[0]]
            sets = f"sets only {keys[0]}" if len(keys) == 1 else f"sets only {', '.join(keys)}, all given here too"
            allowed = f"trick={trick} {sets}; Hydra runs the command line's, so the trick would change nothing"
            raise ConfigError(o.key_or_group, o.value(), f"{allowed}: give one of them")


def check_preset_sweep() -> None:
    """A single run of a preset that sweeps (hydra.sweeper.params) trains one job of it: refused, unless the command
    line gives every swept key (then it is one configuration). resume= continues one job of a sweep."""
    if not HydraConfig.initialized():
        return
    params = HydraConfig.get().sweeper.get("params") or {}
    given = {o.key_or_group for o in _command_line()}
    parser = OverridesParser.create()
    swept = [k for k, v in params.items() if k not in given and parser.parse_override(f"{k}={v}").is_sweep_override()]
    if not swept or "resume" in given or "hparams_search" in given:  # hparams_search: search.check_single_run
        return
    choices = HydraConfig.get().runtime.choices
    preset = next((f"{g}={choices[g]}" for g in ("experiment", "scale", "ladder") if choices.get(g)), "a preset")
    each = "each" if len(swept) > 1 else "it"
    allowed = f"{preset} sweeps {', '.join(swept)}: run it with -m, or give {each} a value"
    raise ConfigError(swept[0], params[swept[0]], allowed)


def check_command_choices() -> None:
    """Every check above, on Hydra's record of the command line (nothing to check without one)."""
    if not HydraConfig.initialized():
        return
    overrides, directory = _command_line(), trick_dir()
    tricks = selected_tricks(overrides)
    check_trick_conflicts(tricks, directory)
    check_trick_against_command_line(tricks, directory, overrides)
