"""The AIS benchmark script runs with tiny arguments, and its hand-written loop is a valid AIS."""

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("memory", ["", pytest.param("2,4", marks=pytest.mark.slow)])
def test_ais_speed_benchmark_runs_with_tiny_arguments(tmp_path, memory):
    import ais_speed

    out = tmp_path / "ais.csv"
    tiny = "--points 4 --chains 3 --steps 4 --leapfrog 2 --repeats 1 --dim 6 --hidden 5"
    args = [*tiny.split(), "--latent", "2", "--memory-chains", memory, "--out", str(out)]
    table = ais_speed.main(args)
    read = pd.read_csv(out)
    assert len(read) == len(table) == 2 + len(memory.split(",")) * bool(memory)
    speed = read[read["measure"] == "speed"].set_index("method")
    assert (speed["ms_per_transition"] > 0).all() and speed.loc["pyrogen", "ratio_to_hand"] > 0
    if memory:
        mem = read[read["measure"] == "memory"]
        assert list(mem["chains"]) == [2, 4] and (mem["peak_rss_mib"] > 0).all()


def test_hand_written_ais_is_exact_when_every_weight_is():
    # with a decoder that ignores z and q = prior, every increment is log p(x): the loop sums
    # the schedule's increments to exactly that
    import ais_speed
    from vae import VAE

    torch.manual_seed(0)
    vae = VAE(6, 2, (5,))
    with torch.no_grad():
        for layer in vae.decoder:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
        vae.encoder.net[-1].weight.zero_()
        vae.encoder.net[-1].bias.zero_()
        vae.encoder.net[-1].bias[2:].fill_(0.5413)  # softplus(0.5413) + 1e-5 = 1.0
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    est = ais_speed.hand_ais(vae, x, chains=4, steps=5, leapfrog=2, step_size=0.3)
    logits = vae.decoder(torch.zeros(1, 2))
    exact = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits.expand_as(x), x, reduction="none"
    ).sum(-1)
    assert torch.allclose(est.float(), exact, atol=1e-3), (est, exact)
