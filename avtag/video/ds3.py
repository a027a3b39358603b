"""The DS3 problem of 004 §2.2.1 (Elhamifar, Sapiro & Sastry, TPAMI 2016 [15]).

With a dissimilarity matrix ``D`` (``d_ij`` = Euclidean distance between the features of
frames i and j) and a membership matrix ``Z`` (``z_ij`` = how much frame i represents frame
j), DS3 solves the convex relaxation of 004's §2.2.1 problem,

    min_Z  λ Σ_i ||z_i||_q + Σ_ij z_ij d_ij    s.t.  z_ij ≥ 0,  Σ_i z_ij = 1  for every j,

(``z_i`` the i-th row, q = 2 or ∞, DS3 eq. (5)). This module holds what both solvers share
(:mod:`avtag.video.ds3_admm`, :mod:`avtag.video.ds3_reference`): λ_max, the objective, the
solution type and the scaling of D.

λ is set relative to the data as in DS3: ``λ = α · λ_max(D)``, where λ_max is the smallest λ
for which a single representative is optimal (DS3 §4, Theorem 5; the same formula as the
authors' reference code).  With ℓ = argmin_i Σ_j d_ij (the row of the "medoid") and d_i the
i-th row of D,

    q = 2:  λ_max = max_{i≠ℓ}  (√n / 2) · ||d_i − d_ℓ||₂² / (1ᵀ(d_i − d_ℓ))
    q = ∞:  λ_max = max_{i≠ℓ}  ||d_i − d_ℓ||₁ / 2.

Choices where the paper is silent:
  - D is divided by its largest entry before solving (as DS3's code does); Z is unchanged by
    this because λ = α·λ_max scales with D, and it lets one ADMM setting fit every clip.
  - q = ∞ by default (as in DS3's own code): the relaxation is then the LP of uncapacitated
    facility location, whose optimum is usually integral, so row sums are frame counts and
    the top-k ranking is unambiguous; with q = 2 near-duplicate frames share their mass and
    the ranking depends on solver tolerance. q = 2 remains available.
  - α = 0.2 for q = ∞ and 0.3 for q = 2 is the *starting* regularisation
    (:data:`DEFAULT_ALPHAS`); :func:`avtag.video.keyframes.select_keyframes` lowers α per clip
    until DS3 itself returns at least k representatives (see that module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Norm = Literal[2, "inf"]
DEFAULT_Q: Norm = "inf"
DEFAULT_ALPHAS: dict[str, float] = {"inf": 0.2, "2": 0.3}  # λ = α·λ_max, per q (module doc)


def default_alpha(q: Norm = DEFAULT_Q) -> float:
    """The default α (λ = α·λ_max) for the row norm q (see "Choices" in the module doc)."""
    return DEFAULT_ALPHAS["inf" if _q_is_inf(q) else "2"]


def _q_is_inf(q: Norm | float) -> bool:
    if q in (2, 2.0):
        return False
    if q in ("inf", math.inf):
        return True
    raise ValueError(f"q must be 2 or 'inf', got {q!r}")


def ds3_lambda_max(D: Tensor, q: Norm = 2, mask: Tensor | None = None) -> Tensor:
    """λ_max of DS3 (the smallest λ giving one representative) for each (n, n) matrix in D.

    D: (n, n) or (B, n, n); mask: (B, n) valid frames when clips are padded. See the module
    docstring for the formula.
    """
    batched = D.ndim == 3
    D = D if batched else D.unsqueeze(0)
    B, n, _ = D.shape
    valid = torch.ones(B, n, dtype=torch.bool, device=D.device) if mask is None else mask
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    Dm = D.masked_fill(~pair, 0.0)
    row_sums = Dm.sum(-1).masked_fill(~valid, math.inf)
    medoid = row_sums.argmin(-1)
    d_medoid = Dm.gather(1, medoid.view(B, 1, 1).expand(B, 1, n))  # (B, 1, n)
    diff = (Dm - d_medoid).masked_fill(~pair, 0.0)  # rows d_i − d_ℓ
    if _q_is_inf(q):
        values = diff.abs().sum(-1) / 2
    else:
        count = valid.sum(-1, keepdim=True).to(D.dtype)
        gap = diff.sum(-1)
        values = count.sqrt() / 2 * diff.pow(2).sum(-1) / gap.clamp_min(1e-12)
        values = values.masked_fill(gap <= 1e-12, 0.0)  # the medoid itself and its ties
    values = values.masked_fill(~valid, 0.0)
    out = values.amax(-1)
    return out if batched else out[0]


def ds3_objective(Z: Tensor, D: Tensor, lam: Tensor | float, q: Norm = 2) -> Tensor:
    """λ Σ_i ||z_i||_q + Σ_ij z_ij d_ij for Z, D of shape (n, n) or (B, n, n)."""
    Z = torch.as_tensor(Z, dtype=D.dtype, device=D.device)
    norms = Z.abs().amax(-1) if _q_is_inf(q) else Z.norm(dim=-1)
    lam = torch.as_tensor(lam, dtype=D.dtype, device=D.device)
    return lam * norms.sum(-1) + (Z * D).sum((-2, -1))




@dataclass
class DS3Solution:
    """A solved DS3 problem: Z (…, n, n), objective (…), λ (…), and solver bookkeeping."""

    Z: Tensor
    objective: Tensor
    lam: Tensor
    iterations: int
    converged: Tensor | bool
    solver: str
    info: dict = field(default_factory=dict)


def normalise_dissimilarities(D: Tensor, mask: Tensor | None = None) -> Tensor:
    """D divided by its largest (valid) entry, per matrix (DS3's scaling; see module doc)."""
    D = torch.as_tensor(D)
    if not D.is_floating_point():
        D = D.float()
    flat = D if mask is None else D.masked_fill(~(mask.unsqueeze(-1) & mask.unsqueeze(-2)), 0.0)
    scale = flat.amax((-2, -1), keepdim=True).clamp_min(1e-12)
    return D / scale
