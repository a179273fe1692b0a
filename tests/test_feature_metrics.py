"""KID and precision/recall (lab.generative.feature_metrics) against torch-fidelity's formulas.

torch-fidelity itself cannot be imported here (it imports torchvision, which does not load
beside this torch build), so its two formulas are copied below from torch-fidelity 0.4.0
(Apache-2.0; torch_fidelity/metric_kid.py `mmd2` and `kernel_poly` with their defaults,
torch_fidelity/metric_prc.py `calculate_precision_recall_full`) and run on the same features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.api import LabError
from lab.generative.feature_metrics import kernel_distance, precision_recall, squared_mmd


def fidelity_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """torch-fidelity 0.4.0 `mmd2(..., unit_diagonal=False, mmd_est="unbiased")`."""
    m = k_xx.shape[0]
    diag_x, diag_y = np.diagonal(k_xx), np.diagonal(k_yy)
    kt_xx_sum = (k_xx.sum(axis=1) - diag_x).sum()
    kt_yy_sum = (k_yy.sum(axis=1) - diag_y).sum()
    k_xy_sum = k_xy.sum(axis=0).sum()
    return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy_sum / (m * m)


def fidelity_kernel_poly(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity 0.4.0 `kernel_poly` at its defaults: degree 3, gamma 1/d, coef0 1."""
    return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + 1) ** 3


def fidelity_precision_recall(features_1: torch.Tensor, features_2: torch.Tensor, neighborhood: int = 3):
    """torch-fidelity 0.4.0 `calculate_precision_recall_full` (features_1 generated, features_2 real)."""
    dist_nn_1 = torch.cdist(features_1, features_1).kthvalue(neighborhood + 1).values
    dist_nn_2 = torch.cdist(features_2, features_2).kthvalue(neighborhood + 1).values
    dist_2_1 = torch.cdist(features_2, features_1)
    dist_1_2 = dist_2_1.T
    recall = (dist_2_1 <= dist_nn_1).any(dim=1).float().mean().item()
    precision = (dist_1_2 <= dist_nn_2).any(dim=1).float().mean().item()
    return precision, recall


def clusters(n: int, centres: torch.Tensor, spread: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(len(centres), (n,), generator=generator)
    return centres[which] + spread * torch.randn(n, centres.shape[1], generator=generator)


CENTRES = torch.randn(10, 16, generator=torch.Generator().manual_seed(0)) * 4  # ten "digits"


def test_the_kernel_distance_is_torch_fidelitys_unbiased_mmd() -> None:
    real, fake = clusters(300, CENTRES, 1.0, 1), clusters(300, CENTRES[:5], 1.5, 2)
    x, y = real.double().numpy(), fake.double().numpy()
    theirs = fidelity_mmd2(fidelity_kernel_poly(x, x), fidelity_kernel_poly(x, y), fidelity_kernel_poly(y, y))
    assert float(squared_mmd(real.double(), fake.double())) == pytest.approx(theirs, rel=1e-9)
    assert float(squared_mmd(real, fake)) == pytest.approx(theirs, rel=1e-5), "float32 kernels, float64 sums"


def test_kid_is_about_zero_for_one_distribution_and_grows_with_the_difference() -> None:
    real, subsets = clusters(2000, CENTRES, 1.0, 1), 20
    same, same_std = kernel_distance(real, clusters(2000, CENTRES, 1.0, 2), subsets=subsets, subset_size=500)
    half, half_std = kernel_distance(real, clusters(2000, CENTRES[:5], 1.0, 3), subsets=subsets, subset_size=500)
    blurred, blurred_std = kernel_distance(real, clusters(2000, CENTRES, 3.0, 4), subsets=subsets, subset_size=500)
    assert abs(same) < same_std, "unbiased: one distribution scores 0 within its spread over subsets"
    assert half > 3 * half_std and blurred > same + 3 * blurred_std / subsets**0.5
    again = kernel_distance(real, clusters(2000, CENTRES[:5], 1.0, 3), subsets=subsets, subset_size=500)
    assert again == (half, half_std), "the same features give the same number"
    with pytest.raises(LabError, match="at least 2 images"):
        kernel_distance(real, real[:1])


def test_precision_and_recall_are_torch_fidelitys_and_tell_collapse_from_blur() -> None:
    real = clusters(600, CENTRES, 1.0, 1)
    collapsed = clusters(600, CENTRES[:3], 1.0, 2)  # three kinds of digit, drawn well
    blurred = clusters(600, CENTRES, 4.0, 3)  # every kind, drawn badly
    for fake in (collapsed, blurred):
        assert precision_recall(real, fake, batch=128) == pytest.approx(fidelity_precision_recall(fake, real), abs=1e-9)
    good = precision_recall(real, clusters(600, CENTRES, 1.0, 4))  # the real distribution: both high
    collapsed_pr, blurred_pr = precision_recall(real, collapsed), precision_recall(real, blurred)
    assert min(good) > 0.7, good
    assert collapsed_pr[0] > 0.9 * good[0] and collapsed_pr[1] < 0.5 * good[1], (collapsed_pr, good)
    assert blurred_pr[0] < 0.5 * good[0] and blurred_pr[1] >= good[1], (blurred_pr, good)
