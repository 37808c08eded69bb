"""python eval.py ckpt_path=PATH: rebuild the run from the config stored in its checkpoint and test it."""

import logging
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, TrickbenchError
from trickbench.models import build_model
from trickbench.module import TrickModule
from trickbench.results import write_json

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise ConfigError(
            "ckpt_path", str(path), "an existing .ckpt file written by train.py (checkpoints/last.ckpt or best-*.ckpt)"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    stored = checkpoint.get("hyper_parameters", {})
    if "config" not in stored:
        raise ConfigError("ckpt_path", str(path), "a checkpoint written by train.py (it stores the run's config)")
    run_cfg = OmegaConf.create(stored["config"])
    data_cfg = run_cfg.data.copy()
    for key in ("source", "root"):
        if cfg.data.get(key) is not None:
            data_cfg[key] = cfg.data[key]
    dm = instantiate(data_cfg, augment=None, seed=run_cfg.seed)
    net = build_model(run_cfg.model, run_cfg.activation, run_cfg.norm, run_cfg.init, dm.shape, dm.num_classes)
    module = TrickModule(net, stored["config"], stored["num_classes"])
    module.load_state_dict(checkpoint["state_dict"])
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    metrics = trainer.test(module, dm)[0]
    result = {
        "ckpt_path": str(path.resolve()),
        "dataset": dm.info["dataset"],
        "test": {"acc": metrics["test/acc"], "loss": metrics["test/loss"]},
    }
    write_json(Path(cfg.paths.output_dir) / "eval.json", result)
    return result


def main_task(cfg: DictConfig) -> dict:
    try:
        return evaluate(cfg)
    except TrickbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
