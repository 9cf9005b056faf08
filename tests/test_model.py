"""The model/guide contract check: every way a pair can break it is an error naming the site."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrogen
from pyrogen.errors import ContractError


class ScoreOnlyNormal(dist.Normal):
    """A Normal that offers no reparametrized sampler, as a score-function-only family would."""

    has_rsample = False


class Pair(pyrogen.GenerativeModel):
    """A small VAE-like pair whose guide can be broken in one way at a time."""

    def __init__(self, data_dim=6, latent_dim=2, breakage=None):
        super().__init__()
        self.data_dim, self.latent_dim, self.breakage = data_dim, latent_dim, breakage
        self.dec = nn.Linear(latent_dim, data_dim)
        self.enc = nn.Linear(data_dim, 2 * latent_dim)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            if self.breakage == "extra_model_latent":
                pyro.sample("u", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        b = self.breakage
        if b == "outside_plate":
            pyro.sample("z", dist.Normal(loc.mean(0), raw.exp().mean(0)).to_event(1))
            return
        with pyro.plate("data", x.shape[0]):
            if b == "missing":
                return
            if b == "not_reparam":
                q = ScoreOnlyNormal(loc, raw.exp()).to_event(1)
                pyro.sample("z", q)
                return
            if b == "shape":
                pyro.sample("z", dist.Normal(loc[..., :1], raw[..., :1].exp()).to_event(1))
                return
            if b == "event_dims":
                pyro.sample("z", dist.Normal(loc, raw.exp()))
                return
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))


def binary(n=5, d=6):
    return torch.bernoulli(torch.full((n, d), 0.5))


def test_a_valid_pair_passes_and_reports_its_sites():
    info = pyrogen.check_model(Pair(), binary())
    assert info.latent == ("z",)
    assert info.observed == ("x",)
    assert info.max_plate_nesting == 1 and info.data_dim == -1


@pytest.mark.parametrize(
    "breakage, names",
    [
        ("missing", ["'z'", "no site in the guide"]),
        ("extra_model_latent", ["'u'", "no site in the guide"]),
        ("not_reparam", ["'z'", "not reparametrizable"]),
        ("shape", ["'z'", "shape", "[5, 1]", "[5, 2]"]),
        ("event_dims", ["site z", "plate('data')"]),
    ],
)
def test_broken_pairs_name_the_site(breakage, names):
    with pytest.raises(ContractError) as err:
        pyrogen.check_model(Pair(breakage=breakage), binary())
    for piece in names:
        assert piece in str(err.value), f"{piece!r} not in: {err.value}"


def test_guide_site_the_model_lacks_is_named():
    class Extra(Pair):
        def guide(self, x):
            loc, raw = self.enc(x).chunk(2, -1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))
                pyro.sample("w", dist.Normal(x.new_zeros(1), 1.0).to_event(1))

    with pytest.raises(ContractError, match="guide site 'w' is not a site of the model"):
        pyrogen.check_model(Extra(), binary())


def test_grey_levels_for_a_bernoulli_suggest_binarizing():
    x = binary()
    x[3, 2] = 0.37
    with pytest.raises(ContractError) as err:
        pyrogen.check_model(Pair(), x)
    msg = str(err.value)
    assert "'x'" in msg and "rows 3" in msg and "binariz" in msg


def test_latent_outside_the_data_plate_is_refused_for_per_datapoint_weights():
    class Global(Pair):
        def model(self, x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    m = Global(breakage="outside_plate")
    pyrogen.check_model(m, binary())  # fine for training
    with pytest.raises(ContractError, match="latent site 'z' .* outside the data plate 'data'"):
        pyrogen.check_model(m, binary(), per_datapoint=True)


def test_observation_outside_the_data_plate_is_refused():
    class NoPlate(Pair):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(2), obs=x)

    with pytest.raises(ContractError, match="observed site 'x' is in no plate"):
        pyrogen.check_model(NoPlate(), binary())


def test_unplated_batch_dims_ask_for_to_event():
    class NoEvent(Pair):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z)), obs=x)

    with pytest.raises(ContractError, match="site x .*to_event"):
        pyrogen.check_model(NoEvent(), binary())


def test_default_sample_draws_the_observation_mean():
    m = Pair()
    x = m.sample(7)
    assert x.shape == (7, 6)
    assert bool(((x > 0) & (x < 1)).all())  # Bernoulli means, not draws


def test_grey_levels_beyond_the_probe_rows_are_found_in_the_whole_data():
    x = binary(n=50)
    x[[17, 42], 0] = 0.5
    pyrogen.check_model(Pair(), x[:8])  # the probe alone looks fine
    with pytest.raises(ContractError, match=r"rows 17, 42; grey levels need binarizing"):
        pyrogen.check_model(Pair(), x[:8], all_rows=x)


def test_the_remembered_support_check_sees_an_in_place_change():
    """A tensor that passed the all-rows check is not checked again until it changes: writing a
    grey level into it (in place) is caught on the next check, as is a fresh grey tensor."""
    import sys
    from pathlib import Path

    import pytest
    import torch

    from pyrogen import check_model
    from pyrogen.errors import ContractError

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from vae import VAE

    model = VAE(12, latent_dim=2, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((50, 12), 0.3), generator=torch.Generator().manual_seed(0))
    check_model(model, x[:8], all_rows=x)
    check_model(model, x[:8], all_rows=x)  # remembered
    x[40, 3] = 0.5
    with pytest.raises(ContractError, match="40"):
        check_model(model, x[:8], all_rows=x)
    y = x.clone()
    with pytest.raises(ContractError, match="40"):
        check_model(model, y[:8], all_rows=y)
