"""Defaults that scale with the run, as OmegaConf resolvers (conf/ interpolates them), so a quick look needs one
override, not three: data.val_size follows data.subset, the Bag of Tricks warmup rung fits a short run."""

from omegaconf import OmegaConf

FULL_VAL_SIZE = 5000


def val_size(subset) -> int:
    """5000 images of the official train set for validation; with data.subset=N, a tenth of N (at least 1, at most
    5000): the subset is split into train and val."""
    return FULL_VAL_SIZE if subset is None else min(FULL_VAL_SIZE, max(1, int(subset) // 10))


def warmup_epochs(wanted, max_epochs) -> int:
    """`wanted` epochs of warmup, fewer in a run too short for them: the warmup ends before the last epoch (none in
    a one-epoch run)."""
    return max(0, min(int(wanted), int(max_epochs) - 1))


for _name, _fn in (("trickbench.val_size", val_size), ("trickbench.warmup_epochs", warmup_epochs)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
