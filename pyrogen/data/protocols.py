"""The data of a published protocol (benchmarks/protocols/*.toml): the reference code's split and
its one static binarization, so that a run trained under the protocol is evaluated on exactly the
images the published numbers were measured on.

The split is by position in the training file (the first ``train_images`` for training, the next
``val_images`` for validation), with no shuffling; the validation and then the test images are
binarized once with ``torch.bernoulli`` from one generator seeded with ``static_seed``. Training
images stay grey levels (binarized afresh for every minibatch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pyrogen.errors import ConfigError

__all__ = ["protocol_splits"]


def protocol_splits(settings: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{"train": grey levels, "val": binary, "test": binary}`` as float32 [N, 784] tensors.

    Arguments:
        settings: a protocol's settings: ``data`` (an IDX data set name such as
            ``fashion-mnist``), ``train_images``, ``val_images``, ``static_seed``.
    """
    from pyrogen.data.idx import read_idx
    from pyrogen.data.sources import find_idx_files

    files = find_idx_files(settings["data"])
    train_all = torch.from_numpy(read_idx(files["train_images"])).flatten(1).float() / 255.0
    test = torch.from_numpy(read_idx(files["test_images"])).flatten(1).float() / 255.0
    n_train, n_val = int(settings["train_images"]), int(settings["val_images"])
    if n_train + n_val > len(train_all):
        raise ConfigError(
            f"the protocol asks for {n_train} + {n_val} training images; "
            f"{settings['data']} has {len(train_all)}"
        )
    gen = torch.Generator().manual_seed(int(settings["static_seed"]))
    val = torch.bernoulli(train_all[n_train : n_train + n_val], generator=gen)
    test = torch.bernoulli(test, generator=gen)
    return {"train": train_all[:n_train], "val": val, "test": test}
