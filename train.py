"""Train one configuration: python train.py [group=option ...] [key=value ...]  (--help lists them)."""

import hydra
from omegaconf import DictConfig

import trickbench  # noqa: F401  registers the resolvers conf/ uses


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from trickbench.train import main_task  # imported here: a config error is reported without loading torch

    main_task(cfg)


if __name__ == "__main__":
    main()
