"""The summary's numbers against values worked out by hand, and the k = K error's calibration."""

import math

import numpy as np
import pandas as pd
import torch
from ground_truth import make_ppca, set_diagonal_guide

from pyrogen.bounds import estimate, iwae, log_weights, summarize


def test_ess_and_khat_share_have_their_exact_values():
    # weights (1,1,1,1), (1,1,0,0), (1,0,0,0): ESS = 1 / sum w~^2 = 4, 2, 1 (0 as e^-800)
    lw = torch.tensor([[0.0, 0, 0], [0, 0, -800], [0, -800, -800], [0, -800, -800]])
    pts = estimate(lw, [1, 4])
    assert pts["ess"].tolist() == [4.0, 2.0, 1.0]
    assert pts["ess_1"].tolist() == [1.0, 1.0, 1.0]
    # four draws are too few to fit a tail: k-hat is NaN and so is its share, never 0 %
    assert pts["khat"].isna().all()
    s = summarize(pts, [1, 4])
    assert math.isnan(s["khat_gt_0.7"].iloc[-1]) and math.isnan(s["khat"].iloc[-1])
    assert s["ess"].tolist() == [1.0, 2.0]  # medians of ess_1 and ess_4
    # the share counts only points where k-hat was computed: 1 of 3 here
    pts = pts.assign(khat=[0.2, 0.9, np.nan])
    pts = pd.concat([pts, pts.iloc[[0]].assign(khat=-np.inf)], ignore_index=True)
    s = summarize(pts, [1, 4])
    assert s["khat_gt_0.7"].iloc[-1] == 1 / 3
    assert s["khat"].iloc[-1] == 0.2  # median of (-inf, 0.2, 0.9)


def test_per_point_gap_is_never_negative():
    # log mean exp(w) >= mean(w) on the same pool (Jensen): the per-point gap's sign is exact
    torch.manual_seed(0)
    lw = torch.randn(50, 200, dtype=torch.float64) * torch.linspace(0.01, 5, 200)
    pts = estimate(lw, [1, 10, 50])
    assert (pts["gap"] >= 0).all() and (pts["gap"] > 0).all()
    assert np.allclose(pts["gap"], pts["log_px"] - pts["elbo"])


def test_k_equals_k_standard_error_is_calibrated_on_a_ppca_point():
    # one group of K: the delta-method error; repeat the whole estimate and compare its spread
    m, x = make_ppca(n=1)
    set_diagonal_guide(m, widen=1.6, shift=0.2)
    estimates, errors = [], []
    for _ in range(150):
        est, se = iwae(log_weights(m.model, m.guide, x, num_particles=500), 500)
        estimates.append(est.item())
        errors.append(se.item())
    ratio = np.std(estimates, ddof=1) / np.mean(errors)
    assert 0.75 <= ratio <= 1.3, f"spread / mean reported error = {ratio:.3f}"
