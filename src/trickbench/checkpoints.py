"""Writing a run's checkpoints whole or not at all, and reading one written by train.py: for eval.py, resume= and a
distillation teacher."""

import contextlib
import io
import logging
import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

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
    started = resume_checkpoint(last_ckpt)["hyper_parameters"]["config"]["trainer"].get("precision")
    if started is None or str(started) == resolved:
        return resolved
    if asked is not None:
        raise ConfigError(
            "trainer.precision", asked, f"{started}, the precision {last_ckpt} was trained with (or a new run folder)"
        )
    log.info("precision %s: the precision %s was trained with", started, last_ckpt)
    return str(started)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes (last.ckpt, best-*.ckpt, the SIGTERM one). Lightning's own save goes through
    a file in the system temp folder and moves it: across file systems that move is a copy into the target, which a
    kill or a full disk leaves half-written over the previous checkpoint, and the temp file stays. Here the bytes
    go to a hidden file beside the target, then os.replace (atomic within a file system): a reader sees the old file
    or the new one. On an error the temporary file is removed and the OSError says how many bytes were needed."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(exist_ok=True)  # not parents=True: a run folder removed while it runs is an error
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                e.needed_bytes = len(data)
                if e.filename is None or str(e.filename) == str(tmp):
                    e.filename = str(path)  # the user's file, not our temporary name (a failed write names none)
            raise


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
