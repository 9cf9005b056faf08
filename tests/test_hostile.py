"""Hostile input to the ``pyrogen`` command: one row per case, grouped by class.

Every row runs the command line (``pyrogen.cli.main`` in this process; a few rows through a real
``python -m pyrogen`` subprocess) and asserts the exit code, a message of one or two lines on
stderr naming the problem, no traceback, and that the workspace (a trained and evaluated run, the
data files, everything else) is byte for byte as before: nothing torn, mixed or left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrogen.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "1", "--hidden-dims", "16", "--latent-dim", "2", "--batch-size", "64"]
TINY += ["--quiet"]


class _Evil:  # pickled as a call of os.system: a .pt file that must never be unpickled
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace: a trained and evaluated run ``run``, hostile data files, a file, a symlink."""
    ws = tmp_path_factory.mktemp("hostile")
    assert main(["train", "vae", *TINY, "--out", str(ws / "run")]) == 0
    assert main(["evaluate", str(ws / "run"), "--ks", "1,5", "--limit", "20", "--quiet"]) == 0
    (ws / "afile").write_text("not a folder\n")
    os.symlink(ws / "nowhere", ws / "dangling")
    (ws / "x.npy").mkdir()
    torch.save(torch.eye(6).to_sparse(), ws / "sparse.pt")
    torch.save({"x": _Evil()}, ws / "evil.pt")
    (ws / "corrupt.pt").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    np.save(ws / "one.npy", np.ones((1, 4), dtype=np.float32))
    rng = np.random.default_rng(0)
    np.save(ws / "three.npy", (rng.random((3, 4)) < 0.5).astype(np.float32))
    np.save(ws / "full.npy", np.ones((10, 4), dtype=np.float32))
    raw = (ws / "full.npy").read_bytes()
    (ws / "truncated.npy").write_bytes(raw[: len(raw) // 2 + 40])
    (ws / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (ws / "ks5.toml").write_text("ks = 5\n")
    (ws / "seed.toml").write_text("seed = -1\n")
    (ws / "device.toml").write_text('device = "meta"\n')
    return ws


@pytest.fixture
def ws(base, tmp_path) -> Path:
    """A private copy of the workspace (symlinks copied as symlinks), as the current folder."""
    copy = tmp_path / "ws"
    shutil.copytree(base, copy, symlinks=True)
    cwd = os.getcwd()
    os.chdir(copy)
    yield copy
    os.chdir(cwd)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too) with its content hash or link target."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def assert_message(err: str, expect: str) -> None:
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, f"expected 1-2 lines, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    assert re.search(expect, err, re.IGNORECASE), f"{expect!r} not in {err!r}"


def edit_config(change):
    def setup(ws: Path) -> None:
        path = ws / "run" / "config.json"
        cfg = json.loads(path.read_text())
        path.write_text(change(cfg) if callable(change) else change)

    return setup


def without(*keys):
    return edit_config(lambda cfg: json.dumps({k: v for k, v in cfg.items() if k not in keys}))


# (id, argv, exit code, a regex the message must match, setup of the workspace or None)
ROWS = [
    # --- outputs: a file, a dangling symlink or a missing folder where a command writes -------
    ("train-out-is-file", ["train", "vae", "--out", "afile"], 2, "afile.*file", None),
    ("train-out-under-file", ["train", "vae", "--out", "afile/sub"], 2, "afile.*file", None),
    ("train-out-dangling", ["train", "vae", "--out", "dangling"], 2, "dangling symlink", None),
    ("train-out-existing-run", ["train", "vae", "--out", "run"], 2, "already exists", None),
    ("compare-out-is-file", ["compare", "run", "--out", "afile"], 2, "afile", None),
    ("compare-out-under-file", ["compare", "run", "--out", "afile/x"], 2, "afile.*folder", None),
    ("sample-out-missing-dir", ["sample", "run", "--out", "missing/x.png"], 2, "missing", None),
    ("sample-out-is-folder", ["sample", "run", "--out", "run"], 2, "folder", None),
    ("sample-out-suffix", ["sample", "run", "--out", "x.txt"], 2, r"\.png.*\.csv", None),
    ("sample-out-under-file", ["sample", "run", "--out", "afile/x.csv"], 2, "afile", None),
    ("report-out-under-file", ["report", "run", "--out", "afile/r.html"], 2, "afile", None),
    ("report-missing-run", ["report", "norun"], 2, "norun.*no config.json", None),
    ("evaluate-missing-run", ["evaluate", "norun"], 2, "norun.*does not exist", None),
    ("evaluate-file-as-run", ["evaluate", "afile"], 2, "afile", None),
    # --- a malformed config.json in the run ---------------------------------------------------
    ("config-a-list", ["evaluate", "run"], 2, "config.json.*list", edit_config("[1, 2]\n")),
    ("config-a-string", ["sample", "run"], 2, "config.json.*str", edit_config('"run"\n')),
    ("config-not-json", ["report", "run"], 2, "config.json.*JSON", edit_config("{model")),
    ("config-empty", ["evaluate", "run"], 2, "config.json.*JSON", edit_config("")),
    (
        "config-no-model-file",
        ["evaluate", "run"],
        2,
        "model_file",
        without("model_file", "model_source"),
    ),
    ("config-no-data", ["evaluate", "run"], 2, "'data'", without("data")),
    ("config-no-data-dim", ["sample", "run"], 2, "data_dim", without("data_dim")),
    (
        "config-bad-data-dim",
        ["sample", "run"],
        2,
        "data_dim",
        edit_config(lambda c: json.dumps({**c, "data_dim": "many"})),
    ),
    (
        "resume-no-val-fraction",
        ["train", "--resume", "--out", "run", "--quiet"],
        2,
        "val_fraction",
        without("val_fraction"),
    ),
    (
        "resume-config-a-list",
        ["train", "--resume", "--out", "run", "--quiet"],
        2,
        "config.json",
        edit_config("[]"),
    ),
    # --- numbers and names at the command line (and in --config files) -----------------------
    ("seed-negative", ["train", "vae", "--seed", "-5", "--out", "new"], 2, "--seed", None),
    ("seed-float", ["train", "vae", "--seed", "1e23", "--out", "new"], 2, "--seed.*1e23", None),
    ("seed-too-big", ["train", "vae", "--seed", str(2**32), "--out", "new"], 2, "--seed", None),
    ("evaluate-seed-negative", ["evaluate", "run", "--seed", "-1"], 2, "--seed", None),
    ("sample-seed-word", ["sample", "run", "--seed", "abc"], 2, "--seed", None),
    ("device-meta", ["train", "vae", "--device", "meta", "--out", "new"], 2, "meta", None),
    ("device-typo", ["train", "vae", "--device", "cpux", "--out", "new"], 2, "cpux", None),
    ("evaluate-device-meta", ["evaluate", "run", "--device", "meta"], 2, "meta", None),
    ("sample-device-meta", ["evaluate", "run", "--device", "xla"], 2, "xla", None),
    ("sample-n-huge", ["sample", "run", "-n", "100000000"], 2, r"GiB", None),
    ("sample-n-zero", ["sample", "run", "-n", "0"], 2, "-n", None),
    ("sample-n-negative", ["sample", "run", "-n", "-3"], 2, "-n", None),
    ("ks-zero", ["evaluate", "run", "--ks", "0"], 2, "positive", None),
    ("ks-negative", ["evaluate", "run", "--ks", "1,-3"], 2, "positive", None),
    ("ks-fraction", ["evaluate", "run", "--ks", "1.5"], 2, "integers", None),
    ("ks-word", ["evaluate", "run", "--ks", "a,b"], 2, "integers", None),
    ("ks-empty", ["evaluate", "run", "--ks", ","], 2, "empty", None),
    ("ks-above-pool", ["evaluate", "run", "--ks", "1,10", "--eval-particles", "5"], 2, "5", None),
    ("limit-zero", ["evaluate", "run", "--limit", "0"], 2, "--limit", None),
    ("toml-ks-number", ["run", "vae", "--config", "ks5.toml", "--out", "new"], 2, "ks", None),
    (
        "toml-seed-negative",
        ["train", "vae", "--config", "seed.toml", "--out", "n"],
        2,
        "seed",
        None,
    ),
    (
        "toml-device-meta",
        ["train", "vae", "--config", "device.toml", "--out", "n"],
        2,
        "meta",
        None,
    ),
    ("toml-missing", ["train", "vae", "--config", "none.toml", "--out", "n"], 2, "none.toml", None),
    # --- data files and model files -----------------------------------------------------------
    ("data-folder-npy", ["train", "vae", "--data", "x.npy", "--out", "n"], 2, "folder", None),
    ("data-sparse-pt", ["train", "vae", "--data", "sparse.pt", "--out", "n"], 2, "sparse", None),
    ("data-pickle-pt", ["train", "vae", "--data", "evil.pt", "--out", "n"], 2, "pickled", None),
    ("data-corrupt-pt", ["train", "vae", "--data", "corrupt.pt", "--out", "n"], 2, "corrupt", None),
    (
        "data-truncated-npy",
        ["train", "vae", "--data", "truncated.npy", "--out", "n"],
        2,
        "npy",
        None,
    ),
    ("data-one-row", ["train", "vae", "--data", "one.npy", "--out", "n"], 2, "at least 2", None),
    ("data-three-rows", ["train", "vae", "--data", "three.npy", "--out", "n"], 2, "0.34", None),
    ("data-missing-csv", ["train", "vae", "--data", "no.csv", "--out", "n"], 2, "no.csv", None),
    ("model-exits", ["train", "exits.py", "--out", "n"], 2, r"sys\.exit", None),
    ("model-colon-path", ["train", "we:ird/m.py", "--out", "n"], 2, "we:ird/m.py", None),
    ("model-colon-class", ["train", "vae:Nope", "--out", "n"], 2, "Nope", None),
]


@pytest.mark.parametrize(
    "argv, code, expect, setup", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_hostile_row(ws, capsys, argv, code, expect, setup):
    if setup is not None:
        setup(ws)
    before = snapshot(ws)
    got, err = cli(capsys, *argv)
    assert got == code, err
    assert_message(err, expect)
    assert "weights_only=False" not in err  # never the advice to unpickle code
    assert snapshot(ws) == before  # nothing written, torn or left behind


def test_rows_cover_every_class():
    assert len(ROWS) >= 50
    assert len({r[0] for r in ROWS}) == len(ROWS)


# --- errors the top level must recognize, whichever command raises them ---------------------

USER_ERRORS = [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run/checkpoint.pt"), "disk is full"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "run"), "read-only"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "run"), "permission"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "run"), "quota"),
    (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "a/b"), "not a folder"),
    (FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "out"), "already exists"),
    (OSError(errno.EMFILE, os.strerror(errno.EMFILE)), "too many open files"),
    (MemoryError(), "out of memory"),
    (
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"),
        "out of memory",
    ),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), "out of memory"),
]


@pytest.mark.parametrize("error, expect", USER_ERRORS, ids=lambda v: type(v).__name__)
def test_user_caused_exceptions_exit_2(monkeypatch, capsys, error, expect):
    def raises(args):
        raise error

    monkeypatch.setitem(COMMANDS, "sample", raises)
    code, err = cli(capsys, "sample", "run")
    assert code == 2
    assert_message(err, expect)


def test_programming_errors_say_internal_error(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "sample", lambda args: 1 / 0)
    code, err = cli(capsys, "sample", "run")
    assert code == 1
    assert_message(err, "internal error.*ZeroDivisionError")
    assert "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "sample", "run"])
    monkeypatch.setitem(COMMANDS, "sample", lambda args: (_ for _ in ()).throw(KeyError("k")))
    code, err = cli(capsys, "sample", "run")  # a KeyError from a bug is not a config error
    assert code == 1 and "internal error" in err


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    def raises(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(COMMANDS, "sample", raises)
    with pytest.raises(OSError):
        main(["--debug", "sample", "run"])


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def raises(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "sample", raises)
    code, err = cli(capsys, "sample", "run")
    assert code == 130 and "interrupted" in err


# --- outputs that cannot be written are found before any work --------------------------------


def _refuse_writes_under(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """Files created under ``folder`` fail as on a read-only file system (root ignores chmod)."""
    real_open = os.open
    folder = str(folder.resolve())

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.abspath(path).startswith(folder):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_read_only_out_refused_before_training(ws, capsys, monkeypatch):
    (ws / "ro").mkdir()
    _refuse_writes_under(monkeypatch, ws / "ro")

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(torch.optim.Adam, "__init__", no_training)
    code, err = cli(capsys, "train", "vae", *TINY, "--out", "ro/run")
    assert code == 2
    assert_message(err, "read-only")
    assert list((ws / "ro").iterdir()) == []


def test_read_only_run_refused_before_evaluating(ws, capsys, monkeypatch):
    before = snapshot(ws)
    _refuse_writes_under(monkeypatch, ws / "run")
    code, err = cli(capsys, "evaluate", "run", "--ks", "1,5", "--limit", "5", "--quiet")
    assert code == 2
    assert_message(err, "read-only")
    assert snapshot(ws) == before


def test_full_disk_during_a_checkpoint_leaves_no_temporary_file(ws, capsys, monkeypatch):
    """A disk that fills while torch.save writes: exit 2 saying so, and no temporary file."""
    import io

    import pyrogen.atomic

    class FillsUp(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(pyrogen.atomic, "open", lambda p, mode: FillsUp(p, "wb"), raising=False)
    code, err = cli(capsys, "train", "vae", *TINY, "--out", "full")
    assert code == 2
    assert_message(err, "disk is full")
    leftovers = [p.name for p in ws.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert not (ws / "full" / "checkpoint.pt").exists()


def test_the_val_fraction_suggested_for_a_tiny_data_set_works(ws, capsys):
    code, err = cli(capsys, "train", "vae", "--data", "three.npy", "--out", "t")
    assert code == 2
    fraction = re.search(r"--val-fraction ([0-9.]+)", err).group(1)
    code, err = cli(
        capsys,
        "train",
        "vae",
        *TINY,
        "--data",
        "three.npy",
        "--val-fraction",
        fraction,
        "--out",
        "t",
    )
    assert code == 0, err


def test_a_model_path_with_a_colon_trains(ws, capsys):
    (ws / "we:ird").mkdir()
    shutil.copy(ROOT / "models" / "vae.py", ws / "we:ird" / "m.py")
    code, err = cli(
        capsys,
        "train",
        "we:ird/m.py:VAE",
        *TINY,
        "--data",
        "full.npy",
        "--binarize",
        "none",
        "--out",
        "c",
    )
    assert code == 0, err
    code, err = cli(
        capsys,
        "train",
        "we:ird/m.py",
        *TINY,
        "--data",
        "full.npy",
        "--binarize",
        "none",
        "--out",
        "d",
    )
    assert code == 0, err


# --- --overwrite's leftovers after a kill ----------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_overwrite_before_a_checkpoint_restores_the_old_run(ws, capsys):
    aside = ws / f".run.replaced-{_dead_pid()}"
    (ws / "run").rename(aside)
    (ws / "run").mkdir()  # the new run, killed before its first checkpoint
    (ws / "run" / "config.json").write_text("{}")
    old = snapshot(aside)
    code, err = cli(capsys, "sample", "run", "-n", "4", "--out", "s.csv")
    assert code == 0, err
    assert not aside.exists()
    assert snapshot(ws / "run") == old


def test_killed_overwrite_after_a_checkpoint_removes_the_old_run(ws, capsys):
    aside = ws / f".run.replaced-{_dead_pid()}"
    shutil.copytree(ws / "run", aside)
    new = snapshot(ws / "run")
    code, err = cli(capsys, "evaluate", "run", "--ks", "1,5", "--limit", "5", "--quiet")
    assert code == 0, err
    assert not aside.exists()
    after = set(snapshot(ws / "run"))
    assert set(new) <= after  # the new run, untouched, plus the evaluation just made
    assert all(str(p).startswith("evaluations") for p in after - set(new)), after - set(new)


def test_killed_overwrite_of_a_symlinked_run_is_restored(ws, capsys):
    (ws / "run").rename(ws / "real")
    aside = ws / f".run.replaced-{_dead_pid()}"
    os.symlink(ws / "real", aside)  # --overwrite renamed the symlink itself aside
    code, err = cli(capsys, "train", "vae", *TINY, "--out", "run")
    assert code == 2  # the old run is back, so a new one needs --overwrite again
    assert_message(err, "already exists")
    assert (ws / "run").is_symlink() and not aside.exists()


def test_an_overwrite_in_progress_is_left_alone(ws, capsys):
    aside = ws / f".run.replaced-{os.getppid()}"  # a live process (pytest's parent)
    shutil.copytree(ws / "run", aside)
    code, err = cli(capsys, "sample", "run", "-n", "4", "--out", "s.csv")
    assert code == 0, err
    assert aside.exists()


# --- the real entry point, in a subprocess ---------------------------------------------------

SUBPROCESS_ROWS = [
    (["train", "vae", "--seed", "1e23"], "--seed"),
    (["train", "vae", "--out", "afile"], "afile"),
    (["train", "vae", "--data", "evil.pt", "--out", "n"], "pickled"),
]


@pytest.mark.parametrize("argv, expect", SUBPROCESS_ROWS, ids=lambda v: str(v)[:30])
def test_hostile_subprocess(ws, argv, expect):
    before = snapshot(ws)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pyrogen", *argv], cwd=ws, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert_message(proc.stderr, expect)
    assert snapshot(ws) == before


# --- every file a command writes goes through the atomic writer ------------------------------

WRITERS = [
    ["sample", "run", "-n", "4", "--out", "out/s.png"],
    ["sample", "run", "-n", "4", "--out", "out/s.npy"],
    ["sample", "run", "-n", "4", "--out", "out/s.csv"],
    ["compare", "run", "--out", "out"],
    ["report", "run", "--out", "out/r.html", "--mmd-samples", "20"],
    ["evaluate", "run", "--ks", "1,5", "--limit", "5", "--quiet"],
]


@pytest.mark.parametrize("argv", WRITERS, ids=lambda a: f"{a[0]}-{a[-1]}")
def test_a_commit_that_fails_leaves_nothing(ws, capsys, monkeypatch, argv):
    """With every rename failing (a full disk at the commit), no output file appears at all:
    a command that wrote any file directly would leave it behind."""
    (ws / "out").mkdir()
    before = snapshot(ws)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    monkeypatch.setattr(os, "rename", full)
    code, err = cli(capsys, *argv)
    assert code == 2, err
    assert_message(err, "disk is full")
    assert snapshot(ws) == before
