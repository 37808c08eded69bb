from trickbench.data.augment import NORMALIZE_MODES, BatchTransform
from trickbench.data.datamodule import DATASETS, ImageDataModule

__all__ = ["BatchTransform", "NORMALIZE_MODES", "DATASETS", "ImageDataModule"]
