"""k-means for product quantization: k-means++ seeding, Lloyd iterations, empty clusters
re-seeded from the points farthest from their centroid."""

from __future__ import annotations

import torch


def kmeans(points: torch.Tensor, k: int, iterations: int = 20, seed: int = 0,
           init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster (N, D) ``points`` into ``k`` centroids: ``(centroids (k, D), assignments (N,))``.

    :param init: (k, D) starting centroids (a warm start from an earlier codebook of points
        that moved a little); without it, k-means++ seeding.
    :raises ValueError: more centroids than points.
    """
    n = points.size(0)
    if k > n:
        raise ValueError(f"{k} centroids for {n} sub-vectors: use at most {n} centroids")
    if init is not None and init.shape != (k, points.size(1)):
        raise ValueError(f"k-means started from centroids of shape {tuple(init.shape)}, expected {(k, points.size(1))}")
    generator = torch.Generator().manual_seed(seed)
    points = points.float()
    centroids = _seed(points, k, generator) if init is None else init.detach().float().clone()
    assignments = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        distances = torch.cdist(points, centroids)  # (N, k)
        assignments = distances.argmin(dim=1)
        counts = torch.bincount(assignments, minlength=k)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():  # re-seed each empty cluster at a point far from its centroid
            error = distances.gather(1, assignments[:, None]).squeeze(1)  # (N,)
            centroids[empty] = points[error.topk(empty.numel()).indices]
    assignments = torch.cdist(points, centroids).argmin(dim=1)
    return centroids, assignments


def _seed(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ on a sample of at most 20,000 points (distinct starting centroids)."""
    sample = points[torch.randperm(points.size(0), generator=generator)[:20_000]]
    chosen = [sample[torch.randint(sample.size(0), (1,), generator=generator)].squeeze(0)]
    nearest = (sample - chosen[0]).pow(2).sum(1)  # (S,) squared distance to the closest chosen
    for _ in range(k - 1):
        if nearest.sum() <= 0:  # fewer distinct points than k: duplicates fill the rest
            index = torch.randint(sample.size(0), (1,), generator=generator)
        else:
            index = torch.multinomial(nearest, 1, generator=generator)
        chosen.append(sample[index].squeeze(0))
        nearest = torch.minimum(nearest, (sample - chosen[-1]).pow(2).sum(1))
    return torch.stack(chosen)
