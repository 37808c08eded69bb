"""trainer.precision=null on a CPU: bf16-mixed where torch's probes find native bfloat16, 32-true elsewhere; a bf16 run
records what it used, its checkpoint evaluates in eval.py to its recorded test accuracy, and a resumed run keeps the
precision it started with whatever the machine it continues on."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose_cfg, tiny_run_overrides

from trickbench import speed
from trickbench.errors import ConfigError
from trickbench.train import run

PROBE = speed.cpu_native_bf16  # the real one, before conftest's cpu_without_native_bf16 replaces it for each test


@pytest.mark.parametrize(
    "machine, avx512_bf16, amx, mkldnn_bf16, native",
    [
        ("x86_64", True, False, True, True),  # AVX512_BF16 (AMD Zen 4, Intel Cooper Lake)
        ("x86_64", False, True, True, True),  # AMX (Intel Sapphire Rapids)
        ("x86_64", False, False, True, False),  # AVX-512 without BF16: oneDNN says yes, but it emulates
        ("aarch64", False, False, True, True),  # Arm: oneDNN's check is the bf16 extension itself
        ("aarch64", False, False, False, False),
    ],
)
def test_the_probe_reads_torchs_cpu_capabilities(monkeypatch, machine, avx512_bf16, amx, mkldnn_bf16, native):
    monkeypatch.setattr(speed.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)
    assert PROBE() is native


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_probe(monkeypatch, caplog, native):
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: native)
    with caplog.at_level("INFO"):
        settings = speed.resolve(compose_cfg(["trainer.accelerator=cpu"]))
    assert settings["precision"] == ("bf16-mixed" if native else "32-true")
    assert settings["cpu_native_bf16"] is native
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision ")]
    has = "has" if native else "lacks"
    assert said == [f"precision {settings['precision']} (trainer.precision=null: this CPU {has} native bfloat16)"]
    explicit = speed.resolve(compose_cfg(["trainer.accelerator=cpu", "trainer.precision=32-true"]))
    assert explicit["precision"] == "32-true"  # an explicit value is the user's, on either CPU


@pytest.mark.parametrize(
    "given,ran", [("32", "32-true"), ("bf16", "bf16-mixed"), ("64", "64-true"), ("16-mixed", "bf16-mixed")]
)
def test_precision_is_recorded_as_what_runs_and_a_cpu_switch_is_said(caplog, given, ran):
    with caplog.at_level("WARNING"):
        settings = speed.resolve(compose_cfg(["trainer.accelerator=cpu", f"trainer.precision={given}"]))
    assert settings["precision"] == ran  # Lightning's own name; on a CPU Lightning would run 16-mixed as bf16-mixed
    said = [r.getMessage() for r in caplog.records]
    switched = "trainer.precision=16-mixed ignored: float16 autocast runs on a GPU only; using bf16-mixed"
    assert said == ([switched] if given == "16-mixed" else [])


@pytest.fixture(scope="module")
def bf16_overrides(fmnist_mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16") / "data"
    return [*tiny_run_overrides(fmnist_mirror, root=root), "trainer.max_epochs=3", "seed=3"]


@pytest.mark.slow
def test_a_bf16_cpu_run_trains_records_it_and_evaluates_to_its_test_accuracy(monkeypatch, bf16_overrides, tmp_path):
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: True)
    results = run(compose_cfg(bf16_overrides, tmp_path / "run"))
    assert results["status"] == "ok" and results["precision"] == "bf16-mixed"
    assert results["speed"]["precision"] == "bf16-mixed" and results["speed"]["cpu_native_bf16"] is True
    losses = [float(r["train_loss"]) for r in _metrics(tmp_path / "run") if r["train_loss"]]
    assert losses[-1] < losses[0] < 2.5  # it trains (ln 10 = 2.30 at the start)
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={results['checkpoints']['best']}", "trainer.accelerator=cpu"]
        + ["trainer.enable_progress_bar=false", "trainer.limit_test_batches=2", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["test"] == pytest.approx(results["test"], rel=1e-6)  # bf16 again, not an fp32 re-evaluation


def test_a_resumed_bf16_run_keeps_bf16_on_a_cpu_without_it(monkeypatch, bf16_overrides, tmp_path):
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: True)
    crash = ["+callbacks.crash._target_=hooks.RaiseAt", "+callbacks.crash.epoch=1"]
    with pytest.raises(RuntimeError, match="crash at the start of epoch 1"):
        run(compose_cfg([*bf16_overrides, *crash], tmp_path / "run"))
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: False)  # continued on another machine
    with pytest.raises(ConfigError, match=r"^trainer.precision='32-true': bf16-mixed, the precision .*last.ckpt was"):
        run(compose_cfg([*bf16_overrides, "trainer.precision=32-true"], tmp_path / "run"))
    resumed = run(compose_cfg(bf16_overrides, tmp_path / "run"))
    assert resumed["status"] == "ok" and resumed["epochs"] == 3 and resumed["precision"] == "bf16-mixed"


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))
