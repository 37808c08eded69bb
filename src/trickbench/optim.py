"""conf/optimizer and conf/scheduler: torch.optim classes by _target_, and the Lightning scheduler dict."""

from hydra.utils import instantiate


def build_optimizer(params, cfg):
    return instantiate(cfg)(params)


def build_scheduler(optimizer, cfg, total_steps: int, max_epochs: int) -> dict | None:
    """{"scheduler", "interval"} for Lightning, or None for a constant lr. A null T_max means the whole
    run: total optimizer steps for interval=step, epochs for interval=epoch."""
    if cfg.get("lr_scheduler") is None:
        return None
    extra = {}
    if "T_max" in cfg.lr_scheduler and cfg.lr_scheduler.T_max is None:
        extra["T_max"] = total_steps if cfg.interval == "step" else max_epochs
    return {"scheduler": instantiate(cfg.lr_scheduler)(optimizer, **extra), "interval": cfg.interval}
