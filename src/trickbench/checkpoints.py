"""A run folder's checkpoints: where resume= finds them (LAST_CKPT), the checks before a run starts in a folder,
reading a checkpoint written by train.py (eval.py, resume=, a distillation teacher; a continued run's last.ckpt once:
last_checkpoint) and what a killed save left
(callbacks/checkpoint_io.py writes them whole). Importable without torch:
the command line's checks run before torch loads."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, first_line
from trickbench.config.resume_changes import kept_settings
from trickbench.rules import Rule, optional, text
from trickbench.sweep.context import held_run, what_it_trains
from trickbench.sweep.folders import SAVED_CONFIG, started_over

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


@dataclass(frozen=True)
class LastCheckpoint:
    """A run folder's last.ckpt, read once: the file fit continues from and the run config stored in it."""

    path: Path
    config: dict


def last_checkpoint(run_dir: Path) -> LastCheckpoint | None:
    """The folder's last.ckpt to continue from, loaded and checked once (the only time this project reads it; fit's
    ckpt_path= is Lightning's load); None when the folder has none."""
    path = Path(run_dir) / LAST_CKPT
    if not path.is_file():
        return None
    return LastCheckpoint(path, resume_checkpoint(path)["hyper_parameters"]["config"])


def continued_precision(last: LastCheckpoint | None, asked):
    """The trainer.precision a run asks for: `asked`, or, continuing from `last`, the precision it was trained with
    (its stored config records the resolved one), so trainer.precision=null cannot switch it on another machine; an
    explicit other value is refused. Checkpoints from before the precision was recorded keep `asked`."""
    started = None if last is None else last.config["trainer"].get("precision")
    if started is None or str(started) == str(asked):
        return asked
    if asked is not None:
        raise ConfigError(
            "trainer.precision", asked, f"{started}, the precision {last.path} was trained with (or a new run folder)"
        )
    log.info("precision %s: the precision %s was trained with", started, last.path)
    return str(started)


def resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, LastCheckpoint | None]:
    """resume=<run dir>: the config stored in its last.ckpt (returned with it, read once), continued in that folder;
    a run killed before its first checkpoint starts over there from the config Hydra saved when it started. The
    command's overrides (cfg: composed with them) may change only what resume_changes allows."""
    run_dir = Path(cfg.resume)
    check_resume(run_dir)
    last = last_checkpoint(run_dir)
    if last is not None:
        resumed = OmegaConf.create(last.config)
    else:
        log.warning("%s has no checkpoint yet (stopped before its first): starting the run over there", run_dir)
        resumed = started_over(run_dir)
        for stale in (run_dir / LAST_CKPT.parent).glob("best-*.ckpt"):  # the first attempt's; it writes them again
            stale.unlink()
    resumed = kept_settings(cfg, resumed, overrides, run_dir)
    moved_from = resumed.paths.get("output_dir")
    if moved_from and Path(moved_from) != run_dir:
        log.info("resume=%s: the run was moved from %s; its paths follow it", run_dir, moved_from)
        resumed = OmegaConf.create(_follow(OmegaConf.to_container(resumed), str(moved_from), str(run_dir)))
    resumed.paths.output_dir = str(run_dir)
    resumed.resume = str(run_dir)
    return resumed, last


def _follow(node, old: str, new: str):
    """node with every path under old (the run folder the stored config names: checkpoints, loggers) under new."""
    if isinstance(node, dict):
        return {k: _follow(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_follow(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old.rstrip("/")) :]
    return node


def check_resume(run_dir) -> None:
    """resume=<run folder> outside a sweep: a folder an earlier run started in (its last.ckpt, or Hydra's record of
    its config when it was killed before its first checkpoint)."""
    run_dir = Path(str(run_dir))
    if not ((run_dir / LAST_CKPT).is_file() or (run_dir / SAVED_CONFIG).is_file()):
        raise ConfigError(
            "resume", str(run_dir), f"a run folder holding {LAST_CKPT} or {SAVED_CONFIG} (from an earlier run)"
        )


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


def remove_partial_saves(folder: Path) -> list[Path]:
    """Temporary files of saves a SIGKILL interrupted (nothing else writes there while the run holds its lock)."""
    stale = sorted(folder.glob(".*.tmp-*")) if folder.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def resume_checkpoint(last_ckpt: Path) -> dict:
    """last.ckpt to continue from; truncated or corrupt (a copy cut short, a disk error): refused in one line
    naming it and the older complete checkpoint beside it."""
    try:
        return load_checkpoint(last_ckpt, key="resume")
    except ConfigError as e:
        older = [p for p in sorted(last_ckpt.parent.glob("*.ckpt")) if p != last_ckpt and _loads(p)]
        here = f"{last_ckpt.parent.name}/{last_ckpt.name}"
        way = (
            f"the older {last_ckpt.parent.name}/{older[-1].name} is complete: copy it over {last_ckpt.name} to "
            f"continue from it, or remove {last_ckpt.name} to start the run over"
            if older
            else f"no older checkpoint there: remove {last_ckpt.name} to start the run over"
        )
        why = e.allowed.split("torch.load failed: ", 1)[-1].split(". ")[0]  # torch's first sentence
        raise ConfigError(
            "resume", str(last_ckpt.parent.parent), f"{here} is truncated or corrupt ({why}); {way}"
        ) from None


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
        return True
    except ConfigError:
        return False
