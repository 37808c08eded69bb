"""What a resume=<run folder> command may change of the run it continues: where and how it runs (the sweeps'
placement keys), how much it says (LOGGING_KEYS), and trainer.max_epochs while nothing of the run follows its
length. Any other override whose value differs from the run's is refused in one line naming both values; an allowed
change takes effect and is said in one log line. Importable without torch (checkpoints.py is)."""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trickbench import run_length
from trickbench.errors import ConfigError
from trickbench.sweep.context import what_it_trains

log = logging.getLogger(__name__)
LOGGING_KEYS = ("trainer.log_every_n_steps", "trainer.enable_progress_bar")  # how much a run says, not what it trains
LENGTH = "trainer.max_epochs"
# lengths that run_length.py reads as a fraction of the run when given as one
FRACTION_KEYS = (
    "scheduler.warmup_epochs",
    "scheduler.lr_scheduler.milestones",
    "scheduler.lr_scheduler.step_size",
    "callbacks.swa.swa_epoch_start",
    "callbacks.lookahead.start_epoch",
    "callbacks.ema.update_starting_at_step",
)
UNSET = "(not set)"


def follows_length(run: DictConfig) -> list[str]:
    """What of the run is scheduled against its length, so a new trainer.max_epochs would rescale it mid-run: a null
    T_max/total_iters (the whole run), scheduler.final_lr_factor, a length given as a fraction, Lookahead's decay."""
    from trickbench.optim import RUN_LENGTH_ARGS  # here: the command line imports this module before torch loads

    found = [
        f"scheduler.lr_scheduler.{k}=null"
        for k in RUN_LENGTH_ARGS
        if k in (OmegaConf.select(run, "scheduler.lr_scheduler") or {})
        and OmegaConf.select(run, f"scheduler.lr_scheduler.{k}") is None
    ]
    if OmegaConf.select(run, "scheduler.final_lr_factor") is not None:
        found.append(f"scheduler.final_lr_factor={run.scheduler.final_lr_factor}")
    for key in FRACTION_KEYS:
        v = _value(run, key)
        if any(map(run_length.is_fraction, v if isinstance(v, list) else [v])):
            found.append(f"{key}={v}")
    if OmegaConf.select(run, "callbacks.lookahead.decay_power"):  # its decay is (step / the run's steps) ** power
        found.append(f"callbacks.lookahead.decay_power={run.callbacks.lookahead.decay_power}")
    return found


def kept_settings(asked: DictConfig, run: DictConfig, overrides: list[str], run_dir: Path) -> DictConfig:
    """The run's config with the command's allowed changes applied (asked: the command's composed config;
    overrides: its override lines). Any other value that differs from the run's: one ConfigError naming them all."""
    length, changed, refused = follows_length(run), [], []
    for line in overrides:
        key = line.lstrip("+~").split("=", 1)[0]
        if key == "resume" or key.startswith("hydra."):  # Hydra's own, applied by Hydra before the run
            continue
        now, before = _value(asked, key), _value(run, key)
        if now == before:
            continue
        if not what_it_trains([line]) or key in LOGGING_KEYS or (key == LENGTH and not length):
            changed.append(f"{key}={now} (the run's: {before})")
            _set(run, key, now)
        else:
            why = f" (the run follows its length: {', '.join(length)})" if key == LENGTH else ""
            refused.append(f"{line} differs from the run's {key}={_run_choice(run_dir, key, before)}{why}")
    if refused:
        keep = "a resumed run keeps its settings (start a new run to change them)"
        raise ConfigError("resume", str(run_dir), f"{'; '.join(refused)}; {keep}")
    if changed:
        log.info("resume=%s: changed on resume: %s", run_dir, ", ".join(changed))
    return run


def _value(cfg: DictConfig, key: str):
    node = OmegaConf.select(cfg, key, default=UNSET, throw_on_resolution_failure=False)
    if OmegaConf.is_config(node):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:  # noqa: BLE001  (an interpolation only Hydra resolves: compare it as written)
            return OmegaConf.to_container(node)
    return node


def _set(run: DictConfig, key: str, value) -> None:
    if value == UNSET:  # ~key
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(run, parent) if parent else run
        node.pop(leaf, None)
    else:
        OmegaConf.update(run, key, value, merge=False, force_add=True)


def _run_choice(run_dir: Path, key: str, value):
    """A config group's option as the run chose it (Hydra's record in .hydra/hydra.yaml), else its value."""
    saved = Path(run_dir) / ".hydra" / "hydra.yaml"
    if isinstance(value, dict) and saved.is_file():
        return OmegaConf.select(OmegaConf.load(saved), f"hydra.runtime.choices.{key}", default=value)
    return value
