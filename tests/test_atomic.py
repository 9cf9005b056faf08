"""Atomic writes leave the old file or the new one, and never their temporary file."""

from pathlib import Path

import pytest

from pyrogen.atomic import write_atomically, write_text


def test_a_write_that_fails_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    write_text(target, "old")

    def fails_halfway(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fails_halfway)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_an_interrupt_during_a_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def interrupted(f):
        f.write(b"x" * 1000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "checkpoint.pt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_successful_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_full_disk_in_torch_save_is_an_enospc_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError ("unexpected pos"); the writer raises
    the disk's own OSError instead, removes its temporary file and keeps the old checkpoint."""
    import errno
    import io
    import os

    import torch

    import pyrogen.atomic
    from pyrogen.train.checkpoints import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.zeros(3)})

    class FillsUp(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 2048:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(pyrogen.atomic, "open", lambda p, mode: FillsUp(p, "wb"), raising=False)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, {"w": torch.ones(100_000)})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(3))
