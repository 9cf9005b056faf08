"""TensorBoard: the callback's event files hold the scalars, read back with EventAccumulator."""

import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from pyrogen.cli import main
from pyrogen.errors import ConfigError

TINY = ["--epochs", "2", "--latent-dim", "2", "--hidden-dims", "16", "--quiet"]


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = events.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "k": [1, 10, 100],
            "bound": ["ELBO", "IWAE_10", "IWAE_100"],
            "estimate": [-30.0, -29.0, -28.5],
            "ess": [1.0, 4.0, 20.0],
            "khat": [float("nan"), float("nan"), 0.42],
            "khat_gt_0.7": [float("nan"), float("nan"), 0.05],
        }
    )


def test_callback_methods_write_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from pyrogen.train.tensorboard import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path / "tb", every_n_steps=2)
    state = SimpleNamespace(epoch=0, step=0)
    logger.on_train_begin(state, {"lr": 1e-3, "epochs": 2})
    for epoch in (1, 2):
        for _ in range(4):
            state.step += 1
            metrics = {"loss": 30.0 - state.step, "lr": 1e-3, "grad_norm": 2.0, "kl_weight": 0.5}
            logger.on_step_end(state, metrics)
        state.epoch = epoch
        row = {"epoch": epoch, "train_elbo": -30.0 + epoch, "val_elbo": -31.0 + epoch}
        row |= {"kl_weight": 1.0, "lr": 1e-3, "grad_norm": 2.5, "seconds": 0.1}
        logger.on_epoch_end(state, row)
    logger.log_bounds(_summary(), step=2)
    logger.on_train_end(state)

    s = _scalars(tmp_path / "tb")
    assert s["elbo/train"] == [(1, -29.0), (2, -28.0)]
    assert s["elbo/val"] == [(1, -30.0), (2, -29.0)]
    assert [step for step, _ in s["step/loss"]] == [2, 4, 6, 8]  # every second step
    assert s["step/loss"][0] == (2, 28.0)
    for tag in ("step/lr", "step/grad_norm", "step/kl_weight", "epoch/kl_weight", "epoch/lr"):
        assert tag in s, sorted(s)
    assert s["epoch/grad_norm"][-1] == (2, 2.5)
    assert s["bounds/ELBO"] == [(2, -30.0)] and s["bounds/IWAE_100"] == [(2, -28.5)]
    assert s["bounds/log_px"] == [(2, -28.5)]
    assert s["bounds/khat"][0][1] == pytest.approx(0.42)
    assert s["bounds/ess_IWAE_10"] == [(2, 4.0)]


def test_train_and_evaluate_with_the_flag_write_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    tb, out = tmp_path / "tb", tmp_path / "run"
    argv = ["train", "vae", "--data", "digits", *TINY, "--out", str(out), "--tensorboard", str(tb)]
    assert main(argv) == 0
    assert any(p.name.startswith("events.out.tfevents") for p in tb.iterdir())
    assert main(["evaluate", str(out), "--ks", "1,10,50", "--limit", "20", "--quiet"]) == 0
    s = _scalars(tb)
    assert [step for step, _ in s["elbo/train"]] == [1, 2]
    assert [step for step, _ in s["elbo/val"]] == [1, 2]
    assert {"step/loss", "step/lr", "step/kl_weight", "epoch/lr", "epoch/kl_weight"} <= set(s)
    history = pd.read_csv(out / "history.csv")
    assert s["elbo/val"][-1][1] == pytest.approx(history["val_elbo"].iloc[-1], rel=1e-6)
    bounds = pd.read_csv(out / "bounds.csv")
    assert s["bounds/IWAE_50"] == [(2, pytest.approx(bounds["estimate"].iloc[-1], rel=1e-6))]
    assert "bounds/khat" in s


def test_without_tensorboard_the_flag_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    from pyrogen.train.tensorboard import TensorBoardLogger

    with pytest.raises(ConfigError, match=r"pip install 'pyrogen\[tensorboard\]'"):
        TensorBoardLogger(tmp_path / "tb")
    out = tmp_path / "run"
    argv = ["train", "vae", "--data", "digits", *TINY, "--out", str(out)]
    assert main([*argv, "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "pip install 'pyrogen[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()  # refused before training
