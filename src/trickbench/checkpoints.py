"""A run folder's checkpoints: where resume= finds them (LAST_CKPT), the checks before a run starts in a folder,
and reading a checkpoint written by train.py (eval.py, resume=, a distillation teacher). Importable without torch:
the command line's checks run before torch loads."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, first_line
from trickbench.rules import Rule, optional, text
from trickbench.sweep.context import held_run, what_it_trains

log = logging.getLogger(__name__)
LAST_CKPT = Path("checkpoints") / "last.ckpt"  # in a run folder: what resume= continues from
RULES = [Rule("resume", optional(text), "null or a run or sweep folder to continue")]
RUN_KEYS = ("seed", "data", "model", "activation", "norm", "init")  # what rebuilding the run reads


def load_checkpoint(path: Path, key: str = "ckpt_path") -> dict:
    """A checkpoint written by train.py, checked: its stored config can rebuild the run. Anything else (no
    file, another program's file, a truncated download) is a ConfigError on `key`."""
    if not path.is_file():
        raise ConfigError(
            key, str(path), "an existing .ckpt file written by train.py (checkpoints/last.ckpt or best-*.ckpt)"
        )
    import torch  # here: the command line's checks import this module, and should not wait for torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch.load raises a different type for each way a file is not a checkpoint)
        raise ConfigError(
            key, str(path), f"a .ckpt file written by train.py; torch.load failed: {first_line(e)}"
        ) from e
    stored = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    config = stored.get("config")
    if not isinstance(config, dict) or any(k not in config for k in RUN_KEYS) or "state_dict" not in checkpoint:
        raise ConfigError(key, str(path), "a checkpoint written by train.py (it stores the run's config and weights)")
    return checkpoint


def resumed_precision(last_ckpt: Path, asked, resolved: str) -> str:
    """The precision a run continued from last_ckpt uses: the one it was trained with (its stored config records
    the resolved one), so trainer.precision=null cannot switch it on another machine; an explicit other value
    (asked) is refused. Checkpoints from before the precision was recorded keep `resolved`."""
    if not last_ckpt.is_file():
        return resolved
    started = load_checkpoint(last_ckpt, key="resume")["hyper_parameters"]["config"]["trainer"].get("precision")
    if started is None or str(started) == resolved:
        return resolved
    if asked is not None:
        raise ConfigError(
            "trainer.precision", asked, f"{started}, the precision {last_ckpt} was trained with (or a new run folder)"
        )
    log.info("precision %s: the precision %s was trained with", started, last_ckpt)
    return str(started)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """resume=<run dir>: the config stored in its last.ckpt, continued in that folder."""
    run_dir = Path(cfg.resume)
    check_resume(run_dir)
    resumed = OmegaConf.create(load_checkpoint(run_dir / LAST_CKPT, key="resume")["hyper_parameters"]["config"])
    resumed.paths.output_dir = str(run_dir)
    resumed.resume = str(run_dir)
    return resumed


def check_resume(run_dir) -> None:
    """resume=<run folder> outside a sweep needs that run's last.ckpt."""
    if not (Path(str(run_dir)) / LAST_CKPT).is_file():
        raise ConfigError("resume", str(run_dir), f"a run folder holding {LAST_CKPT} (from an earlier run)")


def check_run_dir(run_dir: Path, overrides: list[str]) -> None:
    """hydra.run.dir=<a folder with a run in it>, without resume=: refused when that run finished or trained other
    overrides (the run would overwrite its results and checkpoints); the same overrides after a failure run again."""
    try:
        done = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return
    trained = what_it_trains(done.get("overrides") or [])
    if done.get("status") == "ok" or trained != what_it_trains(overrides):
        raise ConfigError("hydra.run.dir", str(run_dir), held_run(done, run_dir))
