"""Reading a checkpoint written by train.py: for eval.py, resume= and a distillation teacher."""

import logging

from pathlib import Path

import torch

from trickbench.errors import ConfigError, first_line

log = logging.getLogger(__name__)
RUN_KEYS = ("seed", "data", "model", "activation", "norm", "init")  # what rebuilding the run reads


def load_checkpoint(path: Path, key: str = "ckpt_path") -> dict:
    """A checkpoint written by train.py, checked: its stored config can rebuild the run. Anything else (no
    file, another program's file, a truncated download) is a ConfigError on `key`."""
    if not path.is_file():
        raise ConfigError(
            key, str(path), "an existing .ckpt file written by train.py (checkpoints/last.ckpt or best-*.ckpt)"
        )
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
