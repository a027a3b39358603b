"""DS3 by ADMM (batched torch, on the device of its input): the fast solver of 004 §2.2.1.

It reaches the same objective as the cvxpy reference (:mod:`avtag.video.ds3_reference`,
within 1 %) and the same key frames; ``scripts/bench_video.py`` compares them.

ADMM (the splitting of DS3 §5, in scaled form): with Z = C,
    Z ← prox_{(λ/μ)||·||_{1,q} + [Z ≥ 0]}(C − U)   row-wise group soft threshold (q = 2), or
                                                 v − Π_{ℓ1-ball(λ/μ)}(v) per row (q = ∞), of
                                                 max(C − U, 0)
    Ĉ = ρ Z + (1 − ρ) C                         over-relaxation (Boyd et al. 2011, §3.4.3)
    C ← Π_simplex-columns(Ĉ + U − D/μ)          Euclidean projection of each column
    U ← U + Ĉ − C
stopping when the primal residual ||Z − C||_F and the dual residual μ||C − C_prev||_F are below
``√(n²)·tol_abs + tol_rel·(scale)`` (Boyd et al. 2011, §3.3), checked every 10 iterations.
Both thresholds (ℓ1-ball and simplex) are found without sorting, by Newton steps warm-started
from the previous iteration's thresholds.

Our documented choices (neither 004 nor DS3 fixes them):
  - C starts at the λ ≥ λ_max solution (every frame represented by the medoid, as in
    DS3's code); μ starts at 0.4 (on D scaled to [0, 1]) and is adapted by residual balancing
    (×2 / ÷2 when the relaxed gap ||Ĉ − C|| and the dual residual differ tenfold, Boyd et
    al. §3.4.1; stopping still uses the true primal residual ||Z − C||); over-relaxation
    ρ = 1.3 (on the benchmark's 240-frame clips it saves 15–30 % of the iterations for both
    q; ρ ≥ 1.5 stalled on some clips); the constraint Z ≥ 0 is also imposed in the Z-step
    (a redundant copy of the C-step's, which makes the q = ∞ prox a plain min(v, θ));
    tol_abs = 1e-6, tol_rel = 1e-5 (looser tolerances stop on fractional plateaus whose
    objective is already within 0.1 % but whose row sums rank the wrong frames); at least
    MIN_ITERATIONS = 50 and at most 2000 iterations.
  - In a batch each problem stops on its own residuals and leaves the batch; λ may differ per
    problem (a tensor of shape (B,)). The returned Z is the feasible iterate C. In a padded
    batch, each padding frame can represent only itself (d = ∞ elsewhere) and starts at that
    block's fixed point, so the valid block is exactly the clip's own problem (and padding
    columns carry no mass).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from avtag.video.ds3 import (
    DEFAULT_Q,
    DS3Solution,
    Norm,
    _q_is_inf,
    default_alpha,
    ds3_lambda_max,
    ds3_objective,
)


def _max_minus(V: Tensor, target: Tensor | float, dim: int) -> Callable[[], Tensor]:
    """max(v) − target along dim, computed only when asked (a lower bound for the root)."""
    return lambda: V.amax(dim, keepdim=True) - target


def _threshold_for_sum(V: Tensor, target: Tensor | float, dim: int,
                       lower: Callable[[], Tensor], start: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """θ with Σ_dim max(V − θ, 0) = target, and max(V − θ, 0) at that θ, by Newton (no sort).

    f(θ) = Σ max(v − θ, 0) − target is convex, decreasing and piecewise linear, so a Newton step
    θ ← θ + f(θ) / #{v > θ} from any θ with some v > θ lands at or below the root, and steps
    from below rise monotonically (Michelot 1986; Condat 2016, "Fast projection onto the
    simplex and the ℓ1 ball"). Two consecutive points with the same count #{v > θ} share the
    same active set, so the later one is the root: the loop stops there and its excess is the
    answer (in the monotone phase, once no count shrank: rounding may grow one by an entry).
    ``lower`` is a bound below the root (``max(v) − target``), used where ``start`` (a warm
    start, the previous ADMM iteration's θ, which may lie on either side of the root) lies
    above every v; from a warm start two or three evaluations suffice. Counts are taken as
    Σ sign(excess): bool reductions are several times slower in torch on CPU.
    """
    theta = lower() if start is None else start
    count = None
    for step in range(V.shape[dim] + 2):
        excess = (V - theta).clamp_min_(0.0)
        new_count = torch.sign(excess).sum(dim, keepdim=True)
        if count is not None and (torch.equal(new_count, count) if step == 1 and start is not None
                                  else bool((new_count >= count).all())):
            break  # no active set shrank (rounding may grow one by an entry): θ is the root
        theta = theta + (excess.sum(dim, keepdim=True) - target) / new_count.clamp_min(1.0)
        if step == 0 and start is not None and not bool(new_count.all()):
            theta = torch.where(new_count > 0, theta, lower())  # start above every v
        count = new_count
    return theta, excess


def _project_columns(V: Tensor, start: Tensor | None) -> tuple[Tensor, Tensor]:
    """Simplex projection of every column of V and the thresholds θ (warm start ``start``)."""
    theta, projected = _threshold_for_sum(V, 1.0, -2, _max_minus(V, 1.0, -2), start)
    return projected, theta


def project_columns_to_simplex(V: Tensor, row_mask: Tensor | None = None) -> Tensor:
    """Euclidean projection of every column of V (…, n, m) onto {z ≥ 0, Σ_i z_i = 1}.

    ``row_mask`` (…, n) marks the rows that may carry mass (padding rows stay at zero).
    z = max(v − θ, 0) with θ the root of Σ_i max(v_i − θ, 0) = 1 (Held et al. 1974), found
    sort-free by :func:`_threshold_for_sum`.
    """
    if row_mask is not None:
        V = V.masked_fill(~row_mask.unsqueeze(-1), -math.inf)
    return _project_columns(V, None)[0]


def _prox_rows(V: Tensor, tau: Tensor, q: Norm, start: Tensor | None, nonnegative: bool = False
               ) -> tuple[Tensor, Tensor | None]:
    """prox of τ Σ_i ||v_i||_q (see :func:`prox_row_norms`) and, for q = ∞, the row thresholds.
    ``nonnegative``: prox of τ Σ_i ||v_i||_q + [v ≥ 0], which is the prox of max(v, 0) (both
    norms are absolute and monotone)."""
    if not _q_is_inf(q):
        if nonnegative:
            V = V.clamp_min(0.0)
        shrink = (1.0 - tau / V.norm(dim=-1, keepdim=True).clamp_min_(1e-30)).clamp_min_(0.0)
        return V * shrink, None
    tau = torch.as_tensor(tau, dtype=V.dtype, device=V.device)
    if nonnegative:
        magnitude = V.clamp_min(0.0)
        theta = _threshold_for_sum(magnitude, tau, -1, _max_minus(magnitude, tau, -1), start)[0]
        return torch.minimum(magnitude, theta.clamp_min(0.0)), theta
    magnitude = V.abs()
    theta = _threshold_for_sum(magnitude, tau, -1, _max_minus(magnitude, tau, -1), start)[0]
    # sign(v)·min(|v|, θ); θ < 0 (row inside the ℓ1 ball) gives the zero row
    bound = theta.clamp_min(0.0)
    return torch.maximum(torch.minimum(V, bound), -bound), theta


def prox_row_norms(V: Tensor, tau: Tensor, q: Norm = 2) -> Tensor:
    """prox of τ Σ_i ||v_i||_q over the rows of V (…, n, m); τ broadcastable to (…, 1, 1).

    q = 2: group soft threshold v_i · max(0, 1 − τ/||v_i||₂).
    q = ∞: Moreau, v_i − Π_{||·||₁ ≤ τ}(v_i) = sign(v_i) · min(|v_i|, θ_i), where θ_i ≥ 0 solves
    Σ_j max(|v_ij| − θ_i, 0) = τ (the ℓ1-ball projection's threshold); the prox is 0 when
    ||v_i||₁ ≤ τ.
    """
    return _prox_rows(V, tau, q, None)[0]



SMALL_PROBLEM = 1 << 22  # entries of Z below which CPU ADMM runs on one thread
MIN_ITERATIONS = 50  # ADMM never stops earlier, whatever the residuals say (see module doc)


def ds3_admm(
    D: Tensor,
    lam: Tensor | float | None = None,
    q: Norm = DEFAULT_Q,
    alpha: float | None = None,
    mask: Tensor | None = None,
    mu: float = 0.4,
    relaxation: float = 1.3,
    max_iter: int = 2000,
    min_iter: int = MIN_ITERATIONS,
    tol_abs: float = 1e-6,
    tol_rel: float = 1e-5,
    check_every: int = 10,
) -> DS3Solution:
    """Solve DS3 for D (n, n) or a batch (B, n, n) by ADMM on D's device (see module doc).

    ``lam`` defaults to ``alpha · ds3_lambda_max(D)`` per matrix (``alpha`` None: the default
    for ``q``); ``mask`` (B, n) marks the valid frames of clips padded to a common n. D is used
    as given (normalise it first with :func:`normalise_dissimilarities` for the documented
    ADMM settings to apply). In a batch, each clip stops on its own residuals.
    """
    D = torch.as_tensor(D)
    args = (D, lam, q, default_alpha(q) if alpha is None else alpha, mask, mu, relaxation,
            max_iter, max(1, min(min_iter, max_iter)), tol_abs, tol_rel, check_every)
    if D.device.type != "cpu" or D.numel() > SMALL_PROBLEM or torch.get_num_threads() == 1:
        return _ds3_admm(*args)
    # Each step is a few dozen ops on ~1e5 numbers: thread hand-offs cost more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _ds3_admm(*args)
    finally:
        torch.set_num_threads(threads)


def _ds3_admm(D, lam, q, alpha, mask, mu, relaxation, max_iter, min_iter, tol_abs, tol_rel,
              check_every) -> DS3Solution:
    batched = D.ndim == 3
    if not D.is_floating_point():
        D = D.float()
    D = D if batched else D.unsqueeze(0)
    if mask is not None and mask.ndim == 1:
        mask = mask.unsqueeze(0)
    B, n, _ = D.shape
    device, dtype = D.device, D.dtype
    if lam is None:
        lam_all = alpha * ds3_lambda_max(D, q, mask)
    else:
        lam_all = torch.as_tensor(lam, dtype=dtype, device=device).reshape(-1).expand(B).clone()
    valid = torch.ones(B, n, dtype=torch.bool, device=device) if mask is None else mask
    pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    D_all = D if mask is None else D.masked_fill(~pair, 0.0)

    # Start where DS3's λ ≥ λ_max solution is: every valid frame represented by the medoid.
    medoid = D_all.sum(-1).masked_fill(~valid, math.inf).argmin(-1)
    C = torch.zeros_like(D_all)
    C[torch.arange(B, device=device), medoid] = valid.to(dtype)
    U = torch.zeros_like(C)
    Dm = D_all
    if mask is not None:
        # Padding frames form a block of their own, each able to represent only itself, started
        # at its ADMM fixed point (Z = C = e_j, U_jj = −λ/μ), so it never moves nor adds to the
        # residuals, and the valid block is exactly the clip's own problem.
        padding = (~valid).to(dtype)
        Dm = D_all.masked_fill(~pair, math.inf)
        Dm.diagonal(dim1=-2, dim2=-1).masked_fill_(~valid, 0.0)
        C.diagonal(dim1=-2, dim2=-1).add_(padding)
        U.diagonal(dim1=-2, dim2=-1).sub_(padding * (lam_all / mu).view(B, 1))

    # Clips still iterating (a batch shrinks as clips converge) and the final answers.
    active = torch.arange(B, device=device)
    lam_t = lam_all.view(B, 1, 1)
    mu_t = torch.full((B, 1, 1), float(mu), dtype=dtype, device=device)
    D_over_mu = Dm / mu_t
    Z_out, mu_out = torch.empty_like(C), torch.empty(B, dtype=dtype, device=device)
    iterations = torch.full((B,), max_iter, dtype=torch.long, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    eps_size = float(n) * tol_abs  # √(n²)·tol_abs
    row_theta = column_theta = None  # warm starts of the two thresholds
    for iteration in range(1, max_iter + 1):
        Z, row_theta = _prox_rows(C - U, lam_t / mu_t, q, row_theta, nonnegative=True)
        C_prev = C
        # over-relaxation, Boyd et al. §3.4.3
        Z_relaxed = Z if relaxation == 1.0 else torch.lerp(C_prev, Z, relaxation)
        C, column_theta = _project_columns((Z_relaxed + U).sub_(D_over_mu), column_theta)
        U.add_(Z_relaxed).sub_(C)
        if iteration % check_every and iteration != max_iter:
            continue
        primal = torch.linalg.vector_norm(Z - C, dim=(-2, -1))
        dual = mu_t.view(-1) * torch.linalg.vector_norm(C - C_prev, dim=(-2, -1))
        # μ is balanced on the relaxed gap Ĉ − C (the step U actually takes): on the true
        # primal residual, balancing with ρ > 1 oscillates and needs several times the iterations
        relaxed_gap = primal if relaxation == 1.0 else torch.linalg.vector_norm(
            Z_relaxed - C, dim=(-2, -1))
        eps_primal = eps_size + tol_rel * torch.maximum(
            torch.linalg.vector_norm(Z, dim=(-2, -1)), torch.linalg.vector_norm(C, dim=(-2, -1)))
        eps_dual = eps_size + tol_rel * mu_t.view(-1) * torch.linalg.vector_norm(U, dim=(-2, -1))
        done = (primal <= eps_primal) & (dual <= eps_dual)
        converged[active] = done
        if iteration < min_iter:
            done = torch.zeros_like(done)
        if iteration == max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            finished = active[done]
            Z_out[finished], mu_out[finished] = C[done], mu_t.view(-1)[done]
            iterations[finished] = iteration
            keep = ~done
            if not bool(keep.any()):
                break
            active, C, U, Dm, lam_t = active[keep], C[keep], U[keep], Dm[keep], lam_t[keep]
            mu_t, D_over_mu, dual = mu_t[keep], D_over_mu[keep], dual[keep]
            relaxed_gap = relaxed_gap[keep]
            column_theta = column_theta[keep]
            row_theta = None if row_theta is None else row_theta[keep]
        # residual balancing (Boyd et al. §3.4.1); U is scaled, so it is rescaled with μ
        grow, shrink = relaxed_gap > 10 * dual, dual > 10 * relaxed_gap
        if bool((grow | shrink).any()):
            factor = (1.0 + grow.to(dtype) - 0.5 * shrink.to(dtype)).view(-1, 1, 1)
            mu_t = mu_t * factor
            U.div_(factor)
            D_over_mu = Dm / mu_t
    Z_out = Z_out if mask is None else Z_out * pair
    objective = ds3_objective(Z_out, D_all, lam_all, q)
    if not batched:
        return DS3Solution(Z_out[0], objective[0], lam_all[0], int(iterations[0]),
                           bool(converged[0]), "admm", {"mu": float(mu_out[0])})
    return DS3Solution(Z_out, objective, lam_all, int(iterations.max()), converged, "admm",
                       {"mu": mu_out.tolist(), "iterations": iterations.tolist()})


