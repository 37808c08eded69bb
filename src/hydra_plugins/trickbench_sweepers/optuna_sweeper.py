"""hydra/sweeper=optuna: an Optuna study over Hydra overrides, resumable and failure-tolerant
(the hparams_search presets use it; trickbench.search holds the parts that do not need Hydra's runtime).

Our own sweeper over Optuna's current ask/tell API rather than hydra-optuna-sweeper 1.2 (Hydra's): that one pins
Optuna 2.x, whose sqlite storage fails under SQLAlchemy 2 (which pip installs beside it); a trial that returns
no number stops its whole search; and rerunning it on its storage asks n_trials new trials numbered from job 0,
into the folders of the finished ones.

Here every trial is a job folder <sweep>/<job>/ like any sweep's; the study lives in <sweep>/optuna.db.
- A trial's value is what the task returns (train.py: best val acc; a failed or diverged run returns 0); a job
  that raises or returns no number scores bad_score. Either way the search goes on.
- A job trains the drawn floats to 4 significant digits (trickbench.search.trained), as best.json records them.
- hydra.sweeper.n_trials counts the study's finished trials: resume=<sweep folder> (the same command) runs only
  the missing ones; a trial the interrupted search left running is rerun with the same values in its own job
  folder, continuing from its checkpoints/last.ckpt.
- <sweep>/best.json records every finished trial and the best one, after every batch."""

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, exit_with, first_line
from trickbench.sweep import search as _search

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        params: DictConfig | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: str = "maximize",
        sampler: DictConfig | None = None,
        storage: str | None = None,
        study_name: str = "trickbench",
        bad_score: float = 0.0,
        enqueue: Any = None,
    ) -> None:
        self.params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params or {}
        self.n_trials, self.n_jobs, self.direction = int(n_trials), max(int(n_jobs), 1), direction
        self.sampler_cfg, self.storage, self.study_name = sampler, storage, study_name
        self.bad_score = float(bad_score)
        self.enqueue = OmegaConf.to_container(enqueue, resolve=True) if OmegaConf.is_config(enqueue) else enqueue
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> dict:
        try:
            space, fixed = _search.split_space(self.params, arguments)
            if not space:
                raise ConfigError("hydra.sweeper.params", dict(self.params), "at least one range to search")
        except ConfigError as e:
            exit_with(e)
        self.validate_batch_is_legal([fixed + _search.probe(space)])  # a misspelled key: Hydra's error, no trial
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            study = self._open_study(sweep_dir, space, fixed)
        except ConfigError as e:
            exit_with(e)
        from optuna.trial import TrialState

        # trials an interrupted search left running: rerun with the same values, each in its own job folder
        rerun: list[tuple[int, dict]] = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            rerun.append((t.user_attrs["job"], t.params))
            study.enqueue_trial(t.params)
            log.info("trial %d (job %d) was interrupted: rerun in its folder", t.number, t.user_attrs["job"])
        jobs = [t.user_attrs.get("job", -1) for t in study.get_trials(deepcopy=False)]
        next_job = max(jobs, default=-1) + 1

        while (left := self.n_trials - _n_complete(study)) > 0:
            batch = []
            for _ in range(min(self.n_jobs, left)):
                trial = study.ask(space)
                job = next((j for j, p in rerun if p == trial.params), None)
                if job is None:
                    job, next_job = next_job, next_job + 1
                else:
                    rerun = [(j, p) for j, p in rerun if j != job]
                trial.set_user_attr("job", job)
                batch.append((job, trial))
            batch.sort(key=lambda b: b[0])
            for run in _consecutive(batch):  # a launch numbers its jobs from its first: one per run of numbers
                overrides = [fixed + [_search.override(k, v) for k, v in sorted(t.params.items())] for _, t in run]
                returns = self.launcher.launch(overrides, initial_job_idx=run[0][0])
                for (job, trial), ret in zip(run, returns, strict=True):
                    self._tell(study, trial, job, ret, sweep_dir)
            _write_best(study, sweep_dir, fixed)

        best = _search.best_record(study, fixed)
        _write_best(study, sweep_dir, fixed)
        if best["best"]:
            b = best["best"]
            log.info("best: trial %d (job %d) val acc %.4f: %s", b["trial"], b["job"], b["value"], b["overrides"])
        else:
            log.warning("no trial finished ok; %s lists them", sweep_dir / _search.BEST_FILE)
        return best

    def _open_study(self, sweep_dir: Path, space: dict, fixed: list[str]):
        import optuna
        from hydra.utils import instantiate

        from trickbench.sweep.context import what_it_trains

        storage = self.storage or f"sqlite:///{(sweep_dir / _search.STORAGE_FILE).resolve()}"
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, direction=self.direction, load_if_exists=True
        )
        record = {"space": _search.space_record(space), "fixed": what_it_trains(fixed)}
        if not study.trials and "search" not in study.user_attrs:
            study.set_user_attr("search", record)
            for params in self.enqueue or []:
                study.enqueue_trial({k: v for k, v in dict(params).items() if k in space})
        elif study.user_attrs.get("search") != record:
            before = study.user_attrs.get("search") or {}
            raise ConfigError(
                "resume",
                str(sweep_dir),
                f"the same search command; the study there searched {sorted(before.get('space', {}))} "
                f"with {before.get('fixed')}",
            )
        if self.sampler_cfg is not None:  # a resumed search draws new values, not those its first run drew
            cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
            if cfg.get("seed") is not None:
                cfg["seed"] = int(cfg["seed"]) + len(study.trials)
            study.sampler = instantiate(cfg)
        log.info(
            "study %s in %s: %d finished trials of %d", study.study_name, storage, _n_complete(study), self.n_trials
        )
        return study

    def _tell(self, study, trial, job: int, ret, sweep_dir: Path) -> None:
        """The job's return is the trial's value; a job that failed, diverged or returned no number scores
        bad_score, and its status and error (from its results.json) go with the trial."""
        folder = Path(str(OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir") or sweep_dir / str(job)))
        results = _read_json(folder / "results.json")
        status, error, value = results.get("status"), results.get("error"), None
        if ret.status == JobStatus.COMPLETED:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                error = error or f"the task returned {ret.return_value!r}, not a number"
        else:
            status, error = status or "failed", error or first_line(ret._return_value)
        if value is None or not math.isfinite(value):
            status, value = (status if status not in (None, "ok") else "failed"), self.bad_score
        if status not in (None, "ok"):
            value = self.bad_score
            log.warning("trial %d (job %d) %s, scored %s: %s", trial.number, job, status, value, error)
        trial.set_user_attr("status", status or "ok")
        trial.set_user_attr("error", error)
        trial.set_user_attr("folder", str(folder))
        study.tell(trial, value)


def _consecutive(batch: list) -> list[list]:
    runs: list[list] = []
    for item in batch:
        if runs and item[0] == runs[-1][-1][0] + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _n_complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_best(study, sweep_dir: Path, fixed: list[str]) -> None:
    from trickbench.results import write_json

    write_json(sweep_dir / _search.BEST_FILE, _search.best_record(study, fixed))
