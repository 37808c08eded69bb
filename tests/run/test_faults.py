"""Faults a user meets, with real processes on the CPU (docs/faults.md lists them): SIGKILL at every moment of a run,
SIGTERM and Ctrl-C of a run and of a joblib sweep, a full disk, a read-only log folder, a corrupt checkpoint or data
cache, two processes on one folder, and starts in the same second. Each interrupted run is resumed until it ends, and
ends with the weights of one uninterrupted run, every epoch once in its metrics.csv."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ONE_BATCH, ROOT, same_weights, tiny_run_overrides, train_cli

from trickbench.errors import FileFault
from trickbench.loggers import read_metrics_csv
from trickbench.sweep.folders import FolderLock

EPOCHS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fmnist_mirror):
    tmp = tmp_path_factory.mktemp("faults")
    # dropout and augmentation on: a resumed run must also replay the per-step random draws; one thread, as each
    # job of a 2-job joblib sweep on 2 cores has, so sweep jobs and single runs give the same numbers
    extra = [f"trainer.max_epochs={EPOCHS}", "model.dropout=0.3", "augment=crop_flip", "seed=3", "threads=1"]
    return tmp, [*tiny_run_overrides(fmnist_mirror, root=tmp / "data"), *extra]


@pytest.fixture(scope="module")
def reference(tiny):
    """One uninterrupted run: what every interrupted and resumed run below must end with."""
    tmp, overrides = tiny
    proc = train_cli(*overrides, f"hydra.run.dir={tmp / 'whole'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "whole"


def at(name: str, tmp: Path, stage: str = "train", epoch: int = 0, batch: int = 0, sig: str = "SIGKILL", group=False):
    """Overrides adding hooks.SignalAt as callbacks.<name>: `sig` at that moment, once."""
    return [
        f"+callbacks.{name}._target_=hooks.SignalAt",
        f"+callbacks.{name}.stage={stage}",
        f"+callbacks.{name}.epoch={epoch}",
        f"+callbacks.{name}.batch={batch}",
        f"+callbacks.{name}.signal={sig}",
        f"+callbacks.{name}.group={str(group).lower()}",
        f"+callbacks.{name}.marker={tmp / name}.marker",
    ]


def assert_like_reference(run_dir: Path, reference: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == EPOCHS
    assert [int(r["epoch"]) for r in read_metrics_csv(run_dir / "metrics.csv")] == list(range(EPOCHS))
    assert same_weights(run_dir, reference)
    assert results["test"] == json.loads((reference / "results.json").read_text())["test"]
    assert not list((run_dir / "checkpoints").glob(".*.tmp-*"))  # no half-written save left


def last_epoch(run_dir: Path) -> int | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=False)["epoch"] if path.exists() else None


@pytest.mark.slow
def test_sigkill_at_every_moment_of_a_run_then_resume_ends_as_one_uninterrupted_run(tiny, reference):
    tmp, overrides = tiny
    run_dir = tmp / "killed"
    kills = [
        *at("before_ckpt", tmp, "train", epoch=0, batch=1),  # nothing saved yet
        *at("training", tmp, "train", epoch=1, batch=1),
        *at("validating", tmp, "validate", epoch=1, batch=0),  # the tiny val and test splits are one batch each
        "+callbacks.saving._target_=hooks.KillDuringSave",  # epoch 1's last.ckpt written, not yet renamed
        f"+callbacks.saving.marker={tmp / 'saving'}",
        "+callbacks.saving.epoch=1",
        *at("testing", tmp, "test", batch=0),
    ]
    proc = train_cli(*overrides, *kills, f"hydra.run.dir={run_dir}")
    assert proc.returncode == -9 and last_epoch(run_dir) is None
    assert (tmp / "saving.io").read_text() == "AtomicCheckpointIO"  # best-*, last and SIGTERM's all go through it

    # each resume is killed at the next moment, until the last one ends; after each kill: last.ckpt's epoch, and
    # whether a save was cut between its write and its rename
    started_over = f"{run_dir} has no checkpoint yet (stopped before its first): starting the run over there"
    for n, (expected_epoch, cut_save) in enumerate(((0, False), (0, False), (0, True), (EPOCHS - 1, False))):
        proc = train_cli(f"resume={run_dir}")
        assert proc.returncode == -9, proc.stderr[-3000:]
        said = [line.split(" - ", 1)[-1] for line in proc.stdout.splitlines() if "starting the run over" in line]
        assert said == ([started_over] if n == 0 else [])  # one line, the first resume only (Hydra logs to stdout)
        assert last_epoch(run_dir) == expected_epoch  # a complete checkpoint, whatever the moment
        assert not (run_dir / "results.json").exists()
        assert len(list((run_dir / "checkpoints").glob(".last.ckpt.tmp-*"))) == cut_save
    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all((tmp / f"{m}.marker").exists() for m in ("before_ckpt", "training", "validating", "testing"))
    assert_like_reference(run_dir, reference)
    assert "seed=3" in json.loads((run_dir / "results.json").read_text())["overrides"]  # its own, from its first start


@pytest.mark.slow
def test_a_corrupt_last_ckpt_is_refused_in_one_line_naming_the_older_checkpoint(reference, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: resume='{run_dir}': checkpoints/last.ckpt is truncated or corrupt (")
    assert f"the older checkpoints/{best.name} is complete: copy it over last.ckpt to continue from it" in line


@pytest.mark.slow
def test_ctrl_c_and_a_second_process_on_the_folder_of_a_run_that_still_runs(tiny, reference):
    tmp, overrides = tiny
    run_dir = tmp / "ctrl_c"
    wait = ["+callbacks.wait._target_=hooks.WaitAt", "+callbacks.wait.epoch=1", f"+callbacks.wait.marker={tmp}/w"]
    ctrl_c = at("ctrl_c", tmp, "train", epoch=1, batch=1, sig="SIGINT")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    cmd = [sys.executable, "train.py", *overrides, *wait, *ctrl_c, f"hydra.run.dir={run_dir}"]
    log = tmp / "ctrl_c.stderr"
    with open(log, "w") as fh:  # a file, not a pipe: nobody reads it while the run waits
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fh, text=True)
    deadline = time.monotonic() + 120
    while not (tmp / "w.ready").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp / "w.ready").exists(), log.read_text()[-3000:]

    second = train_cli(f"resume={run_dir}")  # while the first one still runs
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert line == (
        f"error: resume='{run_dir}': in use by another process (pid {first.pid}) that still runs there; wait for it "
        "to end (or stop it), or use another folder"
    )
    (tmp / "w.go").touch()
    first.wait(timeout=120)
    err = log.read_text()
    assert first.returncode == 130, err[-3000:]  # 128 + SIGINT
    assert err.strip().splitlines()[-1] == (
        f"stopped by Ctrl-C; checkpoints/last.ckpt holds the progress: resume={run_dir}"
    )
    # saved after the batch that was running: epoch 0 (3 batches) and 2 of epoch 1, a clean state mid-epoch
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3 + 2
    proc = train_cli(f"resume={run_dir}")  # the lock went with the first process
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_like_reference(run_dir, reference)


def _sweep(tmp: Path, overrides: list[str], *args: str) -> subprocess.CompletedProcess:
    """`train.py -m` in a process group of its own (a signal to the group reaches the sweep and its workers, not
    pytest); returns once the whole group is gone, as a user's next command would wait for it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    cmd = [sys.executable, "train.py", "-m", *overrides, f"paths.log_dir={tmp / 'logs'}", *args]
    out, err = tmp / "sweep.stdout", tmp / "sweep.stderr"
    with open(out, "w") as fo, open(err, "w") as fe:  # files: a worker outliving the parent holds no pipe open
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fo, stderr=fe, start_new_session=True)
        proc.wait(timeout=240)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a worker of the sweep outlived it by a minute")
    return subprocess.CompletedProcess(cmd, proc.returncode, out.read_text(), err.read_text())


@pytest.mark.slow
def test_ctrl_c_then_sigterm_of_a_joblib_sweep_then_resume_ends_each_job_as_uninterrupted(tiny, reference):
    tmp, overrides = tiny
    overrides = [o for o in overrides if o != "seed=3"]
    sweep = ["seed=3,4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    stops = [
        *at("sweep_int", tmp, "train", epoch=1, batch=1, sig="SIGINT", group=True),  # Ctrl-C in the terminal
        *at("sweep_term", tmp, "train", epoch=2, batch=1, sig="SIGTERM", group=True),  # kill -TERM -- -PGID
    ]
    proc = _sweep(tmp, overrides, *sweep, *stops)
    assert proc.returncode == 130
    (folder,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    assert f"stopped by Ctrl-C; rerun the same command with resume={folder} to continue" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
    proc = _sweep(tmp, overrides, *sweep, *stops, f"resume={folder}")
    assert proc.returncode == -signal.SIGTERM and (tmp / "sweep_term.marker").exists()
    proc = _sweep(tmp, overrides, *sweep, *stops, f"resume={folder}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_like_reference(folder / "0", reference)  # job 0 is seed=3, the reference's config
    job1 = json.loads((folder / "1" / "results.json").read_text())
    assert job1["status"] == "ok" and job1["epochs"] == EPOCHS
    assert [int(r["epoch"]) for r in read_metrics_csv(folder / "1" / "metrics.csv")] == list(range(EPOCHS))

    # resuming with another command: refused once, in one line, before any job or multirun.yaml is touched
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = _sweep(
        tmp, overrides, "seed=3,5", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *stops, f"resume={folder}"
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: resume='{folder}': the same sweep command; that sweep ran [")
    assert "'seed=3,4'" in line and "'seed=3,5'" in line
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"} == before

    # a second sweep on a folder whose sweep still runs (its lock held): refused in one line
    held = FolderLock(folder, "test")
    try:
        proc = _sweep(tmp, overrides, *sweep, *stops, f"resume={folder}")
    finally:
        held.release()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: resume='{folder}': in use by another process (pid {os.getpid()}) that still runs there; wait for "
        "it to end (or stop it), or use another folder"
    ]


@pytest.mark.slow
def test_runs_and_sweeps_started_in_the_same_second_each_get_their_own_folder(tmp_path, fmnist_mirror):
    logs = tmp_path / "logs"
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(time.time()))
    # every name of the next minute is taken, as by runs started in the same second: each start takes the next one
    now = time.time()
    for kind in ("runs", "multiruns"):
        for s in range(60):
            (logs / "train" / kind / time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now + s))).mkdir(parents=True)
    base = [
        *tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"),
        *ONE_BATCH,
        "threads=1",
        f"paths.log_dir={logs}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    starts = [[f"seed={s}"] for s in (0, 1)] + [["-m", f"seed={s}"] for s in (2, 3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", *a[:-1], *base, a[-1]], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )
        for a in starts
    ]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-2000:] for e in errs]
    runs = [d for d in (logs / "train" / "runs").iterdir() if (d / "results.json").exists()]
    sweeps = [d for d in (logs / "train" / "multiruns").iterdir() if (d / "0" / "results.json").exists()]
    assert len(runs) == 2 and len(sweeps) == 2
    seeds = {json.loads((d / "results.json").read_text())["seed"] for d in runs}
    seeds |= {json.loads((d / "0" / "results.json").read_text())["seed"] for d in sweeps}
    assert seeds == {0, 1, 2, 3}  # none overwrote another
    for d in runs + sweeps:  # still sorted by time: the second it started, then _2, _3, ...
        assert d.name[:19] >= stamp and d.name[19] == "_" and d.name[20:].isdigit()


@pytest.fixture
def small_disk(tmp_path):
    """(folder, filler, extra overrides): a 1 MB tmpfs (mounted as root) that a filler leaves room on for the first
    checkpoint only; where none can be mounted, a folder and hooks.WriteFailsAt's ENOSPC on the first last.ckpt."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    filler = mnt / "filler"
    if mounted.returncode == 0:
        filler.write_bytes(b"\0" * (1024 * 1024 - 180 * 1024))
        yield mnt, filler, []
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    else:
        filler.write_bytes(b"")
        yield mnt, filler, ["+callbacks.full._target_=hooks.WriteFailsAt", f"+callbacks.full.marker={tmp_path}/full"]


@pytest.mark.slow
def test_a_full_disk_stops_in_one_line_leaves_no_partial_file_and_resumes_once_freed(tiny, reference, small_disk):
    tmp, overrides = tiny
    disk, filler, injected = small_disk
    run_dir = disk / "run"
    proc = train_cli(*overrides, *injected, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert proc.stderr.strip().splitlines()[-1] == line  # the last line
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert line.startswith(f"error: {run_dir}/checkpoints/") and ": no space left on device (this write needs " in line
    assert line.endswith(f" free there); free some space, then resume={run_dir}")
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # temporary checkpoint and results files
    written = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert written and all(torch.load(p, weights_only=False)["epoch"] == 0 for p in written)  # whole, loadable

    filler.unlink()
    (cache,) = (tmp / "data" / "cache").glob("*.pt")  # and a data cache cut short: decoded again
    cache.write_bytes(cache.read_bytes()[:1000])
    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert f"cache {cache} is unreadable" in out and "decoding again" in out
    assert_like_reference(run_dir, reference)


@pytest.mark.slow
def test_a_permission_error_mid_run_stops_in_one_line_and_resumes_once_fixed(tiny, reference):
    tmp, overrides = tiny
    run_dir = tmp / "denied"
    denied = [
        "+callbacks.deny._target_=hooks.WriteFailsAt",
        f"+callbacks.deny.marker={tmp}/deny",
        "+callbacks.deny.error=EACCES",
    ]
    proc = train_cli(*overrides, *denied, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {run_dir}/checkpoints/last.ckpt: permission denied; fix that, then resume={run_dir}"
    )
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_like_reference(run_dir, reference)


def test_a_read_only_log_folder_is_refused_in_one_line_before_the_run(tmp_path, fmnist_mirror):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode != 0:
        pytest.fail("needs root to mount a read-only tmpfs")
    try:
        proc = train_cli(*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), f"paths.log_dir={ro}/logs")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: paths.log_dir: cannot write under {ro}: read-only file system"]


@pytest.mark.slow
def test_a_run_folder_removed_while_the_run_runs_stops_in_one_line_and_is_not_recreated(tiny):
    tmp, overrides = tiny
    run_dir = tmp / "removed"
    rm = ["+callbacks.rm._target_=hooks.RemoveFolderAt", f"+callbacks.rm.folder={run_dir}", "+callbacks.rm.epoch=1"]
    proc = train_cli(*overrides, *rm, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr  # TensorBoard's writer thread too: one log line, on stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line == proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {run_dir}/")
    assert line.endswith(
        f": no such file or directory (the run folder {run_dir} was removed while the run ran); start the run again"
    )
    assert not run_dir.exists()  # no part of a run recreated there, no failure record


@pytest.mark.parametrize(
    "code, expect",
    [
        (errno.ENOSPC, "/r/checkpoints/last.ckpt: no space left on device (this write needs 2.0 MB, "),
        (errno.EDQUOT, "/r/checkpoints/last.ckpt: disk quota exceeded (this write needs 2.0 MB, "),
        (errno.EACCES, "/r/checkpoints/last.ckpt: permission denied; fix that, then resume=/r"),
        (errno.EROFS, "/r/checkpoints/last.ckpt: read-only file system; fix that, then resume=/r"),
        (errno.ENOENT, "/r/checkpoints/last.ckpt: no such file or directory (the run folder /r was removed while"),
    ],
)
def test_os_errors_read_as_one_line_naming_the_path_and_the_cause(code, expect):
    error = OSError(code, os.strerror(code), "/r/checkpoints/last.ckpt")
    error.needed_bytes = 2_000_000
    assert FileFault.applies(error, "/r") and str(FileFault(error, "/r")).startswith(expect)


def test_os_errors_the_user_cannot_fix_keep_their_traceback(tmp_path):
    assert not FileFault.applies(OSError(errno.ECONNREFUSED, "Connection refused"), tmp_path)  # a download
    assert not FileFault.applies(FileNotFoundError(errno.ENOENT, "No such file", "x"), tmp_path)  # folder still there
