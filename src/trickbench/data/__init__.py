from trickbench.data.augment import BatchTransform, NORMALIZE_MODES
from trickbench.data.datamodule import DATASETS, ImageDataModule

__all__ = ["BatchTransform", "NORMALIZE_MODES", "DATASETS", "ImageDataModule"]
