"""Sample metrics beside the Frechet distance, in the same classifier features.

- `kernel_distance`: the kernel inception distance (Binkowski et al. 2018) in the lab's
  classifier features (KID), the unbiased estimate of the squared MMD with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets, with its std
  over them. Unlike the Frechet distance it is unbiased, so it can be compared across
  sample sizes, and two draws of the same distribution score about 0 (slightly negative is
  possible).
- `precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019). Each set's
  manifold is the union of balls around its points reaching their k-th nearest neighbour;
  precision is the share of generated points inside the real manifold (are samples
  realistic?), recall the share of real points inside the generated manifold (is the data's
  variety covered?). A model that draws a few kinds of digit well scores high precision and
  low recall; one that draws every kind badly the reverse.

Both follow torch-fidelity's formulas and defaults (100 subsets of 1,000 for KID, k = 3);
`tests/test_feature_metrics.py` checks them against its code on the same features.
"""

from __future__ import annotations

import torch

from lab.api import LabError

KID_SUBSETS, KID_SUBSET_SIZE, NEIGHBOURS = 100, 1000, 3


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def squared_mmd(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between two equally sized sets (kernel diagonals left
    out of the within-set sums). Kernels in the features' precision (float32, as
    torch-fidelity computes them), sums in float64."""
    m = real.shape[0]
    k_rr, k_ff, k_rf = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)

    def total(k: torch.Tensor) -> torch.Tensor:
        return k.sum(dtype=torch.float64)

    within = (total(k_rr) - total(k_rr.diagonal()) + total(k_ff) - total(k_ff.diagonal())) / (m * (m - 1))
    return within - 2.0 * total(k_rf) / (m * m)


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS,
                    subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` random subsets of `subset_size` of
    each set (fewer when a set is smaller), drawn from `seed`: the same features give the
    same number."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise LabError("a kernel distance needs at least 2 images on each side")
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    generator = torch.Generator().manual_seed(seed)
    values = torch.stack([
        squared_mmd(real[torch.randperm(len(real), generator=generator)[:size]],
                    fake[torch.randperm(len(fake), generator=generator)[:size]])
        for _ in range(subsets)])
    return float(values.mean()), float(values.std(unbiased=False))


def neighbour_radii(points: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest other point (itself is the first)."""
    return torch.cat([torch.cdist(part, points).kthvalue(k + 1, dim=1).values for part in points.split(batch)])


def inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    """Whether each point lies in some centre's ball."""
    return torch.cat([(torch.cdist(part, centres) <= radii).any(dim=1) for part in points.split(batch)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS,
                     batch: int = 2048) -> tuple[float, float]:
    """(precision, recall) of `fake` against `real` with k-NN manifolds; distances in blocks of
    `batch` rows, so 10,000 against 10,000 needs no 400 MB matrix."""
    if min(len(real), len(fake)) <= k:
        raise LabError(f"precision and recall with k={k} need more than {k} images on each side")
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    precision = inside(fake, real, neighbour_radii(real, k, batch), batch).float().mean()
    recall = inside(real, fake, neighbour_radii(fake, k, batch), batch).float().mean()
    return float(precision), float(recall)
