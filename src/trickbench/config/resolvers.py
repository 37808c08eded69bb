"""Every OmegaConf resolver conf/ interpolates, registered once when trickbench is imported. Defaults that scale
with the run, so a quick look needs one override, not three (data.val_size follows data.subset, the Bag of Tricks
warmup rung fits a short run); where a run or sweep writes (conf/hydra/default.yaml); the hparams_search ranges
(sweep/search.py). Importable without torch."""

import os
import time

from omegaconf import OmegaConf

from trickbench.sweep.context import is_rank_zero
from trickbench.sweep.folders import new_folder
from trickbench.sweep.search import around, best_params

FULL_VAL_SIZE = 5000


def val_size(subset) -> int:
    """5000 images of the official train set for validation; with data.subset=N, a tenth of N (at least 1, at most
    5000): the subset is split into train and val."""
    return FULL_VAL_SIZE if subset is None else min(FULL_VAL_SIZE, max(1, int(subset) // 10))


def warmup_epochs(wanted, max_epochs) -> int:
    """`wanted` epochs of warmup, fewer in a run too short for them: the warmup ends before the last epoch (none in
    a one-epoch run)."""
    return max(0, min(int(wanted), int(max_epochs) - 1))


def sweep_values(*lists_then_not_run) -> str:
    """A results preset's configurations, each listed once (`key=value` or a bare value), as one sweep's values in
    their order, less those the preset's results.not_run leaves out at this scale (the last argument, or null)."""
    *lists, not_run = lists_then_not_run
    values = [str(item).split("=", 1)[-1] for items in lists for item in items]
    return ",".join(v for i, v in enumerate(values) if v not in values[:i] and v not in (not_run or ()))


def _hydra_subdir(resume) -> str:
    """A resumed run keeps the .hydra/ record of the command that started it; its own goes beside."""
    return ".hydra" if resume in (None, "") else f".hydra/resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def _rank_zero_file(path: str) -> str:
    """Hydra's job log: DDP's other ranks log to the console only (each would write a <job>_ddp_process_N.log)."""
    return path if is_rank_zero() else os.devnull


RESOLVERS = {
    "trickbench.val_size": val_size,
    "trickbench.warmup_epochs": warmup_epochs,
    "trickbench.sweep_values": sweep_values,  # conf/experiment/results/: the configurations, named once
    # conf/hydra/default.yaml: .hydra/ of a resumed run, the job log of DDP's ranks
    "trickbench.hydra_subdir": _hydra_subdir,
    "trickbench.rank_zero_file": _rank_zero_file,
    "trickbench.best_params": best_params,  # conf/hparams_search/fine.yaml
    "trickbench.around": around,
}
# run.dir / sweep.dir: cached (like Hydra's now), so one start makes one folder
CACHED = {"trickbench.new_folder": new_folder}
for _name, _fn in (RESOLVERS | CACHED).items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn, use_cache=_name in CACHED)
