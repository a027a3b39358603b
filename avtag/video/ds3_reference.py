"""The reference DS3 solver (cvxpy; CLARABEL, ECOS or SCS): what :mod:`avtag.video.ds3_admm`
is checked against in the tests and ``scripts/bench_video.py``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from avtag.video.ds3 import DEFAULT_Q, DS3Solution, Norm, _q_is_inf, default_alpha, ds3_lambda_max, ds3_objective


def ds3_cvxpy(
    D: np.ndarray | Tensor,
    lam: float | None = None,
    q: Norm = DEFAULT_Q,
    alpha: float | None = None,
    solver: str | None = None,
) -> DS3Solution:
    """Reference DS3 solution with cvxpy (one (n, n) matrix). Solver: CLARABEL, ECOS or SCS,
    the first installed unless ``solver`` names one."""
    import cvxpy as cp

    D_t = torch.as_tensor(D, dtype=torch.float64)
    if D_t.ndim != 2 or D_t.shape[0] != D_t.shape[1]:
        raise ValueError(f"ds3_cvxpy takes one square matrix, got {tuple(D_t.shape)}")
    if alpha is None:
        alpha = default_alpha(q)
    lam_value = float(alpha * ds3_lambda_max(D_t, q)) if lam is None else float(lam)
    if solver is None:
        installed = cp.installed_solvers()
        solver = next((s for s in ("CLARABEL", "ECOS", "SCS") if s in installed), None)
        if solver is None:
            raise RuntimeError("cvxpy has none of CLARABEL, ECOS, SCS installed")
    n = D_t.shape[0]
    Z = cp.Variable((n, n), nonneg=True)
    row_norms = cp.norm(Z, "inf" if _q_is_inf(q) else 2, axis=1)
    problem = cp.Problem(
        cp.Minimize(lam_value * cp.sum(row_norms) + cp.sum(cp.multiply(D_t.numpy(), Z))),
        [cp.sum(Z, axis=0) == 1],
    )
    problem.solve(solver=solver)
    if Z.value is None:
        raise RuntimeError(f"cvxpy/{solver} returned no solution ({problem.status})")
    Z_value = torch.from_numpy(np.clip(Z.value, 0.0, None))
    objective = ds3_objective(Z_value, D_t, lam_value, q)
    return DS3Solution(Z_value, objective, torch.tensor(lam_value, dtype=torch.float64),
                       int(problem.solver_stats.num_iters or 0), problem.status == "optimal",
                       f"cvxpy/{solver}", {"status": problem.status,
                                           "solve_time": problem.solver_stats.solve_time})


