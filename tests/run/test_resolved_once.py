"""The run resolved once (issue 31): a run continued with resume= reads its last.ckpt once itself (its config, its
precision), beside Lightning's own load in fit(ckpt_path=)."""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from conftest import compose_cfg, tiny_run_overrides

from trickbench.train import main_task, run


class CrashOnce(L.Callback):
    """Raises at the start of epoch 1 of the first start only: the continued run (whose stored config builds this
    callback again) goes on."""

    crashed = False

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1 and not CrashOnce.crashed:
            CrashOnce.crashed = True
            raise RuntimeError("crash at the start of epoch 1")


def test_resume_reads_last_ckpt_once_and_lightning_once(tmp_path, fmnist_mirror, monkeypatch):
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=test_resolved_once.CrashOnce"]
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "trainer.max_epochs=2", *crash]
    try:
        run(compose_cfg(overrides, run_dir))
    except RuntimeError:
        pass
    assert CrashOnce.crashed and (run_dir / "checkpoints" / "last.ckpt").is_file()

    loads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):  # who loads which file: this project, or Lightning
        name = getattr(f, "path", None) or getattr(f, "name", None) or f
        loads.append((Path(str(name)).name, sys._getframe(1).f_globals["__name__"].split(".")[0]))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main_task(compose_cfg([f"resume={run_dir}"])) > 0  # the best val acc: it finished
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    of_last = [who for name, who in loads if name == "last.ckpt"]
    assert sorted(of_last) == ["lightning", "trickbench"], loads  # ours once (config, precision), fit's once
