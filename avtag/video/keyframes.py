"""Key-frame selection with DS3 (004 §2.2.1; Elhamifar, Sapiro & Sastry, TPAMI 2016 [15]).

004 summarises a clip by a few representative frames: with a dissimilarity matrix
``D`` (``d_ij`` = Euclidean distance between the features of frames i and j) and a membership
matrix ``Z`` (``z_ij`` = how much frame i represents frame j), DS3 solves the convex relaxation
of 004's §2.2.1 problem,

    min_Z  λ Σ_i ||z_i||_q + Σ_ij z_ij d_ij    s.t.  z_ij ≥ 0,  Σ_i z_ij = 1  for every j,

(``z_i`` the i-th row, q = 2 or ∞, DS3 eq. (5)), and 004 picks "the top few rows with the
largest sums" of ``Z`` as key frames, 4 per clip (§2.2.1, §3.4).  Frame features are AlexNet
"conv5" activations in 004 (:class:`AlexNetConv5`); any :class:`FrameFeatureExtractor` or
precomputed features can be used instead (avtag's default video branch reuses the pooled
EfficientNet-Lite0 features of its recognition pass).

λ is set relative to the data as in DS3: ``λ = α · λ_max(D)``, where λ_max is the smallest λ
for which a single representative is optimal (DS3 §4, Theorem 5; the same formula as the
authors' reference code).  With ℓ = argmin_i Σ_j d_ij (the row of the "medoid") and d_i the
i-th row of D,

    q = 2:  λ_max = max_{i≠ℓ}  (√n / 2) · ||d_i − d_ℓ||₂² / (1ᵀ(d_i − d_ℓ))
    q = ∞:  λ_max = max_{i≠ℓ}  ||d_i − d_ℓ||₁ / 2.

Two solvers: :func:`ds3_cvxpy` (the reference, cvxpy with CLARABEL when installed) and
:func:`ds3_admm` (batched torch ADMM, on the device of its input), which reaches the same
objective (within 1 %) and the same key frames; ``scripts/bench_video.py`` compares them.

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

Choices where the paper is silent:
  - D is divided by its largest entry before solving (as DS3's code does); Z is unchanged by
    this because λ = α·λ_max scales with D, and it lets one ADMM setting fit every clip.
  - q = ∞ by default (as in DS3's own code): the relaxation is then the LP of uncapacitated
    facility location, whose optimum is usually integral, so row sums are frame counts and
    the top-k ranking is unambiguous; with q = 2 near-duplicate frames share their mass and
    the ranking depends on solver tolerance. q = 2 remains available.
  - α = 0.2 for q = ∞ and 0.3 for q = 2 by default (:data:`DEFAULT_ALPHAS`), chosen on the
    real clips of ``../shared/data/videos`` with the video branch's features (EfficientNet-Lite0
    pooled, 3 fps and 24 fps). With the earlier α = 0.02, λ was below the smallest distance
    between two frames on most clips, so the identity (every frame represents itself) was
    the exact optimum and "the top rows" were arbitrary ties. At α = 0.2 (q = ∞) DS3 keeps
    2–4 representatives with real clusters on every clip at both frame rates, and e.g. on
    car-detection.mp4 the key frames include frames with cars as well as the empty road.
    Caveat: λ_max grows with the farthest frame, so a clip with extreme outlier frames
    (far beyond its scene distances) gets a large λ and few representatives; pass a smaller
    ``alpha`` for such material.
  - Ranking (004: "the top few rows with the largest sums"): only rows whose sum exceeds
    1 + SUPPORT_THRESHOLD (frames that represent more than themselves) are ranked by sum; the
    remaining key frames are added greedily, each time the frame that most lowers
    Σ_j min_{i∈S} d_ij (the encoding cost of DS3's objective); ties go to the earlier frame.
    So a Z with tied sums never yields "frames 0..k−1", and lone outliers are not preferred.
  - ADMM: C starts at the λ ≥ λ_max solution (every frame represented by the medoid, as in
    DS3's code); μ starts at 0.4 (on D scaled to [0, 1]) and is adapted by residual balancing
    (×2 / ÷2 when the relaxed gap ||Ĉ − C|| and the dual residual differ tenfold, Boyd et
    al. §3.4.1; stopping still uses the true primal residual ||Z − C||); over-relaxation
    ρ = 1.3 (on the benchmark's 240-frame clips it saves 15–30 % of the iterations for both
    q; ρ ≥ 1.5 stalled on some clips); the constraint Z ≥ 0 is also imposed in the Z-step
    (a redundant copy of the C-step's, which makes the q = ∞ prox a plain min(v, θ));
    tol_abs = 1e-6,
    tol_rel = 1e-5 (looser tolerances stop on fractional plateaus whose objective is already
    within 0.1 % but whose row sums rank the wrong frames); at least MIN_ITERATIONS = 50 and at
    most 2000 iterations. In a batch each clip stops on its own residuals and leaves the
    batch. The returned Z is the feasible iterate C. In a padded batch, each padding frame can
    represent only itself (d = ∞ elsewhere) and starts at that block's fixed point, so the
    valid block is exactly the clip's own problem (and padding columns carry no mass).
  - AlexNet "conv5" = output of the fifth convolution after its ReLU and before the last
    max-pool (torchvision's ``features[:12]``, 256×13×13 at 224×224 input); whole frames are
    resized to 224×224 (no crop, so the borders count) and normalised with ImageNet statistics.
  - Baselines: ``uniform`` takes the centre frames of k equal segments; ``kmedoids`` is PAM
    (BUILD then SWAP) on the same D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from avtag.errors import CheckpointError

SUPPORT_THRESHOLD = 1e-2  # a row whose sum is below this represents (almost) nothing
Norm = Literal[2, "inf"]
DEFAULT_Q: Norm = "inf"
DEFAULT_ALPHAS: dict[str, float] = {"inf": 0.2, "2": 0.3}  # λ = α·λ_max, per q (module doc)
DEFAULT_K = 4


def default_alpha(q: Norm = DEFAULT_Q) -> float:
    """The default α (λ = α·λ_max) for the row norm q (see "Choices" in the module doc)."""
    return DEFAULT_ALPHAS["inf" if _q_is_inf(q) else "2"]


# --------------------------------------------------------------------------- features


@runtime_checkable
class FrameFeatureExtractor(Protocol):
    """Maps uint8 RGB frames (N, H, W, 3) to one feature vector per frame (N, D)."""

    def __call__(self, frames: np.ndarray) -> np.ndarray | Tensor: ...


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AlexNetConv5(nn.Module):
    """AlexNet "conv5" features (004 §2.2.1) from weights in a local file, never downloaded.

    ``weights_path`` holds a torchvision-layout AlexNet state dict (``features.*`` keys, with or
    without ``classifier.*``) as a ``.pth``/``.pt`` (read with ``weights_only=True``) or
    ``.safetensors`` file. Output: (N, 256·13·13) flattened conv5+ReLU maps.
    """

    def __init__(
        self,
        weights_path: str | Path,
        device: str | torch.device = "cpu",
        input_size: int = 224,
        batch_size: int = 32,
    ):
        super().__init__()
        from torchvision.models import alexnet

        self.features = alexnet(weights=None).features[:12]  # conv1 ... conv5 + ReLU
        self.input_size = input_size
        self.batch_size = batch_size
        self.features.load_state_dict(_read_alexnet_features(Path(weights_path)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.to(device).eval()

    @torch.inference_mode()
    def forward(self, frames: np.ndarray | Tensor) -> Tensor:
        device = self.mean.device
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (N, H, W, 3), got {tuple(frames.shape)}")
        outputs = []
        for start in range(0, frames.shape[0], self.batch_size):
            batch = frames[start : start + self.batch_size].to(device)
            x = batch.permute(0, 3, 1, 2).float().div_(255.0)
            x = nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                antialias=True, align_corners=False,
            )
            x = (x - self.mean) / self.std
            outputs.append(self.features(x).flatten(1))
        if not outputs:
            return torch.zeros(0, 256 * 13 * 13, device=device)
        return torch.cat(outputs)


def _read_alexnet_features(path: Path) -> dict[str, Tensor]:
    """The ``features.*`` tensors of an AlexNet state dict, keys relative to ``features``."""
    if not path.is_file():
        raise CheckpointError("AlexNet weights file not found (supply a local file; "
                              "avtag never downloads weights)", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the file is not usable weights
        raise CheckpointError(f"cannot read AlexNet weights ({type(err).__name__})", path) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError("AlexNet weights file does not hold a state dict", path)
    features = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("features."):
            features[key.removeprefix("features.")] = value
    expected = {f"{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    if set(features) != expected:
        missing = sorted(expected - set(features))
        raise CheckpointError(f"not an AlexNet state dict (missing features.{missing[:2]})"
                              if missing else "not an AlexNet state dict (unexpected keys)", path)
    return features


def pairwise_distances(features: np.ndarray | Tensor) -> Tensor:
    """Euclidean distance matrix (n, n) (or (B, n, n)) between feature rows, zero diagonal."""
    x = torch.as_tensor(features)
    if not x.is_floating_point():
        x = x.float()
    dist = torch.cdist(x, x).clamp_min_(0.0)
    dist.diagonal(dim1=-2, dim2=-1).zero_()
    return dist


# --------------------------------------------------------------------------- DS3 pieces


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


# --------------------------------------------------------------------------- DS3 solvers


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
        lam_all = torch.as_tensor(lam, dtype=dtype, device=device).expand(B).clone()
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


def ds3_representatives(Z: Tensor, D: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of Z with the largest sums (004 §2.2.1) and those sums, in rank order.

    Only rows that represent more than themselves (sum > 1 + SUPPORT_THRESHOLD) are ranked by
    their sums; when there are fewer than k of them, the rest are added greedily by encoding
    cost (module doc), so a Z with tied sums (e.g. the identity) never yields "the first k".
    """
    sums = torch.as_tensor(Z).sum(-1).double().cpu().numpy()
    n = len(sums)
    k = min(k, n)
    order = np.argsort(-sums, kind="stable")
    chosen = [int(i) for i in order[:k] if sums[i] > 1.0 + SUPPORT_THRESHOLD]
    if len(chosen) < k:
        dist = torch.as_tensor(D).double().cpu().numpy()
        best = dist[chosen].min(0) if chosen else np.full(n, np.inf)
        while len(chosen) < k:
            cost = np.minimum(dist, best[None, :])
            cost = np.where(np.isinf(cost), dist.max() * 2, cost).sum(1)
            cost[chosen] = np.inf
            pick = int(np.argmin(cost))
            chosen.append(pick)
            best = np.minimum(best, dist[pick])
    chosen_arr = np.asarray(chosen, dtype=np.int64)
    return chosen_arr, sums[chosen_arr]


# --------------------------------------------------------------------------- baselines


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


# --------------------------------------------------------------------------- high level


@dataclass
class KeyframeSelection:
    """Selected key frames, sorted by time, with a score each (DS3: row sum of Z; k-medoids:
    cluster size; uniform: segment length) and what produced them."""

    indices: np.ndarray  # (k,) int64, ascending
    scores: np.ndarray  # (k,) float64, aligned with indices
    method: str
    info: dict = field(default_factory=dict)


def _sorted_selection(indices: np.ndarray, scores: np.ndarray, method: str,
                      info: dict) -> KeyframeSelection:
    order = np.argsort(indices, kind="stable")
    return KeyframeSelection(np.asarray(indices, dtype=np.int64)[order],
                             np.asarray(scores, dtype=np.float64)[order], method, info)


def _features_from(features, frames, extractor) -> Tensor:
    if features is None:
        if frames is None or extractor is None:
            raise ValueError("give features, or frames together with an extractor")
        features = extractor(frames)
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
    return features.float() if not features.is_floating_point() else features


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
    seed: int = 0,
) -> KeyframeSelection:
    """Pick k key frames of one clip from per-frame features (or frames + an extractor).

    ``method="ds3"`` is 004's choice (§2.2.1): DS3 on the Euclidean distances between frame
    features, top-k row sums of Z. ``"uniform"`` and ``"kmedoids"`` are baselines.
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
        return _sorted_selection(np.arange(n), np.ones(n), "ds3", {"note": "n <= k: all frames"})
    if solver == "admm":
        solution = ds3_admm(D, q=q, alpha=alpha)
    elif solver == "cvxpy":
        solution = ds3_cvxpy(D.double(), q=q, alpha=alpha)
    else:
        raise ValueError(f"unknown solver {solver!r} (admm, cvxpy)")
    idx, sums = ds3_representatives(solution.Z, D, k)
    return _sorted_selection(idx, sums, "ds3", _solution_info(solution, 0))


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
) -> list[KeyframeSelection]:
    """DS3 key frames for several clips at once: one batched ADMM solve over clips padded to
    a common length (masks keep padding out), on the device of the features."""
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
    all_equal = len(set(lengths)) == 1
    solution = ds3_admm(D, q=q, alpha=alpha, mask=None if all_equal else mask)
    selections = []
    for b, n in enumerate(lengths):
        if n <= k:
            selections.append(_sorted_selection(np.arange(n), np.ones(n), "ds3",
                                                {"note": "n <= k: all frames"}))
            continue
        idx, sums = ds3_representatives(solution.Z[b, :n, :n], D[b, :n, :n], k)
        selections.append(_sorted_selection(idx, sums, "ds3", _solution_info(solution, b)))
    return selections
