"""Where the files that ship with pyrogen are: the zoo's model files and the pretrained runs."""

from __future__ import annotations

from pathlib import Path


def shipped_dir(installed: str, checkout: str) -> Path:
    """The folder of files shipped with the code that runs.

    An installed wheel (``pip install .``) carries them as package data, ``pyrogen/<installed>``
    (mapped from the source tree's folders in pyproject.toml); a source checkout, or an editable
    install of one, has no such folder and reads ``<checkout>`` of the tree beside the package,
    the one copy of the files.
    """
    package = Path(__file__).resolve().parent
    copy = package / installed
    return copy if copy.is_dir() else package.parent / checkout
