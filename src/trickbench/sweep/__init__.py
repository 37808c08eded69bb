"""Sweeps: where a job runs, resolved once (context.py), where its processes may start (placement.py), and the
hyper-parameter search (search.py; its Hydra sweeper is src/hydra_plugins/trickbench_sweepers/). No torch here."""

from trickbench.sweep.context import JobContext, is_multirun, is_rank_zero, resolve

__all__ = ["JobContext", "is_multirun", "is_rank_zero", "resolve"]
