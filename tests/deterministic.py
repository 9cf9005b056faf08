"""A model/guide pair whose ELBO has no Monte Carlo noise, for tests that compare training or
evaluation with a computation done by hand (imported by tests in any folder: conftest puts
tests/ on sys.path)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen


class MapFactor(pyrogen.GenerativeModel):
    """Linear-Gaussian factor model with a point-mass (MAP) guide.

    p(z) = N(0, I_k), p(x | z) = N(W z + b, I_D); q(z | x) = Delta(A x + c). The Delta guide is
    reparametrized and draws no noise, so Trace_ELBO's loss -[log p(x, z) - log q(z | x)] with
    z = A x + c is a deterministic function of the parameters and the batch: a step's value, its
    gradient and the validation ELBO can be computed by hand, and one process and two processes
    take the same steps up to floating-point rounding, which a guide that samples (each rank from
    its own stream) could not give.
    """

    def __init__(self, data_dim: int = 6, latent_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.encoder = nn.Linear(data_dim, latent_dim)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x), event_dim=1))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per point: log p(x | z) and log p(z) at z = A x + c (the Delta guide's log q is 0)."""
        z = self.encoder(x)
        return (
            dist.Normal(self.decoder(z), 1.0).log_prob(x).sum(-1),
            dist.Normal(0.0, 1.0).log_prob(z).sum(-1),
        )
