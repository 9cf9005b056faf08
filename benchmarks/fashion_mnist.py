r"""Test log-likelihood of the zoo's image models on binarized Fashion-MNIST.

Each model is trained on the 60,000 training images, binarized afresh for every minibatch (dynamic
binarization), under a stated budget (epochs and a wall-clock cap per model), and evaluated on
the statically binarized test set: per test point a pool of K guide draws gives

.. math::
    \mathrm{ELBO} = \frac{1}{K} \sum_k w_k \le
    \log \hat p(x) = \mathrm{IWAE}_K = \log \frac{1}{K} \sum_{k=1}^{K} e^{w_k}, \qquad
    w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x),

reported in nats (mean over test points), with NLL = -log p^(x) and bits/dim = NLL / (784 ln 2).
K = 5000 follows the literature's protocol. One row per model goes to
``benchmarks/results/fashion_mnist_budget.csv`` (rows of other models already there are kept).

``--protocol exemplar`` instead follows the published protocol (benchmarks/protocols/): training
to convergence with early stopping (``--stage train``, resumable), then ``--stage evaluate``: the
best validation weights on all 10,000 test images (ELBO, IWAE_k up to K = 5000, with Monte Carlo
and test-set standard errors, k-hat), AIS on the first 500, into
``benchmarks/results/fashion_mnist.csv`` beside the published value.

Published figures for comparison (Norouzi et al., 2020, Table 2, K = 5000): MLP VAE -228.70 nats,
ConvHVAE with VampPrior -224.67 nats, after training to convergence on a GPU; a budget of a
few CPU epochs lands well below them.

Usage::

    python benchmarks/fashion_mnist.py --models vae,hvae_small --epochs 5 --limit 1000 --k 5000
    python benchmarks/fashion_mnist.py --smoke --out /tmp/bench   # seconds: a check, not a result
    python benchmarks/fashion_mnist.py --protocol exemplar --models vae --runs fmnist-runs \
        --stage all --threads 1

References:
    | Fashion-MNIST (Xiao et al., 2017) | https://arxiv.org/abs/1708.07747
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Exemplar VAE (Norouzi et al., 2020) | https://arxiv.org/abs/2004.04795
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyro
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import pyrogen  # noqa: E402
from pyrogen.optim import OPTIMIZERS  # noqa: E402
from pyrogen.runs import build_model, load_model_class  # noqa: E402
from pyrogen.train import OBJECTIVES, seed_everything  # noqa: E402
from pyrogen.train.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROTOCOLS = ROOT / "benchmarks" / "protocols"

__all__ = ["COLUMNS", "IMAGE_MODELS", "main", "run_model"]

#: the zoo's image models, in the order they are run
IMAGE_MODELS = ("vae", "conv_vae", "hvae_small", "iaf_vae", "vamp_vae")
#: tiny sizes for ``--smoke`` (a check that everything runs, in seconds)
SMOKE_OPTIONS = {
    "vae": dict(latent_dim=4, hidden_dims=(32,)),
    "conv_vae": dict(latent_dim=4, hidden_dims=(32,), channels=(4, 8)),
    "hvae_small": dict(latent_dim=8, hidden_dims=(32,), top_latent_dim=4, top_hidden_dims=(16,)),
    "iaf_vae": dict(latent_dim=4, hidden_dims=(32,)),
    "vamp_vae": dict(latent_dim=4, hidden_dims=(32,), num_pseudo=10),
}
COLUMNS = [
    "model",
    "objective",
    "parameters",
    "epochs",
    "wall_seconds",
    "test_elbo",
    "iwae_K",
    "nll",
    "bits_per_dim",
    "test_points",
    "K",
    "stderr",
    "data_stderr",
    "khat_gt_0.7",
    "eval_seconds",
    "train_points",
    "seed",
    "torch_threads",
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        default=",".join(IMAGE_MODELS),
        help="comma-separated zoo models (default: %(default)s)",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs per model (default %(default)s)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop a model's training after the epoch that passes this wall time",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate the first N test points (default: all 10,000; --protocol: a check only)",
    )
    p.add_argument("--k", type=int, default=5000, help="importance samples per test point")
    p.add_argument("--objective", default="elbo", choices=OBJECTIVES)
    p.add_argument("--particles", type=int, default=1, help="ELBO particles, or k of IWAE")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--train-limit", type=int, default=None, help="train on the first N training images only"
    )
    p.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results"),
        help="folder of fashion_mnist_budget.csv, or with --protocol of fashion_mnist.csv "
        "(default %(default)s)",
    )
    p.add_argument("--runs", default=None, help="keep the run directories here (default: temp)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny models, 500 training images, 1 epoch, 20 test points, K=20",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--ais-points",
        type=int,
        default=500,
        help="with --protocol: AIS on the first N test points (0: none; default %(default)s)",
    )
    p.add_argument("--ais-steps", type=int, default=300, help="AIS intermediate distributions T")
    p.add_argument("--ais-chains", type=int, default=8, help="AIS chains per point")
    p.add_argument("--ais-leapfrog", type=int, default=4, help="leapfrog steps per HMC move")
    p.add_argument(
        "--protocol",
        default=None,
        help="train and evaluate under a published protocol: a name in benchmarks/protocols/ "
        "(exemplar) or a TOML file; the models are the protocol's",
    )
    p.add_argument(
        "--stage",
        default="train",
        choices=("train", "evaluate", "all", "export", "curves"),
        help="with --protocol: train (resumes a run in --runs), evaluate the best weights, or "
        "both; export: the best weights as a shipped run in benchmarks/pretrained/; curves: the "
        "learning curves of the runs in --runs as results/fashion_mnist_curves.png",
    )
    return p


def _log(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


def run_model(
    name: str, args: argparse.Namespace, train_x: torch.Tensor, test_x: torch.Tensor, run_dir: Path
) -> dict:
    """Trains one zoo model under the budget, evaluates it on ``test_x``; returns the CSV row."""
    cls, _ = load_model_class(name)
    options = SMOKE_OPTIONS.get(name, {}) if args.smoke else {}
    seed_everything(args.seed)
    model = build_model(cls, train_x.shape[1], **options).to(args.device)
    fit_options = dict(
        batch_size=args.batch_size,
        lr=args.lr,
        objective=args.objective,
        num_particles=args.particles,
        seed=args.seed,
        out=run_dir,
        binarize="dynamic",
        progress=False,
    )
    # one epoch per call, resuming from the checkpoint (optimizer state included), so that the
    # wall-clock cap is checked between epochs
    wall, epochs = 0.0, 0
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        history = pyrogen.fit(model, train_x, epochs=epoch, resume=epoch > 1, **fit_options)
        wall += time.perf_counter() - tick
        epochs = epoch
        last = history.iloc[-1]
        _log(
            args,
            f"  {name} epoch {epoch}: train objective {last['train_objective']:.2f} "
            f"nats, {wall:.0f} s",
        )
        if args.max_minutes is not None and wall + wall / epoch > 60 * args.max_minutes:
            break
    model.eval()
    pyro.set_rng_seed(args.seed)
    tick = time.perf_counter()
    ev = pyrogen.evaluate(model.model, model.guide, test_x.to(args.device), ks=(1, args.k))
    eval_seconds = time.perf_counter() - tick
    elbo, top = ev.summary.iloc[0], ev.summary.iloc[-1]
    return {
        "model": name,
        "objective": args.objective
        if args.objective not in ("iwae", "iwae-dreg")
        else f"{args.objective}_{args.particles}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "wall_seconds": round(wall, 1),
        "test_elbo": elbo["estimate"],
        "iwae_K": top["estimate"],
        "nll": top["nll"],
        "bits_per_dim": top["bits_per_dim"],
        "test_points": len(test_x),
        "K": args.k,
        "stderr": top["stderr"],
        "data_stderr": top["data_stderr"],
        "khat_gt_0.7": top["khat_gt_0.7"],
        "eval_seconds": round(eval_seconds, 1),
        "train_points": len(train_x),
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
    }


def _merge(
    path: Path,
    rows: list[dict],
    columns: list[str] = COLUMNS,
    keys: tuple[str, ...] = ("model", "objective"),
) -> pd.DataFrame:
    """Writes ``rows`` into the CSV, replacing older rows with the same ``keys``."""
    new = pd.DataFrame(rows, columns=columns)
    if path.is_file():
        old = pd.read_csv(path)
        drop = set(new[list(keys)].itertuples(index=False, name=None))
        old = old[[r not in drop for r in old[list(keys)].itertuples(index=False, name=None)]]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(path, index=False, float_format="%.4f")
    return new


def load_protocol(name: str) -> dict:
    """The protocol called ``name`` in benchmarks/protocols/, or read from a TOML file."""
    path = Path(name) if name.endswith(".toml") else PROTOCOLS / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROTOCOLS.glob("*.toml")))
        raise SystemExit(f"no protocol {name!r}: {path} does not exist (known: {known})")
    with open(path, "rb") as f:
        return tomllib.load(f)


def protocol_splits(proto: dict) -> dict[str, torch.Tensor]:
    """The protocol's train (grey levels), validation and test (binarized once) images."""
    from pyrogen.data.protocols import protocol_splits as splits

    return splits(proto)


class EpochLog:
    """A fit callback: keeps the best validation weights in ``best.pt`` and logs each epoch."""

    def __init__(self, model: torch.nn.Module, run_dir: Path, name: str) -> None:
        self.model, self.path, self.name = model, run_dir / "best.pt", name
        self.best = load_checkpoint(self.path)["val_elbo"] if self.path.exists() else -math.inf
        self.started = time.perf_counter()

    def on_train_begin(self, state: object, config: object = None) -> None:
        print(f"{self.name}: from epoch {state.epoch}, best val ELBO {self.best:.2f}", flush=True)

    def on_step_end(self, state: object, metrics: dict) -> None:
        pass

    def on_epoch_end(self, state: object, row: dict) -> None:
        val = float(row["val_elbo"])
        mark = ""
        if val > self.best:
            self.best, mark = val, " *"
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            save_checkpoint(self.path, {"model": weights, "epoch": state.epoch, "val_elbo": val})
        print(
            f"{self.name} epoch {state.epoch}: train {row['train_objective']:.2f} "
            f"(beta {row['kl_weight']:.2f}), val ELBO {val:.2f}{mark}, {row['seconds']:.1f} s",
            flush=True,
        )

    def on_train_end(self, state: object) -> None:
        pass


def protocol_model(proto: dict, name: str) -> torch.nn.Module:
    """The protocol's model ``name``, built as its spec says."""
    spec = proto["models"][name]
    cls, _ = load_model_class(spec["model"])
    options = dict(spec.get("options", {}))
    if "hidden_dims" in options:
        options["hidden_dims"] = tuple(options["hidden_dims"])
    return build_model(cls, 784, **options)


def train_protocol(proto: dict, name: str, splits: dict, runs: Path) -> Path:
    """Trains (or resumes) model ``name`` under the protocol in ``runs/<name>-<protocol>``."""
    run_dir = runs / f"{name}-{proto['name']}"
    spec = proto["models"][name]
    seed_everything(proto["seed"])
    model = protocol_model(proto, name)
    _, model_file = load_model_class(spec["model"])
    config = {
        "model_spec": spec["model"],
        "model_file": str(model_file),
        "model_options": spec.get("options", {}),
        "data": proto["data"],
        "data_dim": 784,
        "image_shape": [28, 28],
        "protocol": proto["name"],
        "protocol_settings": {k: v for k, v in proto.items() if k != "models"},
    }
    pyrogen.fit(
        model,
        splits["train"],
        splits["val"],
        epochs=proto["max_epochs"],
        batch_size=proto["batch_size"],
        lr=proto["lr"],
        seed=proto["seed"],
        out=run_dir,
        binarize=proto["binarize"],
        kl_warmup=proto["kl_warmup"],
        patience=proto["patience"],
        optimizer=OPTIMIZERS[proto["optimizer"]],
        resume=(run_dir / "checkpoint.pt").exists(),
        run_info=config,
        progress=False,
        callbacks=[EpochLog(model, run_dir, name)],
    )
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0. See ``--help``."""
    args = _parser().parse_args(argv)
    if args.protocol:
        return main_protocol(args)
    if args.smoke:
        args.epochs, args.k = 1, 20
        args.limit = args.limit or 20
        args.train_limit = args.train_limit or 500
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in IMAGE_MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {', '.join(IMAGE_MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    train = pyrogen.load_dataset("fashion-mnist", "all", binarize="dynamic", seed=args.seed)
    test = pyrogen.load_dataset("fashion-mnist", "test", binarize="dynamic", seed=args.seed)
    train_x, test_x = train.x[: args.train_limit], test.x[: args.limit]
    out = Path(args.out) / "fashion_mnist_budget.csv"
    _log(
        args,
        f"Fashion-MNIST: {len(train_x)} training images (dynamic binarization), "
        f"{len(test_x)} test images (static), K={args.k}, {torch.get_num_threads()} threads",
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs) if args.runs else Path(tmp)
        for name in models:
            row = run_model(name, args, train_x, test_x, runs / f"{name}-{args.objective}")
            rows.append(row)
            table = _merge(out, [row])  # written after every model: partial results survive
            _log(
                args,
                f"{name}: ELBO {row['test_elbo']:.2f}, log p(x) {row['iwae_K']:.2f} "
                f"+- {row['data_stderr']:.2f} nats (K={args.k}), "
                f"{row['wall_seconds']:.0f} s training, {row['eval_seconds']:.0f} s eval",
            )
    _log(args, f"wrote {out}")
    if not args.quiet:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def main_protocol(args: argparse.Namespace) -> int:
    """``--protocol``: trains each model to convergence (resuming), then evaluates it."""
    proto = load_protocol(args.protocol)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in proto["models"]]
    if unknown:
        raise SystemExit(
            f"protocol {proto['name']} has no models {unknown}: {', '.join(proto['models'])}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = protocol_splits(proto)
    runs = Path(args.runs or "fmnist-runs")
    out = Path(args.out) / "fashion_mnist.csv"
    if args.stage == "curves":
        print(f"wrote {plot_curves(proto, models, runs, Path(args.out))}")
        return 0
    for name in models:
        if args.stage in ("train", "all"):
            train_protocol(proto, name, splits, runs)
        if args.stage == "export":
            print(f"{name}: exported to {export_protocol(proto, name, runs)}")
        if args.stage in ("evaluate", "all"):
            row = evaluate_protocol(proto, name, splits, runs, args)
            table = _merge(out, [row], PROTOCOL_COLUMNS, ("model", "protocol"))
            print(
                f"{name}: test ELBO {row['test_elbo']:.2f}, IWAE_{row['K']} "
                f"{row['iwae_K']:.2f} +- {row['iwae_data_se']:.2f} (test set) "
                f"+- {row['iwae_mc_se']:.3f} (MC); published {row['published']:.2f}",
                flush=True,
            )
    if args.stage in ("evaluate", "all"):
        print(f"wrote {out}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


PROTOCOL_COLUMNS = [
    "model",
    "protocol",
    "parameters",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "train_cpu_hours",
    "best_val_elbo",
    "test_points",
    "test_elbo",
    "test_elbo_data_se",
    "K",
    "iwae_K",
    "iwae_mc_se",
    "iwae_data_se",
    "khat_gt_0.7",
    "published",
    "iwae_minus_published",
    "ais_points",
    "ais_steps",
    "ais_chains",
    "ais_leapfrog",
    "ais_log_px",
    "ais_mc_se",
    "iwae_K_same_points",
    "ais_acceptance",
    "eval_seconds",
    "ais_seconds",
    "torch_threads",
]


def plot_curves(proto: dict, models: list[str], runs: Path, out: Path) -> Path:
    """Best validation ELBO so far against CPU hours, one line per run, beside the published
    test log-likelihoods (a different quantity: IWAE_5000 on the test set lies 2-3 nats above
    the validation ELBO)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = out / "fashion_mnist.csv"
    scores = pd.read_csv(table) if table.is_file() else pd.DataFrame(columns=PROTOCOL_COLUMNS)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, name in enumerate(models):
        history = pd.read_csv(runs / f"{name}-{proto['name']}" / "history.csv")
        hours = history["seconds"].cumsum() / 3600
        best = history["val_elbo"].cummax()
        color = f"C{i}"
        ax.plot(hours, best, color=color, label=f"{name}: best validation ELBO")
        row = scores[(scores["model"] == name) & (scores["protocol"] == proto["name"])]
        if len(row):
            at = float(hours.iloc[int(row["best_epoch"].iloc[0]) - 1])
            ax.plot(at, float(row["iwae_K"].iloc[0]), "x", color=color, ms=8, mew=2)
            ax.errorbar(
                at,
                float(row["iwae_K"].iloc[0]),
                float(row["iwae_data_se"].iloc[0]),
                color=color,
                capsize=3,
                label=f"{name}: test IWAE_5000 of those weights",
            )
        published = proto["models"][name]["published"]
        ax.axhline(published, color=color, ls=":", label=f"{name}: published test log p(x)")
    ax.set_xlabel("CPU hours (one thread)")
    ax.set_ylabel("nats per image")
    ax.set_ylim(-236, -226)
    ax.set_title(f"Fashion-MNIST, {proto['name']} protocol")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out / "fashion_mnist_curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def export_protocol(proto: dict, name: str, runs: Path) -> Path:
    """``runs/<name>-<protocol>``'s best validation weights as the run directory
    ``benchmarks/pretrained/<name>-<data>/`` that ``pretrained:<name>-<data>`` loads: tensors only
    (no optimizer state), the training's config and its whole learning curve."""
    import json

    from pyrogen.atomic import write_text

    run_dir = runs / f"{name}-{proto['name']}"
    best = load_checkpoint(run_dir / "best.pt")
    history = pd.read_csv(run_dir / "history.csv")
    config = json.loads((run_dir / "config.json").read_text())
    spec = proto["models"][name]
    target = ROOT / "benchmarks" / "pretrained" / f"{name}-{proto['data']}"
    target.mkdir(parents=True, exist_ok=True)
    config.update(
        model_file=spec["model"].split(":")[0],  # the zoo's file, found by name
        model_options=spec.get("options", {}),
        pretrained={
            "model": spec["model"],
            "data": proto["data"],
            "protocol": proto["name"],
            "parameters": sum(v.numel() for v in best["model"].values()),
            "epochs_run": len(history),
            "best_epoch": int(best["epoch"]),
            "best_val_elbo": round(float(best["val_elbo"]), 4),
            "early_stopped": len(history) - int(best["epoch"]) >= proto["patience"],
            "train_cpu_hours": round(float(history["seconds"].sum()) / 3600, 2),
            "published_test_log_px": spec["published"],
            "trained_with": "python benchmarks/fashion_mnist.py --protocol "
            f"{proto['name']} --models {name} --stage train --threads 1",
        },
    )
    for key in ("command", "commands", "tensorboard"):
        config.pop(key, None)
    save_checkpoint(
        target / "checkpoint.pt",
        {"model": best["model"], "epoch": int(best["epoch"]), "step": 0},
    )
    write_text(target / "history.csv", history.to_csv(index=False))
    write_text(target / "config.json", json.dumps(config, indent=2) + "\n")
    return target


def evaluate_protocol(
    proto: dict, name: str, splits: dict, runs: Path, args: argparse.Namespace
) -> dict:
    """The best validation weights of ``runs/<name>-<protocol>`` on the protocol's test set."""
    run_dir = runs / f"{name}-{proto['name']}"
    best = run_dir / "best.pt"
    if not best.is_file():
        raise SystemExit(f"{best} does not exist: train first (--stage train)")
    saved = load_checkpoint(best)
    model = protocol_model(proto, name)
    model.load_state_dict(saved["model"])
    model.eval()
    history = pd.read_csv(run_dir / "history.csv")
    test = splits["test"][: args.limit]
    k = int(proto["eval_k"])
    started = time.perf_counter()
    ev = pyrogen.evaluate(
        model.model,
        model.guide,
        test,
        ks=sorted({1, 10, 100, 1000, k}),
        num_particles=k,
        batch_size=int(proto["eval_batch"]),
        seed=proto["seed"],
    )
    eval_seconds = time.perf_counter() - started
    elbo, top = ev.summary.iloc[0], ev.summary.iloc[-1]
    row = {
        "model": name,
        "protocol": proto["name"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": len(history),
        "best_epoch": int(saved["epoch"]),
        # early stopping ends a run `patience` epochs after its best; fewer: interrupted
        "stopped_early": len(history) - int(saved["epoch"]) >= proto["patience"],
        "train_cpu_hours": round(float(history["seconds"].sum()) / 3600, 2),
        "best_val_elbo": float(saved["val_elbo"]),
        "test_points": len(test),
        "test_elbo": elbo["estimate"],
        "test_elbo_data_se": elbo["data_stderr"],
        "K": k,
        "iwae_K": top["estimate"],
        "iwae_mc_se": top["stderr"],
        "iwae_data_se": top["data_stderr"],
        "khat_gt_0.7": top["khat_gt_0.7"],
        "published": proto["models"][name]["published"],
        "iwae_minus_published": top["estimate"] - proto["models"][name]["published"],
        "eval_seconds": round(eval_seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    points = ev.points
    points.to_csv(run_dir / f"test_points-K{k}.csv")
    n_ais = min(args.ais_points, len(test))
    if n_ais:
        result = pyrogen.ais(
            model.model,
            model.guide,
            test[:n_ais],
            num_chains=args.ais_chains,
            num_steps=args.ais_steps,
            leapfrog_steps=args.ais_leapfrog,
            seed=proto["seed"],
        )
        row.update(
            ais_points=n_ais,
            ais_steps=result.num_steps,
            ais_chains=result.num_chains,
            ais_leapfrog=result.leapfrog_steps,
            ais_log_px=float(result.log_px.mean()),
            # the mean of per-point estimates: its Monte Carlo error from each point's error
            ais_mc_se=float(result.stderr.pow(2).sum().sqrt()) / n_ais,
            iwae_K_same_points=float(points[f"iwae_{k}"].iloc[:n_ais].mean()),
            ais_acceptance=float(result.acceptance.mean()),
            ais_seconds=round(result.seconds, 1),
        )
        result.to_frame().to_csv(run_dir / f"test_points-ais-T{result.num_steps}.csv")
    return row


if __name__ == "__main__":
    raise SystemExit(main())
