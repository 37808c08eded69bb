"""SweepReportCallback: the Hydra callback (conf/hydra/default.yaml) that writes the report after every -m sweep
and exits non-zero naming the jobs that failed."""

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.report.write import DEFAULT_TARGET_ACC, failures, write_report
from trickbench.rules import Rule, number, optional, text

RULES = [
    Rule("report.target_acc", optional(number(0, 1, open_low=True)), "null or an accuracy in (0, 1]"),
    Rule(
        "report.baseline", optional(text), "null (the first configuration) or one, as the report names it: trick=none"
    ),
]

# the package's name, not this module's: the sweep's log lines name the logger, as before report/ was split
log = logging.getLogger(__package__)


class SweepReportCallback(Callback):
    """Hydra callback: after a sweep, write the report, then exit non-zero naming the jobs that failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))  # resolved once: the folder the jobs write into

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = getattr(self, "sweep_dir", None) or Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        settings = OmegaConf.select(config, "report", default=None) or {}
        found = write_report([sweep_dir], settings.get("target_acc", DEFAULT_TARGET_ACC), settings.get("baseline"))
        log.info("sweep report: %s", found["report"])
        bad = failures(found)
        # a search (hparams_search=...) scores a failed or diverged trial as bad and goes on: it fails only when
        # no trial finished ok
        search = OmegaConf.select(config, "hydra.sweeper.bad_score") is not None
        if bad and search and any(j.ok for j in found["jobs"]):
            log.warning("%d of %d trials did not finish ok (scored bad_score):", len(bad), len(found["jobs"]))
            for line in bad:
                log.warning("  %s", line)
        elif bad:
            print(
                f"error: {len(bad)} of {len(found['jobs']) + len(found['missing'])} jobs failed (report: "
                f"{found['report']}):",
                file=sys.stderr,
            )
            for line in bad:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)
