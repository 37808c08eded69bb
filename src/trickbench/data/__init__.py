from trickbench.data.augment import NORMALIZE_MODES, BatchTransform
from trickbench.data.datamodule import ImageDataModule
from trickbench.data.registry import DATASETS

__all__ = ["BatchTransform", "NORMALIZE_MODES", "DATASETS", "ImageDataModule"]
