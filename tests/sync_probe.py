"""Finds host syncs on the CPU: every call that would make the host wait for a GPU (.item(), bool()/float()/int()
of a tensor, .tolist(), .cpu(), .numpy(), nonzero, boolean-mask indexing), attributed to the training batch
during which it happened. On a CPU nothing waits, but the same code on a GPU would stall its queue there."""

import sys

import lightning as L
import torch
from torch.overrides import TorchFunctionMode

# reads of a value, and ops whose output size depends on the data (the host must learn it before allocating)
SYNCING = {"item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy", "nonzero", "argwhere", "masked_select"}
SYNCING |= {"unique", "_unique", "_unique2", "unique_consecutive", "bincount", "repeat_interleave"}
# callers whose tensors are host tensors on every device: torch.optim keeps its step counters on the CPU (unless
# capturable or fused), so reading them never waits for a GPU
HOST_SIDE = ("/torch/optim/",)


def _from_host_side_code() -> bool:
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        if any(part in frame.f_code.co_filename for part in HOST_SIDE):
            return True
        frame = frame.f_back
    return False


def _host_to_device(func, args, kwargs) -> bool:
    """torch.tensor/as_tensor of Python data onto a device: a blocking copy from pageable host memory on a GPU."""
    if getattr(func, "__name__", "") not in ("tensor", "as_tensor") or (kwargs or {}).get("device") is None:
        return False
    return not (args and isinstance(args[0], torch.Tensor))


def _mask_index(func, args) -> bool:
    if getattr(func, "__name__", "") not in ("__getitem__", "__setitem__"):
        return False
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class SyncProbe(TorchFunctionMode, L.Callback):
    """A callback (+callbacks.probe._target_=sync_probe.SyncProbe) that watches torch calls from fit start to fit
    end. `calls` maps the global step at the start of a training batch to the syncing calls made from then until
    the next batch starts (the next batch's transfer included), or until validation or the epoch's end.
    The last one made is SyncProbe.last."""

    last: "SyncProbe | None" = None

    def __init__(self):
        TorchFunctionMode.__init__(self)
        self.calls: dict[int, list[str]] = {}
        self.step: int | None = None
        SyncProbe.last = self

    def setup(self, trainer, pl_module, stage):
        # first among the callbacks, so a batch's calls are not counted as the previous one's (+callbacks.probe puts
        # it last; moved while Lightning iterates the list, which is safe from the last place)
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)

    def on_fit_start(self, trainer, pl_module):
        self.__enter__()

    def on_fit_end(self, trainer, pl_module):
        self.step = None
        self.__exit__(None, None, None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        syncing = name in SYNCING or _mask_index(func, args) or _host_to_device(func, args, kwargs)
        if self.step is not None and syncing and not _from_host_side_code():
            self.calls.setdefault(self.step, []).append(name)
        return func(*args, **(kwargs or {}))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step

    def on_validation_start(self, trainer, pl_module):
        self.step = None

    def on_train_epoch_end(self, trainer, pl_module):
        self.step = None
