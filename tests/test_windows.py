"""Window arithmetic shared by `avtag run` and batch evaluation (avtag.inference.windows)."""

import numpy as np
import pytest

from avtag.inference.windows import active_ranges, plan_windows, valid_frames


@pytest.mark.parametrize("duration", [3.0, 9.99, 10.0, 10.04, 10.5])
def test_a_clip_up_to_half_a_second_longer_than_the_window_is_one_window(duration):
    plan = plan_windows(duration, 10.0)
    assert plan.starts == (0.0,)
    assert plan.cropped_seconds == pytest.approx(max(0.0, duration - 10.0))


@pytest.mark.parametrize("duration", [10.6, 12.0, 15.0, 17.0, 19.9, 20.0, 27.0, 61.0, 3600.0])
def test_windows_cover_the_file_and_never_start_less_than_a_hop_apart(duration):
    plan = plan_windows(duration, 10.0)
    starts = np.array(plan.starts)
    assert starts[0] == 0.0
    assert np.all(np.diff(starts) >= plan.hop - 1e-6)
    assert np.all(np.diff(starts) <= plan.window + 1e-6)  # no gap between windows
    assert starts[-1] + plan.window >= duration - 1e-6  # the tail is covered
    assert plan.cropped_seconds == 0.0
    # only a file shorter than window + hop keeps padding, and never more than half a window
    assert plan.padded_seconds <= plan.hop + 1e-6
    if duration >= plan.window + plan.hop:
        assert plan.padded_seconds == 0.0
    # every second of audio is analysed at most twice
    grid = np.arange(0.0, duration, 0.05)
    covered = ((grid[:, None] >= starts[None]) & (grid[:, None] < starts[None] + plan.window)).sum(axis=1)
    assert covered.min() >= 1 and covered.max() <= 2


def test_short_file_reports_its_real_part():
    plan = plan_windows(5.0, 10.0)
    assert plan.valid_seconds == (5.0,)
    assert plan.padded_seconds == 5.0
    assert valid_frames(5.0, 0.1, 100) == 50


def test_active_ranges_bridge_short_gaps():
    active = np.zeros(50, bool)
    active[10:20] = True
    active[22:30] = True  # 0.2 s gap: bridged
    active[40:45] = True  # 1.0 s gap: a new range
    assert active_ranges(active, 0.1) == [(1.0, 3.0), (4.0, 4.5)]


def test_run_and_batch_evaluation_tag_windows_alike_with_padding_masked(tmp_path):
    """One sliding-window tagger: a 5 s clip (padded to the CRNN's 10 s) and a 17 s clip give the
    same clip probabilities in ``avtag run``'s audio branch and in batch evaluation (windows of
    both clips batched together there), and the padded half never counts."""
    import torch

    from avtag.evaluation.branches import audio_probs_batched
    from avtag.inference.branches import run_audio_branch
    from avtag.inference.loading import load_audio_tagger
    from test_run import export_tiny_crnn

    tagger = load_audio_tagger(export_tiny_crnn(tmp_path / "crnn"))
    sr = tagger.frontend.sample_rate
    rng = np.random.default_rng(0)
    short, long = ((0.1 * rng.standard_normal(int(s * sr))).astype(np.float32) for s in (5.0, 17.0))
    batched = audio_probs_batched(tagger, [short, long], batch_size=3)
    for waveform, got in zip((short, long), batched):
        plan = plan_windows(len(waveform) / sr, 10.0)
        alone = run_audio_branch(tagger, waveform, plan.starts, 10.0, plan.valid_seconds)
        np.testing.assert_allclose(got, alone.clip_probs.max(axis=0), rtol=1e-5, atol=1e-6)
    # the short clip: the max over its real frames, not the model's output on the padded window
    with torch.inference_mode():
        out = tagger(torch.from_numpy(np.pad(short, (0, 10 * sr - len(short))))[None])
    real = valid_frames(5.0, out.frame_hop, out.frame_probs.shape[1])
    np.testing.assert_allclose(batched[0], out.frame_probs[0, :real].max(dim=0).values.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(out.clip_probs[0].numpy() - batched[0]).max() > 1e-3  # padding would have decided otherwise
