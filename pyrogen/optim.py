r"""Optimizers beyond torch.optim's, for :func:`pyrogen.fit`'s ``optimizer`` argument.

:class:`AdamNormGrad` is Adam on normalized gradients: before each update every parameter
tensor's gradient g is replaced by g / (||g||_2 + 1e-7), its own L2 norm, so each tensor moves by
about lr per step whatever the scale of its gradient. The VampPrior and Exemplar VAE papers
train with it (their code calls it AdamNormGrad).

References:
    | VAE with a VampPrior (Tomczak & Welling, 2018) | https://arxiv.org/abs/1705.07120
"""

from __future__ import annotations

import torch

__all__ = ["AdamNormGrad", "OPTIMIZERS"]


class AdamNormGrad(torch.optim.Adam):
    """torch.optim.Adam on per-tensor L2-normalized gradients (same arguments, same state)."""

    eps_norm = 1e-7

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 -- torch.optim.Optimizer's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + self.eps_norm)
        super().step()
        return loss


#: optimizers by the name a TOML protocol or the command line gives
OPTIMIZERS = {"adam": torch.optim.Adam, "adam-normgrad": AdamNormGrad}
