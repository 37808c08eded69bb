"""Batches as index slices of uint8 tensors that live on one device: on the accelerator (data.on_device), no
DataLoader, no worker, no pinned copy and no per-step host-to-device transfer. Lightning accepts any iterable
with a length as a loader; its loop, checkpoints and resume stay as they are."""

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


def mixed_seed(*parts: int) -> int:
    """One well-mixed seed from several integers (nearby inputs give unrelated streams)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def seed_step(seed: int, device: torch.device) -> None:
    """Seeds the generators a training step draws from: the host's (kornia's colour jitter, mixup's weight) and the
    batch's device's (batch ops, dropout). torch.manual_seed seeds every backend torch knows, ~0.2 ms a step."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # uint8 N,C,H,W
    y: torch.Tensor  # int64 N

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


class EpochOrder:
    """A fresh permutation per epoch from (seed, epoch) alone, drawn on the data's device: a resumed run replays
    it (a generator's state would have to be checkpointed). Under DDP each rank takes its own disjoint, equal
    share, so every sample is seen at most once per epoch across ranks. Lightning calls set_epoch at every
    epoch start (it looks for loader.sampler.set_epoch)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size, self.epoch = n, seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def indices(self, device: torch.device) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(mixed_seed(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g, device=device)
        return perm[self.rank * len(self) : (self.rank + 1) * len(self)]


class TensorLoader:
    """uint8 images and int64 labels, one batch per index slice. order=None: in order (val/test), slices are
    views and cost nothing; an EpochOrder: that epoch's permutation, gathered on the tensors' device.
    Resumable mid-epoch: Lightning saves state_dict() (the epoch and the batches served in it) in checkpoints and
    hands it back to load_state_dict() when it resumes in the middle of an epoch; the next pass then starts at the
    batch after the last one served, so the resumed epoch sees the batches it would have seen."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, order: EpochOrder | None = None):
        self.x, self.y, self.batch_size, self.sampler = x, y, batch_size, order
        self.batch_sampler = None  # Lightning inspects loader.sampler and loader.batch_sampler like a DataLoader's
        self.served = 0  # batches of the current pass handed out so far
        self._resume_at: dict | None = None

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.y)
        return -(-n // self.batch_size)

    def _epoch(self) -> int:
        return self.sampler.epoch if self.sampler is not None else 0

    def state_dict(self) -> dict:
        return {"epoch": self._epoch(), "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = dict(state)

    def __iter__(self):
        # a generator: this runs at the first batch, after Lightning's set_epoch for the epoch being resumed
        resume, self._resume_at = self._resume_at, None
        skip = resume["batches"] if resume and resume["epoch"] == self._epoch() else 0
        idx = None if self.sampler is None else self.sampler.indices(self.x.device)
        n = len(self.y) if idx is None else len(idx)
        self.served = skip
        for start in range(skip * self.batch_size, n, self.batch_size):
            self.served += 1
            if idx is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                i = idx[start : start + self.batch_size]
                yield self.x[i], self.y[i]


def resident_device(on_device, target: torch.device, nbytes: int) -> torch.device:
    """Where the uint8 splits live for a run on `target`. true: there; false: host memory (Lightning then copies
    each batch); auto: there when they take under half of its free memory, else host memory."""
    if on_device is False or target.type == "cpu":
        return torch.device("cpu")
    if on_device == "auto" and target.type == "cuda" and nbytes >= torch.cuda.mem_get_info(target)[0] / 2:
        log.warning("data.on_device=auto: %.1f GB of images would not fit; kept in host memory", nbytes / 1e9)
        return torch.device("cpu")
    return target
