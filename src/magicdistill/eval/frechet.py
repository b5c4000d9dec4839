"""Distances between feature distributions: Fréchet (FID / FVD) and KID. Pure functions of features.

All arithmetic is float64: covariance products of a few hundred dimensions lose the small
eigenvalues in float32, and the Fréchet distance is a difference of large traces.
"""

from __future__ import annotations

import torch


def statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64 (as numpy.cov in FID/FVD code)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D) for a covariance, got {tuple(features.shape)}")
    x = features.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix via eigh; tiny negative eigenvalues (rounding) clamp to 0."""
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Squared 2-Wasserstein distance between N(mu1, sigma1) and N(mu2, sigma2):

        d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

    tr((S1 S2)^{1/2}) is computed as tr((A S2 A)^{1/2}) with A = S1^{1/2}: A S2 A is symmetric PSD
    and similar to S1 S2 (same eigenvalues), so an eigh gives it exactly, with no complex parts or
    singular-matrix retries (scipy.linalg.sqrtm on the non-symmetric S1 S2 needs both).
    """
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"mismatched statistics: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}")
    a = _psd_sqrt(s1)
    m = a @ s2 @ a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    return max(d.item(), 0.0)  # a true distance is >= 0; only rounding makes identical sets slightly negative


def frechet_from_features(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance(*statistics(x), *statistics(y))


def _cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() @ b.double().T / a.shape[1] + 1) ** 3


def _mmd2_from_kernels(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    m = kxx.shape[0]
    off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    return (off(kxx) + off(kyy) - 2 * kxy.mean()).item()


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between two equal-size sets (m, D) with the cubic kernel k(a, b) = (a.b / D + 1)^3
    (Bińkowski et al. 2018): mean off-diagonal k(x, x') + mean off-diagonal k(y, y') - 2 mean k(x, y)."""
    if y.shape != x.shape or x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need two sets of the same shape (m >= 2, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    return _mmd2_from_kernels(_cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y))


def kid(x: torch.Tensor, y: torch.Tensor, *, num_subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> float:
    """Kernel Inception Distance: the mean over ``num_subsets`` random subsets (of size
    min(subset_size, N, M), drawn without replacement) of the unbiased polynomial MMD^2. Unbiased,
    so it can be slightly negative when both sets come from one distribution."""
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {x.shape[0]} and {y.shape[0]}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    full = x.shape[0] * y.shape[0] <= 4096 ** 2  # small sets: kernels once, subsets by indexing
    if full:
        kxx, kyy, kxy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    total = 0.0
    for _ in range(num_subsets):
        ix = torch.randperm(x.shape[0], generator=g)[:m]
        iy = torch.randperm(y.shape[0], generator=g)[:m]
        total += (_mmd2_from_kernels(kxx[ix][:, ix], kyy[iy][:, iy], kxy[ix][:, iy]) if full
                  else polynomial_mmd2(x[ix], y[iy]))
    return total / num_subsets


def perceptual_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Paired distance of features (N, D): mean over pairs of |a/|a| - b/|b||^2, in [0, 4].
    On the LPIPS features of vgg16.pt this is StyleGAN2-ADA's LPIPS up to that normalisation."""
    if a.shape != b.shape:
        raise ValueError(f"paired features must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = torch.nn.functional.normalize(a.double(), dim=1), torch.nn.functional.normalize(b.double(), dim=1)
    return (a - b).pow(2).sum(1).mean().item()
