"""Ingestion: from a user's data to a fingerprinted, split, preprocessed version.

* :func:`load_dataset` reads a built-in dataset, a CSV/Parquet file or a folder
  of them -- with a seeded split, or the user's own validation/test files or
  split column -- and returns a :class:`Dataset`.
* :meth:`Dataset.save` stores a version once (arrays as ``.npy`` so workers can
  memory-map them, metadata as JSON); :func:`open_dataset` loads it back by path.
"""

from .dataset import (Dataset, DataConfig, load_dataset, load_from_config, open_dataset, read_table,
                      too_little_data)
from .sources import BUILTIN_DATASETS, OPTIONAL_DATASETS

__all__ = [
    "BUILTIN_DATASETS",
    "OPTIONAL_DATASETS",
    "DataConfig",
    "Dataset",
    "load_dataset",
    "load_from_config",
    "open_dataset",
    "read_table",
    "too_little_data",
]
