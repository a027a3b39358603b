"""Key-frame selection with DS3 (004 §2.2.1; Elhamifar, Sapiro & Sastry, TPAMI 2016 [15]).

004 summarises a clip by a few representative frames: DS3 (:mod:`avtag.video.ds3`) on the
Euclidean distances between frame features (:mod:`avtag.video.frame_features`), then "the top
few rows with the largest sums" of the membership matrix Z are the key frames, 4 per clip
(§2.2.1, §3.4). Solvers: :mod:`avtag.video.ds3_admm` (default) and
:mod:`avtag.video.ds3_reference` (cvxpy); baselines: :mod:`avtag.video.keyframe_baselines`.
The names of those modules are re-exported here.

Our documented choices (004 gives no λ; DS3 sets λ = α·λ_max):
  - Regularisation per clip: DS3 is solved on a ladder of α values, from the starting α
    (:data:`avtag.video.ds3.DEFAULT_ALPHAS`, 0.2 for q = ∞) down by factors of
    :data:`ALPHA_STEP` to :data:`MIN_ALPHA`, all in one batched ADMM solve, and the largest α
    whose Z has at least k non-zero rows (row sum > SUPPORT_THRESHOLD) is used. So the key
    frames are DS3's own representatives: at the fixed α = 0.2 only 22 of the 28 key frames on
    the 7 clips of ``../shared/data/videos`` (embedded features, 3 fps, whole clips) were
    non-zero rows of Z (2 on car-detection.mp4 and on the pancake clip), the rest came from
    the fill below; with the search all 28 are (``tests/test_keyframes.py`` checks it). The largest
    such α keeps λ as strong as possible, so DS3 still prefers frames that represent many
    others over lone outliers. ``alpha_search=False`` solves only at the given α.
  - Ranking: non-zero rows by their sums, largest first; rows tied with the k-th sum (within
    1e-6, e.g. the identity's sums of 1) are ranked greedily by encoding cost, each time the
    frame that most lowers Σ_j min_{i∈S} d_ij (DS3's encoding term); remaining ties go to the
    earlier frame.
  - Fallback, documented and reported: when even the smallest α leaves fewer than k non-zero
    rows, the missing key frames are added by the same greedy encoding-cost rule over all
    frames; :attr:`KeyframeSelection.num_from_ds3` says how many came from DS3 itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from avtag.video.ds3 import (  # noqa: F401 - re-exported
    DEFAULT_ALPHAS,
    DEFAULT_Q,
    DS3Solution,
    Norm,
    default_alpha,
    ds3_lambda_max,
    ds3_objective,
    normalise_dissimilarities,
)
from avtag.video.ds3_admm import (  # noqa: F401 - re-exported
    MIN_ITERATIONS,
    SMALL_PROBLEM,
    ds3_admm,
    project_columns_to_simplex,
    prox_row_norms,
)
from avtag.video.ds3_reference import ds3_cvxpy
from avtag.video.frame_features import (  # noqa: F401 - re-exported
    IMAGENET_MEAN,
    IMAGENET_STD,
    AlexNetConv5,
    FrameFeatureExtractor,
    pairwise_distances,
)
from avtag.video.keyframe_baselines import DEFAULT_K, kmedoids_keyframes, uniform_keyframes

SUPPORT_THRESHOLD = 1e-2  # a row whose sum is below this represents (almost) nothing
ALPHA_STEP = 0.7  # each rung of the α ladder is 0.7 times the previous one
MIN_ALPHA = 1e-3  # the ladder's floor (at α ≤ 0.01 the identity is usually already optimal)
_TIE = 1e-6
LADDER_CHUNK = 4  # rungs solved together after the first (one batched ADMM solve)


def alpha_ladder(start: float, step: float = ALPHA_STEP, floor: float = MIN_ALPHA) -> list[float]:
    """α values tried by the per-clip search, largest first: start, start·step, ... ≥ floor."""
    if not start > 0:
        raise ValueError(f"alpha must be positive, got {start}")
    ladder = [float(start)]
    while ladder[-1] * step >= floor:
        ladder.append(ladder[-1] * step)
    return ladder


def _greedy(dist: np.ndarray, chosen: list[int], k: int, candidates: np.ndarray) -> list[int]:
    """Extend ``chosen`` to k frames from ``candidates``, each lowering Σ_j min_{i∈S} d_ij most."""
    chosen = list(chosen)
    n = dist.shape[0]
    best = dist[chosen].min(0) if chosen else np.full(n, np.inf)
    big = float(dist.max()) * 2 if dist.size else 1.0
    allowed = np.zeros(n, dtype=bool)
    allowed[candidates] = True
    allowed[chosen] = False
    while len(chosen) < k and allowed.any():
        cost = np.minimum(dist, best[None, :])
        cost = np.where(np.isinf(cost), big, cost).sum(1)
        cost[~allowed] = np.inf
        pick = int(np.argmin(cost))
        chosen.append(pick)
        allowed[pick] = False
        best = np.minimum(best, dist[pick])
    return chosen


def rank_representatives(Z: Tensor, D: Tensor, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The k key frames of a DS3 solution, their row sums, and how many are DS3's own rows.

    See the module doc: non-zero rows by sum (ties at the k-th sum by encoding cost), then the
    greedy fallback over all frames when Z has fewer than k non-zero rows.
    """
    sums = torch.as_tensor(Z).sum(-1).double().cpu().numpy()
    dist = torch.as_tensor(D).double().cpu().numpy()
    n = len(sums)
    k = min(k, n)
    support = np.flatnonzero(sums > SUPPORT_THRESHOLD)
    order = support[np.argsort(-sums[support], kind="stable")]
    if len(order) > k:
        kth = sums[order[k - 1]]
        sure = [int(i) for i in order if sums[i] > kth + _TIE]
        tied = np.asarray([i for i in order if abs(sums[i] - kth) <= _TIE], dtype=np.int64)
        chosen = _greedy(dist, sure, k, tied)
    else:
        chosen = [int(i) for i in order]
    from_ds3 = len(chosen)
    if len(chosen) < k:
        chosen = _greedy(dist, chosen, k, np.arange(n))
    chosen_arr = np.asarray(chosen, dtype=np.int64)
    return chosen_arr, sums[chosen_arr], from_ds3


def ds3_representatives(Z: Tensor, D: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of Z with the largest sums (004 §2.2.1) and those sums, in rank order."""
    indices, sums, _ = rank_representatives(Z, D, k)
    return indices, sums


# --------------------------------------------------------------------------- high level


@dataclass
class KeyframeSelection:
    """Selected key frames, sorted by time, with a score each (DS3: row sum of Z; k-medoids:
    cluster size; uniform: segment length) and what produced them."""

    indices: np.ndarray  # (k,) int64, ascending
    scores: np.ndarray  # (k,) float64, aligned with indices
    method: str
    info: dict = field(default_factory=dict)
    num_from_ds3: int | None = None  # DS3 only: key frames that are DS3's own non-zero rows


def _sorted_selection(indices: np.ndarray, scores: np.ndarray, method: str,
                      info: dict, num_from_ds3: int | None = None) -> KeyframeSelection:
    order = np.argsort(indices, kind="stable")
    return KeyframeSelection(np.asarray(indices, dtype=np.int64)[order],
                             np.asarray(scores, dtype=np.float64)[order], method, info,
                             num_from_ds3)


def _features_from(features, frames, extractor) -> Tensor:
    if features is None:
        if frames is None or extractor is None:
            raise ValueError("give features, or frames together with an extractor")
        features = extractor(frames)
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
    return features.float() if not features.is_floating_point() else features


def _support(Z: Tensor) -> Tensor:
    """Number of non-zero rows of each Z in a batch (B, n, n) -> (B,)."""
    return (Z.sum(-1) > SUPPORT_THRESHOLD).sum(-1)


def _solve_searching(D: Tensor, k: int, q: Norm, alpha: float, solver: str, search: bool
                     ) -> tuple[DS3Solution, float, int]:
    """DS3 on one clip at the largest α of the ladder giving ≥ k non-zero rows (module doc).

    Returns the solution, the α used and its position on the ladder.
    """
    ladder = alpha_ladder(alpha) if search else [float(alpha)]
    lam_max = ds3_lambda_max(D, q)
    if solver == "cvxpy":
        for rung, a in enumerate(ladder):
            solution = ds3_cvxpy(D.double(), lam=float(a * lam_max), q=q)
            if int((solution.Z.sum(-1) > SUPPORT_THRESHOLD).sum()) >= k or rung == len(ladder) - 1:
                return solution, a, rung
    if solver != "admm":
        raise ValueError(f"unknown solver {solver!r} (admm, cvxpy)")
    # Rung 0 alone first (enough on many clips), then the rest in batches of LADDER_CHUNK.
    rung, chunk = 0, 1
    while True:
        rungs = ladder[rung : rung + chunk]
        lams = torch.tensor(rungs, dtype=D.dtype, device=D.device) * lam_max
        batch = ds3_admm(D.unsqueeze(0).expand(len(rungs), -1, -1), lam=lams, q=q)
        enough = (_support(batch.Z) >= k).nonzero()
        if len(enough) or rung + chunk >= len(ladder):
            b = int(enough[0]) if len(enough) else len(rungs) - 1
            return _pick(batch, b), rungs[b], rung + b
        rung, chunk = rung + chunk, LADDER_CHUNK


def _pick(batch: DS3Solution, b: int) -> DS3Solution:
    """Problem ``b`` of a batched solution as a single solution."""
    converged = batch.converged[b] if torch.is_tensor(batch.converged) else batch.converged
    iterations = batch.info.get("iterations", [batch.iterations] * (b + 1))[b]
    return DS3Solution(batch.Z[b], batch.objective[b], batch.lam[b], int(iterations),
                       bool(converged), batch.solver, {})


def select_keyframes(
    features: np.ndarray | Tensor | None = None,
    *,
    frames: np.ndarray | None = None,
    extractor: FrameFeatureExtractor | None = None,
    k: int = DEFAULT_K,
    method: Literal["ds3", "uniform", "kmedoids"] = "ds3",
    solver: Literal["admm", "cvxpy"] = "admm",
    q: Norm = DEFAULT_Q,
    alpha: float | None = None,
    alpha_search: bool = True,
    seed: int = 0,
) -> KeyframeSelection:
    """Pick k key frames of one clip from per-frame features (or frames + an extractor).

    ``method="ds3"`` is 004's choice (§2.2.1): DS3 on the Euclidean distances between frame
    features, top-k row sums of Z, with α searched per clip from ``alpha`` down (module doc)
    unless ``alpha_search=False``. ``"uniform"`` and ``"kmedoids"`` are baselines.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if method == "uniform":
        n = len(features) if features is not None else len(frames)
        idx = uniform_keyframes(n, k)
        return _sorted_selection(idx, np.full(len(idx), n / max(len(idx), 1)), "uniform", {})
    x = _features_from(features, frames, extractor)
    n = x.shape[0]
    if n == 0:
        raise ValueError("no frames to select from")
    D = normalise_dissimilarities(pairwise_distances(x))
    if method == "kmedoids":
        idx, sizes = kmedoids_keyframes(D, k, seed)
        return _sorted_selection(idx, sizes, "kmedoids", {})
    if method != "ds3":
        raise ValueError(f"unknown method {method!r} (ds3, uniform, kmedoids)")
    if n <= k:
        return _sorted_selection(np.arange(n), np.ones(n), "ds3", {"note": "n <= k: all frames"}, n)
    start = default_alpha(q) if alpha is None else float(alpha)
    solution, used, rung = _solve_searching(D, k, q, start, solver, alpha_search)
    idx, sums, from_ds3 = rank_representatives(solution.Z, D, k)
    info = _solution_info(solution, None)
    info.update(alpha=used, alpha_rung=rung)
    return _sorted_selection(idx, sums, "ds3", info, from_ds3)


def _solution_info(solution: DS3Solution, b: int | None) -> dict:
    pick = (lambda t: t) if b is None else (lambda t: t[b] if torch.is_tensor(t) and t.ndim else t)
    converged = pick(solution.converged)
    return {
        "solver": solution.solver,
        "objective": float(pick(solution.objective)),
        "lambda": float(pick(solution.lam)),
        "iterations": solution.iterations,
        "converged": bool(converged),
    }


def select_keyframes_batch(
    features: Sequence[np.ndarray | Tensor],
    k: int = DEFAULT_K,
    q: Norm = DEFAULT_Q,
    alpha: float | None = None,
    alpha_search: bool = True,
) -> list[KeyframeSelection]:
    """DS3 key frames for several clips at once: one batched ADMM solve over clips (padded to
    a common length, masks keep padding out) × the α ladder, on the device of the features."""
    if not features:
        return []
    tensors = [_features_from(f, None, None) for f in features]
    lengths = [t.shape[0] for t in tensors]
    if min(lengths) == 0:
        raise ValueError("a clip has no frames to select from")
    n_max, dim = max(lengths), tensors[0].shape[1]
    device, dtype = tensors[0].device, tensors[0].dtype
    padded = torch.zeros(len(tensors), n_max, dim, device=device, dtype=dtype)
    mask = torch.zeros(len(tensors), n_max, dtype=torch.bool, device=device)
    for b, t in enumerate(tensors):
        padded[b, : lengths[b]] = t
        mask[b, : lengths[b]] = True
    D = normalise_dissimilarities(pairwise_distances(padded), mask)
    start = default_alpha(q) if alpha is None else float(alpha)
    ladder = alpha_ladder(start) if alpha_search else [start]
    rungs = len(ladder)
    all_equal = len(set(lengths)) == 1
    D_rep = D.repeat_interleave(rungs, 0)  # clip-major: clip b, rung r at b * rungs + r
    mask_rep = None if all_equal else mask.repeat_interleave(rungs, 0)
    lam_max = ds3_lambda_max(D, q, None if all_equal else mask)
    lams = (lam_max.view(-1, 1) * torch.tensor(ladder, dtype=dtype, device=device)).reshape(-1)
    solution = ds3_admm(D_rep, lam=lams, q=q, mask=mask_rep)
    selections = []
    for b, n in enumerate(lengths):
        if n <= k:
            selections.append(_sorted_selection(np.arange(n), np.ones(n), "ds3",
                                                {"note": "n <= k: all frames"}, n))
            continue
        rows = slice(b * rungs, (b + 1) * rungs)
        support = _support(solution.Z[rows, :n, :n])
        enough = (support >= k).nonzero()
        rung = int(enough[0]) if len(enough) else rungs - 1
        flat = b * rungs + rung
        idx, sums, from_ds3 = rank_representatives(solution.Z[flat, :n, :n], D[b, :n, :n], k)
        info = _solution_info(solution, flat)
        info.update(alpha=ladder[rung], alpha_rung=rung)
        selections.append(_sorted_selection(idx, sums, "ds3", info, from_ds3))
    return selections
