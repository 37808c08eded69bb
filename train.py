"""Train one configuration: python train.py [group=option ...] [key=value ...]  (--help lists them)."""

import sys

import hydra
from omegaconf import DictConfig

import trickbench  # noqa: F401  registers the resolvers conf/ uses
from trickbench.config.command_line import check_command_line, quiet_libraries


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_libraries()
    from trickbench.train import main_task  # imported here: a config error is reported without loading torch

    return main_task(cfg)  # the best val acc: what a search (hparams_search=...) optimizes


if __name__ == "__main__":
    check_command_line("train", sys.argv[1:])  # an unknown option or key: one line, before Hydra's many
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C of a sweep reaches its parent here; each job saved its progress itself
        from trickbench.sweep.folders import SweepFolderCheck

        where = SweepFolderCheck.folder
        print(
            f"stopped by Ctrl-C; rerun the same command with resume={where} to continue"
            if where
            else "stopped by Ctrl-C",
            file=sys.stderr,
        )
        sys.exit(130)
