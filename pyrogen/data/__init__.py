"""Data sets for pyrogen: built-in image sets, IDX files and the user's own array files.

:func:`load_dataset` returns a :class:`Dataset` whose ``x`` is a float32 tensor of shape
``[N, D]``: in ``[0, 1]`` for the built-in image sets, as stored for the user's own files (real
values, counts, 0/1; rescaled only when ``scale`` asks, see :mod:`pyrogen.data.scaling`; whether
they suit a model is checked against its observation's support, see
:mod:`pyrogen.data.support`). Three built-in data sets are known (see :data:`DATASETS`):

* ``"digits"``: scikit-learn's 1797 8x8 hand-written digits (bundled, no download), grey
  levels 0..16 scaled to ``[0, 1]``. A fixed 20% of the images is held out as the test split.
* ``"fashion-mnist"`` and ``"mnist"``: the 28x28 IDX files, gzip-compressed or raw, found on
  disk (see :func:`find_idx_files`) or downloaded once into ``~/.cache/pyrogen/<name>``.

Any other name is treated as a path to a ``.npy``, ``.npz``, ``.csv`` or ``.pt`` file (a fixed
10% of its rows is held out as the test split).

Splits: ``"all"`` is the whole training set, ``"train"`` is ``"all"`` minus a validation subset
of ``val_fraction`` of its rows chosen by a permutation seeded with ``seed``, ``"val"`` is that
subset and ``"test"`` is the official (or fixed held-out) test set. Splits are deterministic.

Binarization: ``binarize=None`` keeps grey levels; ``"static"`` draws one Bernoulli sample per
pixel with a seed derived from ``seed`` and the split; ``"dynamic"`` keeps grey levels for the
training splits (the trainer draws fresh Bernoulli samples with :func:`binarize_dynamic` every
epoch) but returns ``"val"`` and ``"test"`` statically binarized so that evaluation numbers are
comparable between runs.
"""

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "binarize_static",
    "binarize_dynamic",
    "read_idx",
    "write_idx",
    "find_idx_files",
]

from pyrogen.data.datasets import (
    DATASETS,
    Dataset,
    binarize_dynamic,
    binarize_static,
    load_dataset,
)
from pyrogen.data.idx import read_idx, write_idx
from pyrogen.data.sources import find_idx_files
