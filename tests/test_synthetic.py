"""The synthetic portrait world: deterministic, varied, held-out identities, captions from attributes."""

import numpy as np
import pytest

from magicdistill.data.synthetic import (
    IDENTITY_FIELDS, MOTION_FIELDS, SyntheticVideoConfig, SyntheticVideos, all_identities, identity_split,
)


def test_deterministic_per_seed_and_index():
    a, b = SyntheticVideos(seed=3), SyntheticVideos(seed=3)
    for i in range(4):
        ca, cb = a.clip(i), b.clip(i)
        assert np.array_equal(ca.frames, cb.frames) and ca.caption == cb.caption
    assert not np.array_equal(SyntheticVideos(seed=4).clip(0).frames, a.clip(0).frames)


def test_shapes_and_dtype():
    cfg = SyntheticVideoConfig(height=48, width=80, num_frames=9)
    c = SyntheticVideos(cfg).clip(0, portrait_only=True)
    assert c.frames.shape == (9, 48, 80, 3) and c.frames.dtype == np.uint8
    with pytest.raises(ValueError):
        SyntheticVideoConfig(num_frames=0)
    with pytest.raises(ValueError):
        SyntheticVideos(split="val")


def test_held_out_identities_are_disjoint_and_used():
    split = identity_split()
    assert len(np.intersect1d(split["train"], split["test"])) == 0
    assert len(split["train"]) + len(split["test"]) == len(all_identities())
    assert 0.09 < len(split["test"]) / len(all_identities()) < 0.11
    test = SyntheticVideos(split="test")
    ids = {test.clip(i, portrait_only=True).identity for i in range(20)}
    assert ids <= set(split["test"].tolist())


def test_caption_matches_labels():
    c = SyntheticVideos(seed=0).clip(5, portrait_only=True)
    ident = {k: IDENTITY_FIELDS[k][c.labels[k]] for k in IDENTITY_FIELDS}
    assert f"{ident['skin']} skin" in c.caption and f"{ident['hair']} hair" in c.caption
    assert f"{ident['background']} background" in c.caption
    assert set(c.labels) == set(IDENTITY_FIELDS) | set(MOTION_FIELDS)


def test_motion_is_visible_and_general_clips_exist():
    src = SyntheticVideos(seed=0)
    clips = [src.clip(i) for i in range(40)]
    kinds = {c.kind for c in clips}
    assert {"portrait", "shapes", "pan"} <= kinds
    # talking faces move their mouths: frame differences are non-zero; a silent, still, non-blinking
    # face is exactly static
    for c in clips:
        if c.kind != "portrait":
            continue
        diff = np.abs(np.diff(c.frames.astype(int), axis=0)).mean()
        still = (MOTION_FIELDS["talk"][c.labels["talk"]] == "silent" and MOTION_FIELDS["sway"][c.labels["sway"]] == "still"
                 and MOTION_FIELDS["nod"][c.labels["nod"]] == "no" and MOTION_FIELDS["blink"][c.labels["blink"]] == "rarely")
        if still:
            assert diff == 0
        elif MOTION_FIELDS["sway"][c.labels["sway"]] != "still":
            assert diff > 0.5


def test_pose_grid_moves_the_head_in_whole_grid_steps():
    """pose_grid_px = 4: a swaying head stands still between jumps, and every jump moves its
    silhouette by a multiple of 4 px; the same clip (caption, identity) as without the grid."""
    free, snapped = SyntheticVideos(), SyntheticVideos(SyntheticVideoConfig(pose_grid_px=4))
    i = next(i for i in range(50) if free.clip(i, portrait_only=True).labels["sway"] > 0
             and free.clip(i, portrait_only=True).labels["nod"] == 0 and free.clip(i, portrait_only=True).labels["talk"] == 0)
    a, b = free.clip(i, portrait_only=True), snapped.clip(i, portrait_only=True)
    assert a.caption == b.caption and a.identity == b.identity
    bg = b.frames[:, 0, 0].astype(int)  # the top-left pixel is background
    mask = np.abs(b.frames.astype(int) - bg[:, None, None]).sum(-1) > 30  # (T, H, W) head silhouette
    left = np.array([np.argmax(m.any(0)) for m in mask])  # leftmost column of the silhouette
    steps = np.diff(left)
    assert np.any(steps != 0) and np.all(steps % 4 == 0)
    change = np.abs(np.diff(b.frames.astype(float), axis=0)).mean(axis=(1, 2, 3))
    assert (change < 1.0).sum() >= 4  # frames where the snapped head does not move (blinks aside)
    assert (np.abs(np.diff(a.frames.astype(float), axis=0)).mean(axis=(1, 2, 3)) < 1.0).sum() < (change < 1.0).sum()
    with pytest.raises(ValueError, match="pose_grid_px"):
        SyntheticVideoConfig(pose_grid_px=-1)


def _silhouette_centre(clip) -> np.ndarray:
    """(T, 2): the head silhouette's mean (row, column) in every frame (top-left pixel = background)."""
    bg = clip.frames[:, 0, 0].astype(int)
    mask = np.abs(clip.frames.astype(int) - bg[:, None, None]).sum(-1) > 30
    rows, cols = np.indices(mask.shape[1:])
    return np.stack([[(r * m).sum() / m.sum(), (c * m).sum() / m.sum()] for m in mask for r, c in [(rows, cols)]])


def test_pose_start_rising_sends_every_swaying_head_right_first_and_keeps_the_rest_of_the_clip():
    """pose_start="rising": the sway starts moving right and the nod down, so the first frame and the
    caption decide the direction; with "random" some heads start left. Same caption and identity."""
    free, rising = SyntheticVideos(), SyntheticVideos(SyntheticVideoConfig(pose_start="rising"))
    idx = [i for i in range(60) if free.clip(i, portrait_only=True).labels["sway"] > 0
           and free.clip(i, portrait_only=True).labels["nod"] == 0][:8]
    assert len(idx) == 8
    first_step = {}
    for name, src in (("random", free), ("rising", rising)):
        clips = [src.clip(i, portrait_only=True) for i in idx]
        first_step[name] = np.array([np.diff(_silhouette_centre(c)[:2, 1])[0] for c in clips])  # columns moved
        if name == "rising":
            assert [c.caption for c in clips] == [free.clip(i, portrait_only=True).caption for i in idx]
    # a head that starts in its trough barely moves at first (the 0.05 px allows for rendering)
    assert np.all(first_step["rising"] > -0.05) and (first_step["rising"] > 0.3).sum() >= 4
    assert np.any(first_step["random"] < -0.3)
    nodding = next(i for i in range(60) if free.clip(i, portrait_only=True).labels["nod"] > 0
                   and free.clip(i, portrait_only=True).labels["sway"] == 0)
    centre = _silhouette_centre(rising.clip(nodding, portrait_only=True))
    assert centre[1, 0] - centre[0, 0] > -0.05 and centre[3, 0] > centre[0, 0]  # the row grows: the head goes down
    with pytest.raises(ValueError, match="pose_start"):
        SyntheticVideoConfig(pose_start="left")
