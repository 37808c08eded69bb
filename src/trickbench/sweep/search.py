"""Hyperparameter search (hparams_search=coarse|fine): the search space from Hydra's override grammar, the score a
trial gets, the sweep folder's best.json, and the fine preset's ranges centred on the coarse optimum.
The Hydra sweeper that drives Optuna is src/hydra_plugins/trickbench_sweepers/optuna_sweeper.py."""

import json
import math
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, exit_with, first_line, is_int, is_number

BEST_FILE = "best.json"  # written into the sweep folder after every batch of trials
STORAGE_FILE = "optuna.db"  # the study (sqlite), what resume=<sweep folder> continues
BAD_SCORE = 0.0  # a failed or diverged run's val accuracy: below chance, so the search learns to avoid it
FROM_KEY = "hparams_search.from"


def score(results: dict | None) -> float:
    """What a run returns to the sweeper: its best val accuracy, BAD_SCORE when it failed or diverged."""
    if not results or results.get("status") != "ok":
        return BAD_SCORE
    value = (results.get("val") or {}).get("acc_best")
    return float(value) if is_number(value) and math.isfinite(value) else BAD_SCORE


def check_single_run(cfg) -> None:
    """hparams_search=... without -m would train one run with the preset's epochs: refused in one line (resuming
    one killed job of a search, resume=<sweep>/<job>, is not)."""
    if cfg.get("hparams_search") is not None and not cfg.get("resume"):
        from hydra.core.hydra_config import HydraConfig

        name = HydraConfig.get().runtime.choices.get("hparams_search") if HydraConfig.initialized() else None
        raise ConfigError("hparams_search", name, f"a search, run as a sweep: python train.py -m hparams_search={name}")


# ---- the search space: Hydra's sweep grammar -> Optuna distributions --------------------------------------------
def split_space(params: dict, arguments: list[str]) -> tuple[dict, list[str]]:
    """hydra.sweeper.params plus the command's overrides -> ({name: Optuna distribution}, fixed overrides).
    choice(a,b) / a,b / range(..) are categorical, interval(lo,hi) uniform, tag(log, interval(lo,hi)) log-uniform
    (integers when both bounds are); a sweep on the command line replaces the preset's range for that key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parser = OverridesParser.create()
    space, fixed = {}, []
    preset = [f"{k}={v}" for k, v in (params or {}).items()]
    for override in parser.parse_overrides(preset) + parser.parse_overrides(list(arguments)):
        name = override.get_key_element()
        if not override.is_sweep_override():
            space.pop(name, None)
            fixed.append(override.input_line)
            continue
        fixed = [f for f in fixed if parser.parse_override(f).get_key_element() != name]
        value = override.value()
        if isinstance(value, IntervalSweep):
            space[name] = _interval(name, value.start, value.end, "log" in value.tags)
        else:
            space[name] = _categorical(list(override.sweep_string_iterator()))
    return space, fixed


def _interval(name: str, low, high, log: bool):
    from optuna.distributions import FloatDistribution, IntDistribution

    if not (low < high and (low > 0 or not log)):
        raise ConfigError(name, f"interval({low}, {high})", "interval(low, high) with low < high (low > 0 for log)")
    if is_int(low) and is_int(high):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _categorical(choices: list[str]):
    from optuna.distributions import CategoricalDistribution

    return CategoricalDistribution(choices)


def trained(value):
    """The value a job trains: a float drawn by the sampler, to 4 significant digits (0.1% apart: finer than any
    search here resolves, and the report's rows stay readable)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def override(name: str, value) -> str:
    """key=value for a job's command line; the same for the same trial every time (a resumed search)."""
    value = trained(value)
    return f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}"


def probe(space: dict) -> list[str]:
    """One point of the space (the lower bounds, the first choices): composing it checks every key exists."""
    return [override(n, d.choices[0] if hasattr(d, "choices") else d.low) for n, d in space.items()]


def space_record(space: dict) -> dict:
    from optuna.distributions import distribution_to_json

    return {name: json.loads(distribution_to_json(d)) for name, d in sorted(space.items())}


# ---- best.json ------------------------------------------------------------------------------------------------------
def best_record(study, fixed: list[str]) -> dict:
    """The search so far: every finished trial, and the best one among those that finished ok."""
    from optuna.trial import TrialState

    trials = [
        {
            "trial": t.number,
            "job": t.user_attrs.get("job"),
            "value": t.value,
            "status": t.user_attrs.get("status"),
            "error": t.user_attrs.get("error"),
            "params": {k: trained(v) for k, v in t.params.items()},
            "folder": t.user_attrs.get("folder"),
        }
        for t in study.trials
        if t.state == TrialState.COMPLETE
    ]
    ok = [t for t in trials if t["status"] == "ok"]
    pick = max if study.direction.name == "MAXIMIZE" else min
    best = pick(ok, key=lambda t: t["value"]) if ok else None
    if best is not None:
        best = {**best, "overrides": [override(k, v) for k, v in sorted(best["params"].items())]}
    return {
        "objective": "val.acc_best",
        "direction": study.direction.name.lower(),
        "study": study.study_name,
        "n_trials": len(trials),
        "n_ok": len(ok),
        "fixed": fixed,
        "best": best,
        "trials": trials,
    }


def read_best(folder) -> dict:
    """The best trial of a finished (or interrupted) search in `folder`, as its best.json records it."""
    allowed = f"a sweep folder of hparams_search=coarse, holding {BEST_FILE} with a trial that finished ok"
    if folder in (None, "", "???"):
        raise ConfigError(FROM_KEY, folder, allowed)
    path = Path(str(folder)) / BEST_FILE
    try:
        best = json.loads(path.read_text()).get("best")
    except (OSError, ValueError, AttributeError):
        best = None
    if not best:
        raise ConfigError(FROM_KEY, str(folder), allowed)
    return best


def best_params(folder) -> dict:
    """Resolver trickbench.best_params: the coarse optimum, the fine search's first trial."""
    return dict(read_best(folder)["params"])


def around(folder, key: str, scale: str, width, low=None, high=None) -> str:
    """Resolver trickbench.around: a range centred on the coarse optimum of `key`, in the sweep grammar.
    log: optimum / width .. optimum x width; linear: optimum - width .. optimum + width, clipped to [low, high]."""
    params = read_best(folder)["params"]
    if key not in params or not is_number(params[key]):
        searched = ", ".join(sorted(params)) or "nothing"
        raise ConfigError(FROM_KEY, str(folder), f"a search over {key} (that one searched {searched})")
    value, width = float(params[key]), float(width)
    if scale == "log":
        lo, hi = value / width, value * width
    else:
        lo, hi = value - width, value + width
    lo, hi = max(lo, float(low)) if low is not None else lo, min(hi, float(high)) if high is not None else hi
    interval = f"interval({lo!r}, {hi!r})"
    return f"tag(log, {interval})" if scale == "log" else interval


class SearchCheck(Callback):
    """Hydra callback (hparams_search presets): reads the search space before the sweeper starts, so a missing or
    bad hparams_search.from is one line and exit 2, before any trial."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        except Exception as e:  # noqa: BLE001  OmegaConf wraps the resolver's error: find the user's
            cause = e
            while cause is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__ or cause.__context__
            exit_with(first_line(cause or e))
