"""python eval.py ckpt_path=PATH: rebuild the run from the config stored in its checkpoint and test it."""

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trickbench.checkpoints import load_checkpoint
from trickbench.errors import ConfigError, TrickbenchError, exit_with
from trickbench.models import build_model
from trickbench.module import TrickModule, build_module
from trickbench.results import write_json

log = logging.getLogger(__name__)


def load_weights(module: TrickModule, checkpoint: dict, path: Path, key: str = "ckpt_path") -> None:
    """The checkpoint's weights into module; a checkpoint of another model is one line naming a misfit."""
    theirs, ours = checkpoint["state_dict"], module.state_dict()
    # load_state_dict's own error spans many lines: name the first misfit instead
    misfits = [f"{k} missing" for k in ours if k not in theirs]
    misfits += [f"{k} unexpected" for k in theirs if k not in ours]
    misfits += [
        f"{k} is {tuple(theirs[k].shape)}, the model needs {tuple(ours[k].shape)}"
        for k in ours
        if k in theirs and theirs[k].shape != ours[k].shape
    ]
    if misfits:
        model = checkpoint["hyper_parameters"]["config"]["model"].get("name", "?")
        raise ConfigError(
            key,
            str(path),
            f"weights that fit the model its config describes ({model}); {len(misfits)} do not, e.g. {misfits[0]}",
        )
    module.load_state_dict(theirs)


def evaluate(cfg: DictConfig) -> dict:
    path = Path(cfg.ckpt_path)
    checkpoint = load_checkpoint(path)
    stored = checkpoint["hyper_parameters"]
    run_cfg = OmegaConf.create(stored["config"])
    data_cfg = run_cfg.data.copy()
    for key in ("source", "root"):
        if cfg.data.get(key) is not None:
            data_cfg[key] = cfg.data[key]
    dm = instantiate(data_cfg, augment=None, seed=run_cfg.seed)
    net = build_model(
        run_cfg.model, run_cfg.activation, run_cfg.norm, run_cfg.init, dm.shape, dm.num_classes, load_init_from=False
    )
    module = build_module(run_cfg, net, stored["num_classes"])
    load_weights(module, checkpoint, path)
    # the precision the run was trained and tested with (its config records it), unless eval's trainer.precision says
    precision = cfg.trainer.get("precision") or run_cfg.trainer.get("precision")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], precision=precision)
    metrics = trainer.test(module, dm)[0]
    result = {
        "ckpt_path": str(path.resolve()),
        "dataset": dm.info["dataset"],
        "test": {"acc": metrics["test/acc"], "loss": metrics["test/loss"]},
    }
    out = Path(cfg.paths.output_dir) / "eval.json"
    write_json(out, result)
    log.info("test acc %.4f | results: %s", result["test"]["acc"], out)
    return result


def main_task(cfg: DictConfig) -> dict:
    try:
        return evaluate(cfg)
    except TrickbenchError as e:
        exit_with(e)
