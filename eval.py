"""Evaluate a checkpoint on the test split: python eval.py ckpt_path=PATH"""

import sys

import hydra
from omegaconf import DictConfig

import trickbench  # noqa: F401  registers the resolvers conf/ uses
from trickbench.config.command_line import check_command_line, quiet_libraries


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    from trickbench.evaluate import main_task  # imported here: a config error is reported without loading torch

    main_task(cfg)


if __name__ == "__main__":
    check_command_line("eval", sys.argv[1:])  # an unknown key: one line, before Hydra's many
    main()
