"""SIGKILL at every commit of ``train`` (new, --overwrite), ``evaluate``, ``run`` and ``report``.

A wrapper runs the real command in a subprocess and kills itself just before its Nth call of
``os.replace``/``os.rename`` (every atomic write commits with one; so does ``--overwrite``'s move
aside), for N = 1, 2, ... until the command finishes without reaching N. After each kill and the
next command (which recovers what a kill left), the run directory must be its old complete self
or its new complete self, read with pyrogen's own loaders; and the next command must work.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyrogen.cli import main
from pyrogen.runs import load_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden-dims", "8", "--latent-dim", "2", "--batch-size", "50", "--quiet"]
TRAIN = ["train", "vae", "--data", "bits.npy", "--binarize", "none", "--epochs", "2", *TINY]

WRAPPER = """
import os, signal, sys
limit, calls = int(os.environ["PYROGEN_KILL_AT"]), [0]

def killing(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

os.replace, os.rename = killing(os.replace), killing(os.rename)
from pyrogen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_killed(ws: Path, argv: list[str], n: int) -> int:
    env = {**os.environ, "PYROGEN_KILL_AT": str(n), "PYTHONPATH": str(ROOT)}
    env["PYROGEN_MODELS"] = str(ROOT / "models")
    proc = subprocess.run(
        [sys.executable, str(ws / "wrapper.py"), *argv],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.returncode


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def evaluation(run: Path):
    """The run's evaluation as pyrogen's report reads it: (bounds, points) or None."""
    from pyrogen.report.tables import read_run_tables

    tables = read_run_tables(run)
    if tables.bounds is None:
        if tables.points is not None:
            raise MixedEvaluation("points.csv without bounds.csv")
        return None
    if tables.points is None:
        raise MixedEvaluation("bounds.csv without points.csv")
    ks = {int(k) for k in tables.bounds["k"]}
    point_ks = {int(c[5:]) for c in tables.points.columns if c[5:].isdigit() and "iwae_" in c}
    if point_ks | {1} != ks:
        raise MixedEvaluation(f"bounds for k={sorted(ks)} beside points for {sorted(point_ks)}")
    return sorted(ks)


class MixedEvaluation(AssertionError):
    """The bounds of one evaluation beside the points of another (or of none)."""


def assert_complete(run: Path) -> None:
    """A run pyrogen can load: config, checkpoint, and a history of consecutive epochs if any.

    (history.csv is derived from the checkpoint, which holds the history; a kill between the two
    writes leaves it an epoch behind until ``--resume`` rewrites it.)
    """

    history = load_run(run).history  # config.json, the model, the tensors-only checkpoint
    if history is not None:
        assert list(history["epoch"]) == list(range(1, len(history) + 1))
    if (run / "report.html").exists():
        assert (run / "report.html").read_text().rstrip().endswith("</html>")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A data file, the wrapper, and a trained run evaluated with other options than below."""
    ws = tmp_path_factory.mktemp("kill")
    rng = np.random.default_rng(0)
    np.save(ws / "bits.npy", (rng.random((300, 12)) < 0.3).astype(np.float32))
    (ws / "wrapper.py").write_text(WRAPPER)
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        assert main([*TRAIN, "--out", "old", "--seed", "3"]) == 0
        assert main(["evaluate", "old", "--ks", "1,3", "--seed", "1", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    return ws


SCENARIOS = {
    "train": ([*TRAIN, "--out", "run"], None),
    "train-overwrite": ([*TRAIN, "--out", "run", "--overwrite"], "old"),
    "evaluate": (["evaluate", "run", "--ks", "1,5", "--quiet"], "old"),
    "run": (["run", *TRAIN[1:], "--ks", "1,5", "--out", "run"], None),
    "report": (["report", "run", "--mmd-samples", "20"], "old"),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_sigkill_at_every_commit_leaves_old_or_new(base, tmp_path, name):
    argv, start = SCENARIOS[name]
    n, completed = 1, False
    while not completed:
        ws = tmp_path / f"n{n}"
        shutil.copytree(base, ws)
        if start:
            shutil.copytree(ws / start, ws / "run")
        run = ws / "run"
        old_files = digest(run) if run.exists() else None
        old_eval = evaluation(run) if run.exists() else None
        completed = run_killed(ws, argv, n) == 0
        # the next command: one that reads the run (and recovers what --overwrite left)
        cwd = os.getcwd()
        os.chdir(ws)
        try:
            code = main(["sample", "run", "-n", "3", "--out", "s.csv"])
        finally:
            os.chdir(cwd)
        assert not list(ws.glob(".run.replaced-*")), f"N={n}: --overwrite's copy left behind"
        assert not [p for p in ws.rglob("*") if ".tmp" in p.name], f"N={n}: a temporary file"
        if old_files is None and not (run / "checkpoint.pt").exists():
            assert not completed
            assert code == 2
            # no run yet (or one that never reached a checkpoint): training again works
            os.chdir(ws)
            try:
                assert main([*TRAIN, "--out", "run", "--overwrite"]) == 0
            finally:
                os.chdir(cwd)
            n += 1
            continue
        assert code == 0, f"N={n}: the run cannot be sampled after the kill"
        if old_files is not None and digest(run) == old_files:
            n += 1  # its old complete self
            continue
        assert_complete(run)  # else its new complete self
        new_eval = evaluation(run)  # bounds and points of one evaluation, or neither
        if name == "evaluate":
            assert new_eval in ([1, 5], old_eval), f"N={n}: evaluation {new_eval}"
        if name.startswith("train") or name == "run":  # the checkpoint resumes to the end
            os.chdir(ws)
            try:
                assert main(["train", "--resume", "--out", "run", "--quiet"]) == 0
            finally:
                os.chdir(cwd)
            assert list(load_run(run).history["epoch"]) == [1, 2]
        if name == "report" and (run / "report.html").exists():
            os.chdir(ws)
            try:
                assert main(["report", "run", "--mmd-samples", "20"]) == 0
            finally:
                os.chdir(cwd)
        n += 1
    assert n > 2, "the command never reached a commit"
