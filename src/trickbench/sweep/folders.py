"""A run or sweep folder: a new one for every start (two started in the same second too), one process at a time in
it (a lock held for the run's life), and what resume= continues from when the run was killed before its first
checkpoint."""

import fcntl
import itertools
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, TrickbenchError, exit_with
from trickbench.sweep.context import what_it_trains

LOCK = ".lock"
SAVED_CONFIG = Path(".hydra") / "config.yaml"  # Hydra's record of the run's config, written before the run starts


def new_folder(resume, parent: str, stamp: str) -> str:
    """resume= names the folder; else <parent>/<stamp>, or <stamp>_2, _3, ... when a run or sweep started in the
    same second has it. os.mkdir is atomic, so each start gets its own. conf/hydra/default.yaml's run.dir and
    sweep.dir (config/resolvers.py); the resolver is cached (like Hydra's now), so a start makes one folder."""
    if resume not in (None, ""):
        return str(resume)
    Path(parent).mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = Path(parent) / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            path.mkdir()
            return str(path)
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def check_writable(folder: Path, key: str) -> None:
    """The folder a run or sweep will write to, or its nearest existing parent, takes new files: a read-only or
    forbidden one stops here in one line, before Hydra's own traceback while it creates the folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    if not probe.is_dir():
        cause = "not a folder"
    elif os.statvfs(probe).f_flag & os.ST_RDONLY:
        cause = "read-only file system"
    else:
        cause = "permission denied"
    raise TrickbenchError(f"{key}: cannot write under {probe}: {cause}")


class FolderInUse(TrickbenchError):
    """Another live process holds the folder's lock: nothing is written there (not even a failure record)."""


class FolderLock:
    """flock on <folder>/.lock, held until release() or the process dies (the kernel frees it, SIGKILL included),
    so a lock file left by a killed run never blocks its resume."""

    def __init__(self, folder: Path, key: str):
        self.fd = None
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderInUse(
                f"{key}={str(folder)!r}: in use by another process (pid {holder}) that still runs there; wait for it "
                "to end (or stop it), or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor frees the flock
            self.fd = None


def started_over(run_dir: Path) -> DictConfig:
    """The config a run killed before its first checkpoint saved in its folder (Hydra writes it before the run)."""
    return OmegaConf.load(run_dir / SAVED_CONFIG)


def can_resume(run_dir: Path, last_ckpt: Path) -> bool:
    return (run_dir / last_ckpt).is_file() or (run_dir / SAVED_CONFIG).is_file()


def sweep_command(config: DictConfig) -> dict:
    """What a sweep trains: its overrides minus where and how it runs, and the sweeper's own params."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return {
        "overrides": what_it_trains(list(config.hydra.overrides.task)),
        "params": OmegaConf.to_container(params) if params is not None else None,
    }


class SweepFolderCheck(Callback):
    """Hydra callback, before any job starts: holds the sweep folder's lock for the sweep's life (a second sweep on
    it refuses), and refuses resume=<sweep folder> with another command than the one that started it, once,
    before its multirun.yaml is rewritten or any job folder is touched."""

    folder: Path | None = None  # this process's sweep, for train.py's line when Ctrl-C stops it

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = SweepFolderCheck.folder = Path(str(config.hydra.sweep.dir))
        try:
            self.lock = FolderLock(folder, "resume" if config.get("resume") else "hydra.sweep.dir")
            saved = folder / "multirun.yaml"
            if config.get("resume") and saved.is_file():
                before, now = sweep_command(OmegaConf.load(saved)), sweep_command(config)
                if before != now:
                    raise ConfigError(
                        "resume",
                        str(folder),
                        f"the same sweep command; that sweep ran {before['overrides']}"
                        + (
                            f" with hydra.sweeper.params {before['params']}"
                            if before["params"] != now["params"]
                            else ""
                        )
                        + f", this one asks {now['overrides']}",
                    )
        except TrickbenchError as e:
            exit_with(e)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if getattr(self, "lock", None) is not None:
            self.lock.release()
