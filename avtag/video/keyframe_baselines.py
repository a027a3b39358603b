"""Key-frame baselines that 004 §2.2.1 argues against: equal intervals and k-medoids.

``uniform`` takes the centre frames of k equal segments; ``kmedoids`` is PAM (BUILD then
SWAP) on the same dissimilarities DS3 uses (our documented baseline choice).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

DEFAULT_K = 4  # 004 §3.4: four key frames per clip


def uniform_keyframes(n: int, k: int = DEFAULT_K) -> np.ndarray:
    """Centre frames of k equal segments of n frames (004's "equal intervals" strawman)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, n)
    return np.unique(np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64))


def kmedoids_keyframes(
    D: np.ndarray | Tensor, k: int = DEFAULT_K, seed: int = 0, max_swaps: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """k-medoids (PAM: greedy BUILD, then best-improvement SWAP) on a dissimilarity matrix.

    Returns (medoid indices in BUILD/SWAP order, cluster sizes). ``seed`` only breaks exact
    ties between equally good medoids.
    """
    dist = torch.as_tensor(D).double().cpu().numpy()
    n = dist.shape[0]
    k = min(k, n)
    jitter = np.random.default_rng(seed).random(n) * 1e-12  # deterministic tie-breaking
    # BUILD: greedily add the medoid that lowers the total distance most.
    medoids = [int(np.argmin(dist.sum(1) + jitter))]
    nearest = dist[medoids[0]].copy()
    while len(medoids) < k:
        gain = np.maximum(nearest[None, :] - dist, 0.0).sum(1) + jitter
        gain[medoids] = -np.inf
        pick = int(np.argmax(gain))
        medoids.append(pick)
        nearest = np.minimum(nearest, dist[pick])
    # SWAP: replace a medoid by a non-medoid while the total cost decreases.
    for _ in range(max_swaps):
        to_medoids = dist[medoids]  # (k, n)
        order = np.argsort(to_medoids, axis=0)
        first = to_medoids[order[0], np.arange(n)]
        second = to_medoids[order[1], np.arange(n)] if k > 1 else np.full(n, np.inf)
        current = first.sum()
        # cost after swapping medoid slot m for candidate h: (k, n_candidates)
        best_without = np.where(order[0][None, :] == np.arange(k)[:, None], second[None, :],
                                first[None, :])  # (k, n): nearest distance once slot m is gone
        new_cost = np.minimum(best_without[:, None, :], dist[None, :, :]).sum(-1)
        new_cost[:, medoids] = np.inf
        slot, candidate = np.unravel_index(np.argmin(new_cost), new_cost.shape)
        if new_cost[slot, candidate] >= current - 1e-12 * max(current, 1.0):
            break
        medoids[slot] = int(candidate)
    labels = np.argmin(dist[medoids], axis=0)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    return np.asarray(medoids, dtype=np.int64), sizes


