"""DS3 key frames (004 §2.2.1): projections, λ_max, ADMM vs the cvxpy reference, robustness to
outlier frames compared with k-means, baselines and the AlexNet conv5 extractor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import shared_path

from avtag.errors import CheckpointError
from avtag.video.keyframes import (
    MIN_ITERATIONS,
    AlexNetConv5,
    ds3_admm,
    ds3_cvxpy,
    ds3_lambda_max,
    ds3_representatives,
    kmedoids_keyframes,
    normalise_dissimilarities,
    pairwise_distances,
    project_columns_to_simplex,
    prox_row_norms,
    select_keyframes,
    alpha_ladder,
    rank_representatives,
    select_keyframes_batch,
    uniform_keyframes,
)
from avtag.video.keyframes import SUPPORT_THRESHOLD


def simplex_reference(v: np.ndarray) -> np.ndarray:
    """Projection onto the probability simplex by bisection on the threshold (independent)."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(v - (lo + hi) / 2, 0)


def clustered_features(sizes, seed, dim=8, spread=1.0, gap=8.0, outliers=0):
    """Frames of len(sizes) scenes (in time order) plus far-away outlier frames spliced in."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres = gap * centres / np.linalg.norm(centres, axis=1, keepdims=True) * np.sqrt(2)
    rows, scene = [], []
    for s, size in enumerate(sizes):
        rows.append(centres[s] + spread * rng.normal(size=(size, dim)) / np.sqrt(dim))
        scene += [s] * size
    x, scene = np.concatenate(rows), np.array(scene)
    if outliers:
        where = np.sort(rng.choice(len(x), outliers, replace=False))
        far = rng.normal(size=(outliers, dim))
        far = 6 * gap * far / np.linalg.norm(far, axis=1, keepdims=True)
        x, scene = np.insert(x, where, far, axis=0), np.insert(scene, where, -1)
    return x, scene


# ----------------------------------------------------------------------------- pieces


def test_simplex_projection_matches_reference_and_respects_mask():
    V = torch.randn(2, 30, 7, dtype=torch.float64) * 2
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    P = project_columns_to_simplex(V, mask)
    for b, n in ((0, 30), (1, 20)):
        for j in range(7):
            assert np.allclose(P[b, :n, j].numpy(), simplex_reference(V[b, :n, j].numpy()),
                               atol=1e-9)
    assert P[1, 20:].abs().max() == 0 and torch.allclose(P.sum(1), torch.ones(2, 7, dtype=P.dtype))


def test_row_prox_q2_and_qinf():
    V = torch.randn(6, 9, dtype=torch.float64)
    tau = torch.tensor(0.8, dtype=torch.float64)
    out2 = prox_row_norms(V, tau, 2)
    norms = V.norm(dim=1, keepdim=True)
    assert torch.allclose(out2, V * torch.clamp(1 - tau / norms, min=0))
    # q = ∞: the prox satisfies Moreau's identity v = prox(v) + Π_{ℓ1-ball(τ)}(v)
    outinf = prox_row_norms(V, tau, "inf")
    for i in range(6):
        rest = (V[i] - outinf[i]).numpy()
        v = V[i].numpy()
        if np.abs(v).sum() <= 0.8:
            assert np.allclose(outinf[i].numpy(), 0)
        else:
            projected = np.sign(v) * simplex_reference(np.abs(v) / 0.8) * 0.8
            assert np.allclose(rest, projected, atol=1e-9)


@pytest.mark.parametrize("q", [2, "inf"])
def test_lambda_max_is_where_one_representative_remains(q):
    x, _ = clustered_features([8, 6, 5], seed=1)
    D = normalise_dissimilarities(pairwise_distances(torch.tensor(x))).double()
    lam_max = float(ds3_lambda_max(D, q))
    above = ds3_cvxpy(D, lam=1.02 * lam_max, q=q).Z.sum(1)
    below = ds3_cvxpy(D, lam=0.3 * lam_max, q=q).Z.sum(1)
    assert int((above > 1e-3).sum()) == 1 and float(above.max()) == pytest.approx(19, abs=1e-3)
    assert int((below > 1e-3).sum()) >= 2


# ----------------------------------------------------------------------------- solvers agree


@pytest.mark.parametrize("q,seed", [("inf", 0), ("inf", 1), (2, 2), (2, 3)])
def test_admm_matches_cvxpy_reference(q, seed):
    rng = np.random.default_rng(seed)
    sizes = list(rng.permutation([24, 15, 9, 5]))
    x, _ = clustered_features(sizes, seed=seed, spread=2.0, gap=5.0)
    D = normalise_dissimilarities(pairwise_distances(torch.tensor(x)))
    reference = ds3_cvxpy(D.double(), q=q, alpha=0.05)
    fast = ds3_admm(D.float(), q=q, alpha=0.05)
    assert fast.converged
    assert float(fast.objective) == pytest.approx(float(reference.objective), rel=0.01)
    assert torch.allclose(fast.Z.sum(0), torch.ones(len(x)), atol=1e-5)  # feasible
    ref_keys, _ = ds3_representatives(reference.Z, D, 4)
    fast_keys, _ = ds3_representatives(fast.Z, D, 4)
    assert sorted(ref_keys.tolist()) == sorted(fast_keys.tolist())


def test_batched_admm_with_padding_equals_single_solves():
    clips = [clustered_features(sizes, seed=s)[0] for s, sizes in
             enumerate([[20, 12, 6, 4], [10, 9, 8], [30, 5, 5, 5, 3]])]
    batch = select_keyframes_batch([torch.tensor(c, dtype=torch.float32) for c in clips])
    for clip, selection, scenes in zip(clips, batch, (4, 3, 5)):
        single = select_keyframes(torch.tensor(clip, dtype=torch.float32))
        assert selection.info["alpha"] == pytest.approx(single.info["alpha"])
        assert selection.info["objective"] == pytest.approx(single.info["objective"], rel=1e-3)
        if scenes >= 4:  # with 3 scenes, 4 representatives need a split cluster: a degenerate
            # LP whose optima differ in which frames split off (same objective, checked above)
            assert selection.indices.tolist() == single.indices.tolist()
        assert selection.num_from_ds3 == single.num_from_ds3 == 4


def test_padded_batch_solves_each_clips_own_problem_q2():
    """With q = 2, mass left in padding columns would cost λ·||z_i||₂ in valid rows: a padded
    batch must reach each clip's own optimum, feasible on its valid columns."""
    clips = [clustered_features(sizes, seed=s)[0] for s, sizes in enumerate([[20, 12, 6], [9, 7]])]
    Ds = [normalise_dissimilarities(pairwise_distances(torch.tensor(c))) for c in clips]
    n = max(len(d) for d in Ds)
    padded = torch.zeros(len(Ds), n, n, dtype=torch.float64)
    mask = torch.zeros(len(Ds), n, dtype=torch.bool)
    for b, d in enumerate(Ds):
        padded[b, : len(d), : len(d)], mask[b, : len(d)] = d, True
    batch = ds3_admm(padded, q=2, mask=mask)
    for b, d in enumerate(Ds):
        m = len(d)
        reference = ds3_cvxpy(d, q=2)
        assert float(batch.objective[b]) == pytest.approx(float(reference.objective), rel=1e-3)
        assert torch.allclose(batch.Z[b, :m, :m].sum(0), torch.ones(m, dtype=d.dtype), atol=1e-6)
        assert float(batch.Z[b, m:].abs().sum() + batch.Z[b, :, m:].abs().sum()) == 0.0


def test_identity_is_never_returned_uniterated_nor_ranked_by_index():
    """With λ below every distance the identity is optimal: ADMM still iterates MIN_ITERATIONS
    times, and tied row sums give the greedy encoding-cost frames, not frames 0..k-1."""
    x, scene = clustered_features([5, 12, 20, 9], seed=7)
    D = normalise_dissimilarities(pairwise_distances(torch.tensor(x)))
    off_diagonal = D[~torch.eye(len(x), dtype=torch.bool)]
    solution = ds3_admm(D, lam=0.5 * float(off_diagonal.min()))
    assert solution.iterations >= MIN_ITERATIONS
    assert torch.allclose(solution.Z, torch.eye(len(x), dtype=D.dtype), atol=1e-4)
    keys, _ = ds3_representatives(solution.Z, D, 4)
    assert sorted(keys.tolist()) != [0, 1, 2, 3]
    assert sorted(scene[keys].tolist()) == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def real_clip_features():
    """Recognizer features (the video branch's: EfficientNet-Lite0 pooled, 3 fps) of two real
    clips on which the old defaults returned the identity (key frames 0..3)."""
    from avtag.video.decode import decode_video
    from avtag.video.recognize import load_recognizer

    paths = [shared_path("data", "videos", name) for name in ("seoul.mp4", "v_ZNVhz7ctTq0.mp4")]
    recognizer = load_recognizer("efficientnet_lite0")
    features = {}
    for path in paths:
        video = decode_video(path, fps=3.0, max_side=640, with_audio=False)
        features[path.name] = torch.as_tensor(recognizer(video.frames).features)
    return features


@pytest.mark.parametrize("q", ["inf", 2])
def test_real_clips_admm_matches_cvxpy_and_finds_scenes(real_clip_features, q):
    for name, features in real_clip_features.items():
        D = normalise_dissimilarities(pairwise_distances(features))
        reference = ds3_cvxpy(D.double(), q=q)
        fast = ds3_admm(D, q=q)
        assert fast.converged and fast.iterations >= MIN_ITERATIONS, name
        assert float(fast.objective) == pytest.approx(float(reference.objective), rel=0.01), name
        ref_keys, _ = ds3_representatives(reference.Z, D, 4)
        fast_keys, _ = ds3_representatives(fast.Z, D, 4)
        assert sorted(fast_keys.tolist()) == sorted(ref_keys.tolist()), name
        # not the identity: some frame represents several others, and the keys are not 0..3
        assert float(fast.Z.sum(1).max()) > 2.0, name
        assert sorted(fast_keys.tolist()) != [0, 1, 2, 3], name
        selection = select_keyframes(features, q=q, alpha_search=False)
        assert sorted(selection.indices.tolist()) == sorted(fast_keys.tolist()), name
        # the per-clip α search lands on the same α and key frames with either solver
        searched = select_keyframes(features, q=q)
        searched_cvxpy = select_keyframes(features, q=q, solver="cvxpy")
        assert searched.info["alpha"] == pytest.approx(searched_cvxpy.info["alpha"]), name
        assert searched.indices.tolist() == searched_cvxpy.indices.tolist(), name
        assert searched.num_from_ds3 == 4, name


# ----------------------------------------------------------------------------- 004's motivation


def test_ds3_covers_scenes_and_ignores_outliers_unlike_kmeans():
    """4 scenes of unequal length with 4 far-away flash frames: DS3 (top row sums) picks one
    frame per scene and no outlier; k-means' nearest-to-centroid frames do not."""
    from sklearn.cluster import KMeans

    ds3_scenes, ds3_outliers, km_scenes, km_outliers = [], [], [], []
    for seed in range(3):
        x, scene = clustered_features([70, 40, 20, 12], seed=seed, outliers=4)
        # α below the default: these flash frames sit 6x farther away than the scenes do, which
        # inflates λ_max (hence λ = α·λ_max) about sixfold (see the module doc's choices)
        ds3 = select_keyframes(torch.tensor(x, dtype=torch.float32), k=4, alpha=0.02)
        km = KMeans(n_clusters=4, n_init=10, random_state=seed).fit(x)
        nearest = [int(np.argmin(((x - c) ** 2).sum(1))) for c in km.cluster_centers_]
        for keys, scenes, outliers in ((ds3.indices, ds3_scenes, ds3_outliers),
                                       (nearest, km_scenes, km_outliers)):
            labels = scene[np.asarray(keys)]
            scenes.append(len(set(labels[labels >= 0].tolist())))
            outliers.append(int((labels < 0).sum()))
        assert np.all(np.diff(ds3.indices) > 0)  # sorted by time
    assert ds3_scenes == [4, 4, 4] and ds3_outliers == [0, 0, 0]
    assert sum(km_outliers) >= 3 and sum(km_scenes) < 12


# ----------------------------------------------------------------------------- baselines


def test_uniform_keyframes():
    assert uniform_keyframes(240, 4).tolist() == [30, 90, 150, 210]
    assert uniform_keyframes(3, 4).tolist() == [0, 1, 2]


def test_kmedoids_is_swap_optimal_and_finds_separated_clusters():
    x, _ = clustered_features([6, 4, 3], seed=4, spread=3.0, gap=3.0)
    D = pairwise_distances(torch.tensor(x)).double().numpy()
    medoids, sizes = kmedoids_keyframes(D, 3, seed=0)
    cost = D[medoids].min(0).sum()
    for slot, h in itertools.product(range(3), range(len(x))):  # PAM stops at a swap optimum
        swapped = medoids.copy()
        swapped[slot] = h
        assert D[swapped].min(0).sum() >= cost - 1e-9
    assert sizes.sum() == len(x)
    x, scene = clustered_features([9, 5, 4], seed=6)
    medoids, sizes = kmedoids_keyframes(pairwise_distances(torch.tensor(x)), 3)
    assert sorted(scene[medoids].tolist()) == [0, 1, 2] and sorted(sizes.tolist()) == [4, 5, 9]


def test_select_keyframes_methods_and_extractor():
    x, scene = clustered_features([25, 15, 10, 6], seed=5)
    frames = np.zeros((len(x), 4, 4, 3), np.uint8)
    extractor = lambda _frames: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    for method in ("ds3", "kmedoids"):
        sel = select_keyframes(frames=frames, extractor=extractor, method=method)
        assert len(sel.indices) == 4 and set(scene[sel.indices]) == {0, 1, 2, 3}
    assert select_keyframes(x, method="uniform").indices.tolist() == uniform_keyframes(56, 4).tolist()
    assert select_keyframes(x[:3]).indices.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        select_keyframes(x, method="kmeans")


# ----------------------------------------------------------------------------- AlexNet conv5


def test_alexnet_conv5_from_local_weights(tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    net = alexnet(weights=None).eval()
    path = tmp_path / "alexnet.pth"
    torch.save(net.state_dict(), path)
    extractor = AlexNetConv5(path, batch_size=2)
    frames = np.random.default_rng(0).integers(0, 255, (3, 90, 160, 3), np.uint8)
    features = extractor(frames)
    assert features.shape == (3, 256 * 13 * 13) and bool((features >= 0).all())
    x = torch.nn.functional.interpolate(torch.tensor(frames).permute(0, 3, 1, 2).float() / 255,
                                        size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.features[:12](x).flatten(1)
    assert torch.allclose(features, expected, atol=1e-4)


def test_alexnet_weights_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        AlexNetConv5(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        AlexNetConv5(garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match="not an AlexNet"):
        AlexNetConv5(wrong)


# ----------------------------------------------------------------------------- λ search (11.4)


def test_alpha_ladder_goes_down_geometrically_to_the_floor():
    ladder = alpha_ladder(0.2)
    assert ladder[0] == 0.2 and ladder[1] == pytest.approx(0.14)
    assert all(b == pytest.approx(0.7 * a) for a, b in zip(ladder, ladder[1:]))
    assert ladder[-1] >= 1e-3 > ladder[-1] * 0.7
    with pytest.raises(ValueError):
        alpha_ladder(0.0)


def test_rank_representatives_counts_what_ds3_chose_and_what_the_fill_added():
    x, scene = clustered_features([12, 9, 7, 5], seed=3)
    D = normalise_dissimilarities(pairwise_distances(torch.tensor(x)))
    Z = torch.zeros(len(x), len(x))
    first = [int(np.flatnonzero(scene == s)[0]) for s in range(4)]
    Z[first[0], :21] = 1.0  # a two-row Z: scenes 0+1 on one frame, scenes 2+3 on another
    Z[first[2], 21:] = 1.0
    keys, sums, from_ds3 = rank_representatives(Z, D, 4)
    assert from_ds3 == 2 and keys[:2].tolist() == [first[0], first[2]]
    assert sums[:2].tolist() == [21.0, 12.0] and set(scene[keys]) == {0, 1, 2, 3}  # fill: the rest
    assert float(Z.sum(1)[keys[2:]].max()) < SUPPORT_THRESHOLD


def test_search_lowers_alpha_until_ds3_itself_returns_k_frames():
    x, scene = clustered_features([40, 30, 6, 5], seed=8, gap=4.0)
    fixed = select_keyframes(torch.tensor(x, dtype=torch.float32), alpha=0.5, alpha_search=False)
    searched = select_keyframes(torch.tensor(x, dtype=torch.float32), alpha=0.5)
    assert fixed.num_from_ds3 < 4 and fixed.info["alpha"] == 0.5
    assert searched.num_from_ds3 == 4 and searched.info["alpha"] < 0.5
    assert set(scene[searched.indices]) == {0, 1, 2, 3}
    cvx = select_keyframes(torch.tensor(x, dtype=torch.float32), alpha=0.5, solver="cvxpy")
    assert cvx.num_from_ds3 == 4 and cvx.info["alpha"] == pytest.approx(searched.info["alpha"])


SHARED_CLIPS = ("car-detection.mp4", "chaplin.mp4", "flipping_a_pancake.mkv", "motorcycle.mp4",
                "seoul.mp4", "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4")


@pytest.fixture(scope="module")
def all_shared_clip_features():
    """The video branch's key-frame features (EfficientNet-Lite0 pooled, 3 fps, 640 px) of the
    7 shared clips."""
    from avtag.video.decode import decode_video
    from avtag.video.recognize import load_recognizer

    recognizer = load_recognizer("efficientnet_lite0")
    features = {}
    for name in SHARED_CLIPS:
        video = decode_video(shared_path("data", "videos", name), fps=3.0, max_side=640,
                             with_audio=False)
        features[name] = recognizer(video.frames).features
    return features


def test_all_key_frames_of_the_shared_clips_come_from_ds3(all_shared_clip_features):
    """At the fixed α = 0.2 DS3 yields only 22 of the 28 key frames on these clips (2 on
    car-detection and on the pancake clip); with the per-clip search all 28 (README)."""
    fixed = {n: select_keyframes(f, alpha_search=False).num_from_ds3
             for n, f in all_shared_clip_features.items()}
    searched = {n: select_keyframes(f) for n, f in all_shared_clip_features.items()}
    assert sum(fixed.values()) < 28
    assert {n: s.num_from_ds3 for n, s in searched.items()} == {n: 4 for n in SHARED_CLIPS}
    for name, selection in searched.items():
        assert len(set(selection.indices.tolist())) == 4, name
        assert 1e-3 <= selection.info["alpha"] <= 0.2, name
    batch = select_keyframes_batch([all_shared_clip_features[n] for n in SHARED_CLIPS])
    assert [b.num_from_ds3 for b in batch] == [4] * 7
