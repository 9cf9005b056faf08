"""Bad input fails clearly: exit status 2, a short message naming the problem, nothing written.

One table drives every case. Each case builds its own bad input in ``tmp_path`` (model files,
data files, run directories) and either runs ``pyrogen.cli.main`` in-process or calls the Python
API. For every case the test checks the exit status (2) or the error class, that the message
names the problem (a key substring: the file, the site, the rows, the option), that no traceback
is printed, and that nothing was written: no new file or run directory, and every file of an
existing run byte-identical.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import shutil
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen import cli
from pyrogen.errors import PyrogenError

SMALL = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen


class Small(pyrogen.GenerativeModel):
    """z ~ N(0, I_d), x | z ~ Bernoulli(sigmoid(W z + b)); q(z | x) diagonal Gaussian."""

    def __init__(self, data_dim, latent_dim=2):
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.dec = nn.Linear(latent_dim, data_dim)
        self.enc = nn.Linear(data_dim, 2 * latent_dim)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))
'''

# The guide of SMALL, as written, to be replaced by a broken one.
GUIDE_SAMPLE = 'pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))'
MODEL_SAMPLE = 'z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))'


def write_model(folder: Path, source: str = SMALL, name: str = "model.py") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def variant(old: str, new: str) -> str:
    assert SMALL.count(old) == 1, old
    return SMALL.replace(old, new)


def train_argv(model: str, out: Path, *more: str) -> list[str]:
    return [
        "train",
        model,
        "--data",
        "digits",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(out),
        *more,
    ]


@dataclass
class Case:
    """What one bad-input case runs: a command line, or a call of the Python API."""

    argv: list[str] | None = None
    call: Callable[[], object] | None = None
    expect: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url_bytes: bytes | None = None  # what a (faked) download returns; None: no network


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run directory (Small on digits, one epoch), copied into the cases that need it."""
    folder = tmp_path_factory.mktemp("trained")
    model = write_model(folder)
    assert cli.main(train_argv(model, folder / "run", "--seed", "0")) == 0
    return folder / "run"


def copy_run(trained_run: Path, tmp: Path, name: str = "run") -> Path:
    out = tmp / name
    shutil.copytree(trained_run, out)
    return out


def write_idx_set(folder: Path, n: int = 30, corrupt: str | None = None) -> None:
    """Four small MNIST-like IDX files (gzip); ``corrupt`` damages one of them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 3)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        pyrogen.data.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        pyrogen.data.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    target = folder / "train-images-idx3-ubyte.gz"
    if corrupt == "gzip":  # cut the gzip stream in the middle
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif corrupt == "truncated":  # a valid gzip stream of an IDX payload that ends too early
        raw = gzip.decompress(target.read_bytes())
        target.unlink()
        (folder / "train-images-idx3-ubyte").write_bytes(raw[:-100])


class Evil:
    """Unpickling this object would create a marker file: a stand-in for arbitrary code."""

    marker = ""

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def evil_checkpoint(tmp: Path, trained_run: Path) -> Path:
    run = copy_run(trained_run, tmp)
    evil = Evil()
    evil.marker = str(tmp / "pwned")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"] = evil
    torch.save(state, run / "checkpoint.pt")
    return run


def foreign_checkpoint(tmp: Path, trained_run: Path) -> Path:
    """The run's checkpoint with another model's shapes (latent_dim 3 instead of 2)."""
    run = copy_run(trained_run, tmp)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"] = {
        k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in state["model"].items()
    }
    torch.save(state, run / "checkpoint.pt")
    return run


OUTSIDE_PLATE = variant(
    '    def model(self, x):\n        with pyro.plate("data", x.shape[0]):\n',
    "    def model(self, x):\n"
    '        pyro.sample("shared", dist.LogNormal(x.new_zeros(()), 1.0))\n'
    '        with pyro.plate("data", x.shape[0]):\n',
).replace(
    "    def guide(self, x):\n",
    "    def guide(self, x):\n"
    '        pyro.sample("shared", dist.LogNormal(x.new_zeros(()), 0.1))\n',
)


def outside_plate_run(tmp: Path, trained_run: Path) -> Path:
    """The trained run, pointed at a model file whose latent 'shared' lies outside the data plate.

    The model has the same parameters as Small, so the run loads; only evaluation must refuse.
    """
    run = copy_run(trained_run, tmp)
    config = json.loads((run / "config.json").read_text())
    config["model_file"] = write_model(tmp, OUTSIDE_PLATE)
    for key in ("model_source", "model_sha256"):  # as a run written before sources were saved
        config.pop(key, None)
    (run / "config.json").write_text(json.dumps(config))
    return run


def cases() -> list:
    """(id, builder): the builder makes the bad input in tmp and returns the Case."""
    C = Case
    table: dict[str, Callable[[Path, Path], Case]] = {
        # --- model files ----------------------------------------------------------------------
        "model-missing": lambda t, r: C(
            train_argv(str(t / "nothere.py"), t / "out"), expect=("nothere.py", "does not exist")
        ),
        "model-not-python": lambda t, r: C(
            train_argv(write_model(t, SMALL, "model.txt"), t / "out"),
            expect=("model.txt", "not a Python file"),
        ),
        "model-syntax-error": lambda t, r: C(
            train_argv(
                write_model(t, SMALL.replace("def model(self, x):", "def model(self x):")),
                t / "out",
            ),
            expect=("model.py:", "syntax error"),
        ),
        "model-no-subclass": lambda t, r: C(
            train_argv(
                write_model(t, "import torch\n\nclass Small(torch.nn.Module):\n    pass\n"),
                t / "out",
            ),
            expect=("model.py", "no subclass of pyrogen.GenerativeModel"),
        ),
        "model-ambiguous": lambda t, r: C(
            train_argv(write_model(t, SMALL + "\n\nclass Other(Small):\n    pass\n"), t / "out"),
            expect=("several models", "Small", "Other", "model.py:ClassName"),
        ),
        "model-unknown-class": lambda t, r: C(
            train_argv(write_model(t) + ":Nope", t / "out"), expect=("'Nope'", "found: Small")
        ),
        "model-rejects-dim": lambda t, r: C(
            train_argv(
                write_model(
                    t,
                    variant(
                        "        super().__init__()\n",
                        "        super().__init__()\n        if data_dim != 784:\n"
                        "            raise ValueError(f'needs 28x28 images, not {data_dim}')\n",
                    ),
                ),
                t / "out",
            ),
            expect=("Small(data_dim=64", "needs 28x28 images"),
        ),
        "model-bad-option": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--likelihood", "gaussian"),
            expect=("Small takes no option 'likelihood'",),
        ),
        "model-import-error": lambda t, r: C(
            train_argv(write_model(t, "import not_a_module_anywhere\n" + SMALL), t / "out"),
            expect=("model.py", "not_a_module_anywhere"),
        ),
        # --- model/guide mismatches -----------------------------------------------------------
        "guide-missing-site": lambda t, r: C(
            train_argv(write_model(t, variant(GUIDE_SAMPLE, "pass")), t / "out"),
            expect=("latent site 'z'", "guide"),
        ),
        "guide-extra-site": lambda t, r: C(
            train_argv(
                write_model(
                    t,
                    variant(
                        GUIDE_SAMPLE,
                        GUIDE_SAMPLE
                        + '\n            pyro.sample("w", dist.Normal(loc, 1.0).to_event(1))',
                    ),
                ),
                t / "out",
            ),
            expect=("guide site 'w'", "not a site of the model"),
        ),
        "guide-not-reparametrized": lambda t, r: C(
            train_argv(
                write_model(
                    t,
                    variant(
                        MODEL_SAMPLE,
                        'z = pyro.sample("z", dist.Bernoulli(x.new_full((self.latent_dim,), 0.5))'
                        ".to_event(1))",
                    ).replace(
                        GUIDE_SAMPLE, 'pyro.sample("z", dist.Bernoulli(logits=loc).to_event(1))'
                    ),
                ),
                t / "out",
            ),
            expect=("guide site 'z'", "Bernoulli", "reparametrizable"),
        ),
        "guide-wrong-shape": lambda t, r: C(
            train_argv(
                write_model(
                    t,
                    variant(
                        GUIDE_SAMPLE,
                        'pyro.sample("z", dist.Normal(loc[:, :1], raw[:, :1].exp()).to_event(1))',
                    ),
                ),
                t / "out",
            ),
            expect=("site 'z'", "shape", "[128, 1]", "[128, 2]"),
        ),
        "latent-outside-plate-evaluate": lambda t, r: C(
            ["evaluate", str(outside_plate_run(t, r)), "--ks", "1,2", "--limit", "5"],
            expect=("latent site 'shared'", "outside the data plate 'data'"),
        ),
        "latent-outside-plate-train": lambda t, r: C(
            train_argv(write_model(t, OUTSIDE_PLATE), t / "out"),
            expect=("latent site 'shared'", "outside the data plate 'data'"),
        ),
        # --- data -----------------------------------------------------------------------------
        "data-unknown-name": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--data", "imagenet"),
            expect=("unknown dataset 'imagenet'", "digits"),
        ),
        "data-missing-files": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--data", "mnist"),
            env={"PYROGEN_DATA": str(t / "data")},
            expect=(
                "MNIST not found",
                str(t / "data"),
                "train-images-idx3-ubyte.gz",
                "Downloading failed",
            ),
        ),
        "data-corrupt-gzip": lambda t, r: (
            write_idx_set(t / "data" / "mnist", corrupt="gzip"),
            C(
                train_argv(write_model(t), t / "out", "--data", "mnist"),
                env={"PYROGEN_DATA": str(t / "data")},
                expect=("train-images-idx3-ubyte.gz", "corrupt or truncated gzip"),
            ),
        )[1],
        "data-truncated-idx": lambda t, r: (
            write_idx_set(t / "data" / "mnist", corrupt="truncated"),
            C(
                train_argv(write_model(t), t / "out", "--data", "mnist"),
                env={"PYROGEN_DATA": str(t / "data")},
                expect=("train-images-idx3-ubyte", "truncated"),
            ),
        )[1],
        "data-wrong-md5": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--data", "mnist"),
            env={"PYROGEN_DATA": str(t / "data")},
            url_bytes=b"<html>not the file</html>",
            expect=("train-images-idx3-ubyte.gz", "expected MD5", "corrupt"),
        ),
        "data-nan-rows": lambda t, r: (
            np.save(
                t / "x.npy",
                np.where(np.isin(np.arange(40), [7, 23])[:, None], np.nan, np.full((40, 5), 0.5)),
            ),
            C(
                train_argv(write_model(t), t / "out", "--data", str(t / "x.npy")),
                expect=("x.npy", "NaN or infinite", "rows 7, 23"),
            ),
        )[1],
        "data-inf-rows": lambda t, r: (
            np.save(
                t / "x.npy", np.where(np.arange(40)[:, None] == 12, np.inf, np.full((40, 5), 0.5))
            ),
            C(
                train_argv(write_model(t), t / "out", "--data", str(t / "x.npy")),
                expect=("x.npy", "NaN or infinite", "row 12"),
            ),
        )[1],
        "data-empty": lambda t, r: (
            np.save(t / "x.npy", np.zeros((0, 5), dtype=np.float32)),
            C(
                train_argv(write_model(t), t / "out", "--data", str(t / "x.npy")),
                expect=("x.npy", "no rows"),
            ),
        )[1],
        "data-grey-levels-bernoulli": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--binarize", "none"),
            expect=("observed site 'x'", "Bernoulli", "--binarize"),
        ),
        "data-wrong-shape": lambda t, r: (
            np.save(t / "x.npy", np.full((20, 2, 3, 4), 0.5, dtype=np.float32)),
            C(
                train_argv(write_model(t), t / "out", "--data", str(t / "x.npy")),
                expect=("x.npy", "[N, D]", "(20, 2, 3, 4)"),
            ),
        )[1],
        "data-missing-user-file": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--data", str(t / "mine.npy")),
            expect=("mine.npy", "does not exist"),
        ),
        # --- options --------------------------------------------------------------------------
        "epochs-zero": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--epochs", "0"),
            expect=("--epochs", "positive", "0"),
        ),
        "epochs-negative": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--epochs", "-3"),
            expect=("--epochs", "positive", "-3"),
        ),
        "batch-size-zero": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--batch-size", "0"),
            expect=("--batch-size", "positive"),
        ),
        "particles-zero": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--particles", "0"),
            expect=("--particles", "positive"),
        ),
        "ks-empty": lambda t, r: C(
            [
                "run",
                write_model(t),
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(t / "out"),
                "--ks",
                "",
            ],
            expect=("list of k is empty", "--ks"),
        ),
        "ks-invalid": lambda t, r: C(
            [
                "run",
                write_model(t),
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(t / "out"),
                "--ks",
                "1,ten",
            ],
            expect=("--ks", "1,ten"),
        ),
        "ks-zero-evaluate": lambda t, r: C(
            ["evaluate", str(copy_run(r, t)), "--ks", "0,10"], expect=("positive", "[0]")
        ),
        "objective-unknown": lambda t, r: C(
            train_argv(write_model(t), t / "out", "--objective", "elbow"),
            expect=("unknown objective 'elbow'", "iwae"),
        ),
        "config-unknown-keys": lambda t, r: (
            (t / "cfg.toml").write_text("epoch = 1\nlr = 0.1\n"),
            C(
                train_argv(write_model(t), t / "out", "--config", str(t / "cfg.toml")),
                expect=("cfg.toml", "unknown keys: epoch", "did you mean epochs"),
            ),
        )[1],
        # --- run directories ------------------------------------------------------------------
        "evaluate-missing-run": lambda t, r: C(
            ["evaluate", str(t / "norun")], expect=("norun", "does not exist")
        ),
        "evaluate-no-checkpoint": lambda t, r: (
            (copy_run(r, t) / "checkpoint.pt").unlink(),
            C(["evaluate", str(t / "run")], expect=("run", "no checkpoint.pt")),
        )[1],
        "checkpoint-corrupt": lambda t, r: (
            (copy_run(r, t) / "checkpoint.pt").write_bytes(
                (r / "checkpoint.pt").read_bytes()[:1000]
            ),
            C(["evaluate", str(t / "run")], expect=("checkpoint.pt", "corrupt")),
        )[1],
        "checkpoint-foreign": lambda t, r: C(
            ["evaluate", str(foreign_checkpoint(t, r))],
            expect=("checkpoint.pt", "does not fit Small", "size mismatch"),
        ),
        "checkpoint-foreign-resume": lambda t, r: C(
            ["train", "--resume", "--out", str(foreign_checkpoint(t, r)), "--quiet"],
            expect=("checkpoint.pt", "does not fit"),
        ),
        "checkpoint-pickled-object": lambda t, r: C(
            ["evaluate", str(evil_checkpoint(t, r))],
            expect=("checkpoint.pt", "not tensors-only", "open"),
        ),
        "train-into-existing-run": lambda t, r: C(
            train_argv(write_model(t), copy_run(r, t)),
            expect=("run already exists", "--resume", "--overwrite"),
        ),
        "overwrite-fails-before-a-checkpoint": lambda t, r: C(
            train_argv(
                write_model(
                    t,
                    variant(
                        "dist.Bernoulli(logits=self.dec(z))",
                        "dist.Bernoulli(logits=self.dec(z) * (math.nan if torch.is_grad_enabled() "
                        "else 1.0))",
                    ).replace("import pyro\n", "import math\n\nimport pyro\n", 1),
                ),
                copy_run(r, t),
                "--overwrite",
            ),
            expect=("non-finite loss (nan) at epoch 1, step 1",),
        ),
        "resume-without-checkpoint": lambda t, r: (
            (copy_run(r, t) / "checkpoint.pt").unlink(),
            C(
                ["train", "--resume", "--out", str(t / "run")],
                expect=("no checkpoint.pt", "--overwrite"),
            ),
        )[1],
        "resume-and-overwrite": lambda t, r: C(
            ["train", "--resume", "--overwrite", "--out", str(copy_run(r, t))],
            expect=("--resume and --overwrite",),
        ),
        "train-without-model": lambda t, r: C(
            ["train", "--out", str(t / "out")], expect=("MODEL",)
        ),
        # --- the Python API -------------------------------------------------------------------
        "api-fit-epochs-zero": lambda t, r: (
            model := pyrogen.runs.load_run(copy_run(r, t)).model,
            C(
                call=lambda: pyrogen.fit(model, torch.zeros(10, 64), epochs=0, out=t / "out"),
                expect=("epochs", "positive"),
            ),
        )[1],
        "api-fit-nan-data": lambda t, r: (
            model := pyrogen.runs.load_run(copy_run(r, t)).model,
            x := torch.ones(20, 64).index_fill_(0, torch.tensor([12]), math.nan),
            C(
                call=lambda: pyrogen.fit(model, x, epochs=1, out=t / "out"),
                expect=("train_x", "row 12"),
            ),
        )[2],
        "api-load-dataset-nan": lambda t, r: (
            np.save(
                t / "x.npy", np.where(np.arange(9)[:, None] == 4, np.nan, np.full((9, 3), 0.5))
            ),
            C(call=lambda: pyrogen.load_dataset(str(t / "x.npy")), expect=("x.npy", "row 4")),
        )[1],
        "api-load-run-foreign": lambda t, r: (
            run := foreign_checkpoint(t, r),
            C(
                call=lambda: pyrogen.runs.load_run(run),
                expect=("checkpoint.pt", "does not fit", "size mismatch"),
            ),
        )[1],
    }
    return [pytest.param(build, id=name) for name, build in table.items()]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


class NoNetwork(OSError):
    pass


@pytest.mark.parametrize("build", cases())
def test_bad_input_fails_clearly(
    build: Callable,
    tmp_path: Path,
    trained_run: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # a default run directory would land here and be seen
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ beside model files
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the download cache
    case = build(tmp_path, trained_run)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)

    def fake_url(url: str, timeout: float) -> io.BytesIO:
        if case.url_bytes is None:
            raise NoNetwork(f"no network in tests ({url})")
        return io.BytesIO(case.url_bytes)

    monkeypatch.setattr(pyrogen.data.sources, "_open_url", fake_url)
    before = snapshot(tmp_path)
    capsys.readouterr()

    if case.call is not None:
        with pytest.raises(PyrogenError) as info:
            case.call()
        message = str(info.value)
    else:
        try:
            status = cli.main(case.argv)
        except SystemExit as e:  # argparse
            status = e.code
        err = capsys.readouterr().err
        assert status == 2, f"exit status {status}, stderr:\n{err}"
        assert "Traceback" not in err, err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert 1 <= len(lines) <= 2, f"{len(lines)} lines:\n{err}"
        message = err
    for key in case.expect:
        assert key in message, f"{key!r} not in the message: {message}"

    after = snapshot(tmp_path)
    new = sorted(set(after) - set(before))
    # the only thing a failed download may leave is the (empty) cache folder
    new = [p for p in new if not (p.startswith("home") and after[p] is None)]
    assert not new, f"written: {new}"
    changed = sorted(p for p in before if after.get(p, b"gone") != before[p])
    assert not changed, f"changed or removed: {changed}"
    assert not (tmp_path / "pwned").exists(), "the checkpoint's pickled object was executed"


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--debug re-raises the error so the traceback shows where it came from."""
    with pytest.raises(PyrogenError, match="nothere.py"):
        cli.main(["--debug", "train", str(tmp_path / "nothere.py")])
