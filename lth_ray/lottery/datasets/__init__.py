"""Dataset readers; importing this package registers them in `DATASETS` (see lth_ray.lottery.data for the API)."""

from lth_ray.lottery.datasets import cifar, idx, image_folder, synthetic  # noqa: F401  (registers readers)
from lth_ray.lottery.datasets.base import DATASETS, SHAPES, DatasetError, DataShape, RawData, cached

__all__ = ["DATASETS", "SHAPES", "DataShape", "DatasetError", "RawData", "cached"]
