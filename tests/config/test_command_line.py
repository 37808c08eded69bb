"""What a user reads: a mistyped option or key is one line naming what exists (before Hydra or torch start), a run's
console says each line once without the libraries' noise, its model summary has shapes and FLOPs per block, and
TensorBoard gets the training loss of every logging interval."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose_cfg, tiny_run_overrides
from omegaconf import OmegaConf

from trickbench.config.command_line import command_line_error
from trickbench.errors import ConfigError, TrickbenchError
from trickbench.loggers import read_metrics_csv

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
LOG_PREFIX = re.compile(r"^\[[^\]]+\]\[[^\]]+\]\[[A-Z]+\] - ")


def error_of(*overrides: str, config: str = "train", multirun: bool = False) -> str:
    with pytest.raises(TrickbenchError) as err:
        command_line_error(config, list(overrides), multirun=multirun)
    return str(err.value)


# ---- one-line errors, in-process ---------------------------------------------------------------------------------
def test_unknown_option_names_the_closest_and_every_option():
    assert error_of("model=vgg17") == (
        f"model='vgg17': no such option; did you mean vgg16? model has: {', '.join(MODELS)}"
    )
    # an option of a sub-folder is an option too, and a sweep's later values are checked before any job starts
    assert error_of("experiment=ablation/norm").startswith("experiment='ablation/norm': no such option; did you mean")
    assert "ablation/norms" in error_of("experiment=ablation/norm") and "speedrun/cifar10" in error_of("experiment=x")
    assert error_of("model=cnn,vgg17", multirun=True).startswith("model='vgg17': no such option")
    assert error_of("trick=[batchnorm,he_innit]").startswith("trick='he_innit': no such option; did you mean he_init?")
    launchers = error_of("hydra/launcher=slurmm").split("has: ")[1].split(", ")
    assert {"basic", "joblib", "submitit_local", "gpus", "slurm"} <= set(launchers)


def test_misspelled_key_names_the_closest_and_the_nodes_keys():
    keys = [k for k in compose_cfg([]).optimizer if not k.startswith("_")]
    assert error_of("optimizer.lrr=0.1") == (
        f"optimizer.lrr=0.1: no such key; did you mean optimizer.lr? optimizer has: {', '.join(keys)}"
    )
    top = error_of("modell=cnn")  # the top level: groups and keys
    assert top.startswith("modell='cnn': no such key; did you mean model?") and "trainer" in top and "seed" in top
    assert error_of("optimizr.lr=0.1").startswith("optimizr.lr=0.1: no such key; did you mean optimizer?")
    assert error_of("ckpt_pth=a.ckpt", config="eval").startswith(
        "ckpt_pth='a.ckpt': no such key; did you mean ckpt_path?"
    )
    # a key of the launcher the command chose: that launcher's keys
    assert "n_jobs" in error_of("hydra/launcher=joblib", "hydra.launcher.njobs=2", "seed=0,1", multirun=True)


def test_what_composes_passes_and_other_mistakes_are_one_line(tmp_path):
    command_line_error("train", ["model=vgg16", "trick=[batchnorm,he_init]", "optimizer.lr=0.1"])
    command_line_error(
        "train", ["trick=none,batchnorm", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], True
    )
    command_line_error("train", ["experiment=ablation/norms", "seed=0,1,2"], multirun=True)
    assert error_of("seed=0,1") == "seed='0,1': several values sweep only with -m (a list: key=[a,b])"
    assert "\n" not in error_of("a=b=c") and "\n" not in error_of("+seed=1")
    with pytest.raises(ConfigError, match=r"^resume='.*nope': a run folder holding checkpoints/last.ckpt"):
        command_line_error("train", [f"resume={tmp_path / 'nope'}"])


def test_what_hydra_cannot_read_names_the_override_and_how_to_quote_it():
    assert error_of("data.source=/tmp/a,b") == (
        "data.source=/tmp/a,b: a comma separates the values of a sweep, which runs only with -m; one value with a "
        "comma is quoted for Hydra, and the whole for the shell: \"data.source='/tmp/a,b'\""
    )
    command_line_error("train", ["data.source='/tmp/a,b'"])  # the quoted form composes
    command_line_error("train", ["data.source=/tmp/a b", "data.source='/tmp/données'"])
    accented = error_of("data.source=/tmp/données")
    assert accented.startswith("data.source=/tmp/données: Hydra cannot read this value (token recognition error")
    assert accented.endswith("quoted for Hydra, and the whole for the shell: \"data.source='/tmp/données'\"")
    unclosed = error_of("optimizer.lr=[1,")
    assert unclosed.startswith("optimizer.lr=[1,: Hydra cannot read this value (") and "optimizer.lr=[a,b]" in unclosed
    assert error_of("data.source=/tmp/it's,x").endswith(""" 'data.source='"'"'/tmp/it\\'"'"'s,x'"'"''""")
    assert "\n" not in unclosed + accented


def test_a_mandatory_value_not_given_is_named_with_what_to_write():
    assert error_of(config="eval") == (
        "ckpt_path=???: a value is required; write python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt"
    )


@pytest.mark.slow
def test_eval_without_a_checkpoint_and_a_keyword_adam_lacks_are_one_line(fmnist_mirror, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), f"hydra.run.dir={tmp_path / 'run'}"]
    commands = {"eval.py": [], "train.py": [*run, "optimizer=adam", "+optimizer.momentum=0.9"]}
    for script, args in commands.items():
        proc = subprocess.run(
            [sys.executable, str(ROOT / script), *args], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: optimizer.momentum=0.9: optimizer=adam takes lr, betas, eps")
    assert not (tmp_path / "data").exists()  # refused before any data was read


# ---- the real command line: one process per command, started together ---------------------------------------------
@pytest.fixture(scope="module")
def console(fmnist_mirror, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("console")
    run = [o for o in tiny_run_overrides(fmnist_mirror, root=tmp / "data") if not o.startswith("trainer.limit_train")]
    run += ["data.batch_size=8", "trainer.limit_train_batches=12", "trainer.log_every_n_steps=3"]  # 4 intervals of 3
    commands = {
        "run": [*run, f"hydra.run.dir={tmp / 'run'}"],
        "option": ["model=vgg17"],
        "key": ["optimizer.lrr=0.1"],
        "resume": [f"resume={tmp / 'no' / 'such' / 'run'}"],
        # refused by the config checks, once Hydra has made the run's folder (results.json: failed)
        "unread": ["+foo=1", f"hydra.run.dir={tmp / 'unread'}"],
        "trick": ["scheduler=step", "trick=cosine", f"hydra.run.dir={tmp / 'trick'}"],
        "sweep": ["experiment=ablation/norms", f"hydra.run.dir={tmp / 'sweep'}"],
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    done = {}
    for name, p in started.items():
        out, err = p.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return {"tmp": tmp, **done}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["option", "key", "resume"])
def test_cli_mistakes_are_one_line_and_start_nothing(console, name):
    proc = console[name]
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not (console["tmp"] / "logs").exists() and not (console["tmp"] / "no").exists()  # Hydra never started


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,line",
    [
        ("unread", "error: foo=1: an unknown key: nothing reads it; the config has activation, augment,"),
        ("trick", "error: scheduler='step': trick=cosine sets only scheduler; Hydra runs the command line's, so the"),
        ("sweep", "error: norm='none,batch,layer,group,instance': experiment=ablation/norms sweeps norm: run it with"),
    ],
)
def test_cli_settings_that_would_change_nothing_are_one_line(console, name, line):
    proc = console[name]
    assert proc.returncode == 2 and proc.stderr.startswith(line), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert json.loads((console["tmp"] / name / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_run_console_says_each_line_once_without_noise(console):
    proc = console["run"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    for noise in ("Tip:", "srun", "deprecated", "FutureWarning", "DeprecationWarning", "Traceback"):
        assert noise not in text, noise
    assert not [line for line in text.splitlines() if line.startswith("INFO: ")]  # Lightning's own handler
    messages = [LOG_PREFIX.sub("", line) for line in text.splitlines() if LOG_PREFIX.match(line)]
    assert len(messages) > 5 and len(messages) == len(set(messages)), messages
    assert "Seed set to 0" in messages and any(m.startswith("test acc ") for m in messages)
    # the summary (in train.log too): a row per block, with its output shape and FLOPs for one 28x28 image
    assert re.search(r"\| Name +\| Type +\| Params +\| Mode +\| FLOPs +\| In sizes +\| Out sizes", text), text
    assert re.search(
        r"net\.features\.0 +\| Stage +\| 40 +\| train +\| [\d.]+ K +\| \[1, 1, 28, 28\] +\| \[1, 4, 14, 14\]", text
    )
    assert re.search(r"^[1-9][\d.]* [KMG]? *Total Flops$", text, re.MULTILINE), text
    assert "Out sizes" in (console["tmp"] / "run" / "train.log").read_text()


@pytest.mark.slow
def test_training_loss_of_every_logging_interval_reaches_tensorboard(console):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = console["tmp"] / "run"
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    steps = events.Scalars("train/loss_step")
    assert [s.step for s in steps] == [2, 5, 8, 11]  # after batches 3, 6, 9, 12 (log_every_n_steps=3)
    values = [s.value for s in steps]
    assert len(set(values)) == 4
    # each is the mean of its interval's 3 step losses: together, the mean of the epoch's 12 equal batches
    epoch = read_metrics_csv(run_dir / "metrics.csv")[0]
    assert sum(values) / 4 == pytest.approx(epoch["train_loss"], rel=1e-5)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg.trainer.log_every_n_steps == 3 and "train/loss_step" not in Path(run_dir / "metrics.csv").read_text()
