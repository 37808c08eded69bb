"""Sweeps: where a job runs, resolved once (context.py), the launchers' table and where a job's processes may start
(placement.py), and the hyper-parameter search (search.py; its Hydra sweeper is src/hydra_plugins/
trickbench_sweepers/). No torch here."""

from trickbench.sweep.context import JobContext, Launch, is_multirun, is_rank_zero, launch, resolve

__all__ = ["JobContext", "Launch", "is_multirun", "is_rank_zero", "launch", "resolve"]
