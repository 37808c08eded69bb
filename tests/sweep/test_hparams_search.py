"""hparams_search=coarse|fine: an Optuna search through the CLI records its best trial, scores a diverged trial as bad
and goes on, resumes an interrupted study in its own folder; the fine preset's ranges come from the coarse best."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, compose_cfg, tiny_run_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trickbench.errors import ConfigError
from trickbench.results import write_json
from trickbench.sweep import search


def _search(tmp: Path, source: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path | None]:
    logs = tmp / "logs"
    cmd = [sys.executable, "train.py", "-m", "hparams_search=coarse", *tiny_run_overrides(source, root=tmp / "data")]
    cmd += [f"paths.log_dir={logs}", "hydra.sweeper.n_trials=3", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    folders = sorted((logs / "train" / "multiruns").glob("*"))
    return proc, (folders[-1] if folders else None)


def _results(folder: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in folder.glob("[0-9]*/results.json")}


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="trickbench", storage=f"sqlite:///{folder / search.STORAGE_FILE}")


@pytest.fixture(scope="module")
def coarse(tmp_path_factory, fmnist_mirror):
    tmp = tmp_path_factory.mktemp("coarse")
    # the first trial diverges (SGD at lr 1e12): it scores 0 and the search goes on
    args = ("optimizer=sgd", "hydra.sweeper.enqueue=[{optimizer.lr:1e12}]")
    proc, folder = _search(tmp, fmnist_mirror, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, folder, args


@pytest.mark.slow
def test_three_trial_search_records_its_best_trial_and_scores_a_diverged_one_as_bad(coarse):
    _, folder, _ = coarse
    results = _results(folder)
    assert sorted(results) == [0, 1, 2]
    assert results[0]["status"] == "diverged" and all(results[j]["status"] == "ok" for j in (1, 2))
    best = json.loads((folder / search.BEST_FILE).read_text())
    trials = {t["job"]: t for t in best["trials"]}
    assert best["n_trials"] == 3 and best["n_ok"] == 2 and sorted(trials) == [0, 1, 2]
    assert trials[0]["value"] == search.BAD_SCORE and trials[0]["status"] == "diverged"
    for job in (1, 2):  # the value each trial told Optuna is its run's best val acc
        assert trials[job]["value"] == pytest.approx(results[job]["val"]["acc_best"], abs=1e-12)
    b = best["best"]
    assert b["value"] == max(results[j]["val"]["acc_best"] for j in (1, 2)) and b["folder"] == str(
        folder / str(b["job"])
    )
    assert set(b["overrides"]) <= set(results[b["job"]]["overrides"])  # the values the best job trained
    assert set(b["params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout"}
    study = _study(folder)
    assert len(study.trials) == 3 and study.best_trial.number == b["trial"]
    with open(folder / "report.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3  # one row per trial
    assert f"best by val.acc_best: trial {b['trial']} (job {b['job']})" in (folder / "report.md").read_text()


class FakeLauncher:
    """Stands in for Hydra's launcher: writes each job's results.json and returns its val acc, without training.
    fail: jobs whose task raised; interrupt: the job during which the search is killed."""

    def __init__(self, sweep_dir: Path, fail=(), interrupt=None):
        self.sweep_dir, self.fail, self.interrupt, self.launched = sweep_dir, set(fail), interrupt, []

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for job, overrides in enumerate(job_overrides, start=initial_job_idx):
            if job == self.interrupt:
                raise KeyboardInterrupt  # the search is killed while this job runs
            self.launched.append((job, list(overrides)))
            folder = self.sweep_dir / str(job)
            acc = float(next(o for o in overrides if o.startswith("model.dropout=")).split("=")[1])
            status = "failed" if job in self.fail else "ok"
            results = {"status": status, "error": "boom" if job in self.fail else None, "val": {"acc_best": acc}}
            write_json(folder / "results.json", {**results, "overrides": list(overrides)})
            ret = JobReturn(overrides=list(overrides), hydra_cfg=OmegaConf.create({"hydra": {"runtime": {}}}))
            ret.hydra_cfg.hydra.runtime.output_dir = str(folder)
            ret.status = JobStatus.FAILED if job in self.fail else JobStatus.COMPLETED
            ret.return_value = RuntimeError("boom") if job in self.fail else acc
            returns.append(ret)
        return returns


def _run_sweeper(sweep_dir: Path, n_trials: int, *args: str, **launcher) -> FakeLauncher:
    """The search `train.py -m hparams_search=coarse resume=<sweep_dir> [args]` runs, with a fake launcher."""
    command = ["hparams_search=coarse", f"resume={sweep_dir}", *args]  # resume=: the sweep folder is sweep_dir
    cfg = _hydra_cfg([*command, f"hydra.sweeper.n_trials={n_trials}"])
    assert cfg.hydra.sweep.dir == str(sweep_dir)
    sweeper = instantiate(cfg.hydra.sweeper)
    sweeper.config, sweeper.launcher = cfg, FakeLauncher(sweep_dir, **launcher)
    sweeper.validate_batch_is_legal = lambda batch: None  # composing the jobs is the CLI test's part
    try:
        sweeper.sweep(command)
    except KeyboardInterrupt:
        pass
    return sweeper.launcher


def test_a_killed_search_resumes_its_running_trial_in_its_folder_and_keeps_the_count(tmp_path, capsys):
    # killed during job 2; job 1's task raised (it scores bad_score, the search went on)
    first = _run_sweeper(tmp_path, 3, fail=[1], interrupt=2)
    assert [j for j, _ in first.launched] == [0, 1]
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert trials[1].value == search.BAD_SCORE and trials[1].user_attrs["status"] == "failed"
    assert trials[1].user_attrs["error"] == "boom"
    killed = trials[2]

    resumed = _run_sweeper(tmp_path, 3)  # the same command again
    assert [j for j, _ in resumed.launched] == [2]  # only the killed trial, in its own folder, same values
    rerun = resumed.launched[0][1]
    assert [o for o in rerun if o.split("=")[0] in killed.params] == [
        search.override(k, v) for k, v in sorted(killed.params.items())
    ]
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].params == killed.params and trials[3].user_attrs["job"] == 2

    more = _run_sweeper(tmp_path, 4)  # n_trials counts the study's finished trials
    assert [j for j, _ in more.launched] == [3]
    best = json.loads((tmp_path / search.BEST_FILE).read_text())
    assert best["n_trials"] == 4 and best["n_ok"] == 3 and best["best"]["job"] != 1
    assert best["best"]["value"] == max(t["value"] for t in best["trials"] if t["status"] == "ok")

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # another search in the same folder: refused before any trial
        _run_sweeper(tmp_path, 5, "model.dropout=0.1")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: resume='{tmp_path}': the same search command; ")
    assert len(_study(tmp_path).trials) == 5


def _hydra_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.slow
def test_fine_preset_centres_its_ranges_on_the_coarse_best_and_starts_from_it(coarse):
    _, folder, _ = coarse
    best = json.loads((folder / search.BEST_FILE).read_text())["best"]["params"]
    coarse_cfg, cfg = (
        _hydra_cfg(["hparams_search=coarse"]),
        _hydra_cfg(["hparams_search=fine", f"hparams_search.from={folder}"]),
    )
    assert cfg.trainer.max_epochs > coarse_cfg.trainer.max_epochs
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert sweeper["enqueue"] == [best]  # the coarse optimum is the fine search's first trial
    space, fixed = search.split_space(sweeper["params"], [])
    assert fixed == []
    lr, wd, dropout = space["optimizer.lr"], space["optimizer.weight_decay"], space["model.dropout"]
    assert lr.log and (lr.low, lr.high) == pytest.approx((best["optimizer.lr"] / 3, best["optimizer.lr"] * 3))
    assert wd.log and wd.low * 9 == pytest.approx(wd.high)
    assert not dropout.log and dropout.low == pytest.approx(max(best["model.dropout"] - 0.1, 0.0))


@pytest.mark.parametrize("bad", ["missing", "null", "no_best"])
def test_fine_preset_without_a_coarse_folder_is_one_line_before_any_trial(bad, tmp_path, capsys):
    if bad == "no_best":  # a search whose trials all failed
        (tmp_path / search.BEST_FILE).write_text(json.dumps({"best": None, "trials": []}))
    value = {"missing": str(tmp_path / "nope"), "null": "null", "no_best": str(tmp_path)}[bad]
    cfg = _hydra_cfg(["hparams_search=fine", f"hparams_search.from={value}"])
    with pytest.raises(SystemExit) as exit_:
        search.SearchCheck().on_multirun_start(cfg)
    assert exit_.value.code == 2
    shown = None if bad == "null" else repr(value)
    assert capsys.readouterr().err.splitlines() == [
        f"error: hparams_search.from={shown}: a sweep folder of hparams_search=coarse, holding best.json with a "
        "trial that finished ok"
    ]


def test_search_space_grammar_and_scores():
    space, fixed = search.split_space(
        {
            "optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
            "model.dropout": "interval(0.0, 0.5)",
            "seed": "choice(0,1)",
        },
        [
            "hparams_search=coarse",
            "model.dropout=0.2",
            "data.batch_size=range(32,97,32)",
            "trainer.max_epochs=int(interval(2,4))",
        ],
    )
    assert fixed == ["hparams_search=coarse", "model.dropout=0.2"]  # a plain value on the command line fixes a key
    assert set(space) == {"optimizer.lr", "seed", "data.batch_size", "trainer.max_epochs"}
    assert space["optimizer.lr"].log and (space["optimizer.lr"].low, space["optimizer.lr"].high) == (1e-4, 1e-1)
    assert space["seed"].choices == ("0", "1") and space["data.batch_size"].choices == ("32", "64", "96")
    assert isinstance(space["trainer.max_epochs"], optuna.distributions.IntDistribution)
    assert search.override("optimizer.lr", 0.000123456789) == "optimizer.lr=0.0001235"
    assert search.score({"status": "ok", "val": {"acc_best": 0.5}}) == 0.5
    assert search.score({"status": "diverged"}) == search.score(None) == search.BAD_SCORE
    with pytest.raises(ConfigError, match="low < high"):
        search.split_space({"optimizer.lr": "tag(log, interval(0, 1))"}, [])


def test_a_search_preset_without_multirun_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"hparams_search='coarse': a search, run as a sweep: python train.py -m "):
        search.check_single_run(compose_cfg(["hparams_search=coarse"]))
    search.check_single_run(compose_cfg([]))
