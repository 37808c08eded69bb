"""Evaluate a checkpoint on the test split: python eval.py ckpt_path=PATH"""

import hydra
from omegaconf import DictConfig

from trickbench.evaluate import main_task


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    main_task(cfg)


if __name__ == "__main__":
    main()
