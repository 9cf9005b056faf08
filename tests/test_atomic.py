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
