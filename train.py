"""Train one configuration: python train.py [group=option ...] [key=value ...]  (--help lists them)."""

import hydra
from omegaconf import DictConfig

from trickbench.train import main_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    main_task(cfg)


if __name__ == "__main__":
    main()
