"""VBench-style dimensions on constructed clips whose answers are known in closed form."""

import pytest
import torch
import torch.nn.functional as F

from magicdistill.eval import vbench


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors on a loaded 2-core machine: see test_eval_metrics.py
    yield
    torch.set_num_threads(before)


class MeanColour:
    """Frame features = mean RGB of the frame shifted by a constant (so features are never zero)."""

    name = "mean-colour"

    def frame_features(self, video):
        return video.float().mean((3, 4)).transpose(1, 2).flatten(0, 1) + 2.0

    def clip_features(self, video):
        return video.float().mean((2, 3, 4))


def textured(b=2, t=9, h=32, w=32, seed=0):
    """A still, textured clip (B, 3, T, H, W) in [-0.6, 0.6]: smooth random pattern, frame repeated."""
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(b, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear",
                        align_corners=False)
    img = img + 0.3 * torch.rand(b, 3, h, w, generator=g)  # fine detail for the imaging proxy
    return ((img / img.amax() - 0.5) * 1.2)[:, :, None].expand(-1, -1, t, -1, -1).clone()


def constant(values, h=8, w=8):
    """One clip whose frame t is the grey level values[t] (intensity in [0, 1])."""
    v = torch.tensor(values, dtype=torch.float32) * 2 - 1
    return v[None, None, :, None, None].expand(1, 3, -1, h, w).clone()


def moving_square(t=17, size=32, step=2):
    x = -torch.ones(1, 3, t, size, size)
    for i in range(t):
        x[:, :, i, 8:16, i * step % (size - 8):i * step % (size - 8) + 8] = 1.0
    return x


# --- static clips: the known answers ------------------------------------------------------

def test_static_clip_has_no_motion_no_flicker_and_perfect_consistency():
    still = textured()
    assert vbench.dynamic_degree(still) == 0.0
    assert vbench.temporal_flickering(still) == 1.0
    assert vbench.motion_smoothness(still) == 1.0
    assert vbench.subject_consistency(still, MeanColour()) == pytest.approx(1.0)
    assert vbench.i2v_subject(still, MeanColour()) == pytest.approx(1.0)
    assert vbench.imaging_quality(still, still) == pytest.approx(1.0)


# --- pixel dimensions: exact values ---------------------------------------------------------------

def test_flicker_and_smoothness_of_alternating_brightness():
    # grey 0.4, 0.6, 0.4, ...: every step changes by 0.2, every odd frame is 0.2 off its neighbours' mean
    clip = constant([0.4, 0.6] * 4 + [0.4])
    assert vbench.temporal_flickering(clip) == pytest.approx(0.8, abs=1e-6)
    assert vbench.motion_smoothness(clip) == pytest.approx(0.8, abs=1e-6)


def test_linear_ramp_is_perfectly_smooth_but_changes():
    clip = constant([0.1 + 0.05 * t for t in range(9)])
    assert vbench.motion_smoothness(clip) == pytest.approx(1.0, abs=1e-6)  # linear interpolation is exact
    assert vbench.temporal_flickering(clip) == pytest.approx(0.95, abs=1e-6)


def test_jitter_is_less_smooth_than_steady_motion():
    steady = moving_square(step=2)
    jitter = steady.clone()
    jitter[:, :, 1::2] = torch.roll(jitter[:, :, 1::2], shifts=3, dims=-1)  # odd frames jump sideways
    assert vbench.motion_smoothness(jitter) < vbench.motion_smoothness(steady) < 1.0


def test_dynamic_degree_counts_moving_videos_and_pairs():
    still, moving = textured(b=1, t=17), moving_square()
    assert vbench.dynamic_degree(moving) == 1.0
    assert vbench.dynamic_degree(torch.cat([still, moving[:, :, :, :32, :32]])) == 0.5
    # T = 17 needs round(4 * 17 / 16) = 4 moving pairs: 3 is static, 4 is dynamic
    for moves, expected in ((3, 0.0), (4, 1.0)):
        clip = still.clone()
        for t in range(1, moves + 1):
            clip[:, :, 2 * t:] = torch.roll(still, shifts=4 * t, dims=-1)[:, :, 2 * t:]
        assert int(vbench.moving_pairs(clip)[0]) == moves
        assert vbench.dynamic_degree(clip) == expected


def test_motion_ratio_resolves_what_dynamic_degree_saturates():
    moving = moving_square()
    half = moving * 0.5  # the same motion at half the contrast: half the frame differences
    assert vbench.dynamic_degree(half) == vbench.dynamic_degree(moving) == 1.0  # both over the threshold
    assert vbench.motion_ratio(moving, moving) == pytest.approx(1.0)
    assert vbench.motion_ratio(half, moving) == pytest.approx(0.5, rel=1e-5)
    assert vbench.motion_ratio(moving, half) == pytest.approx(2.0, rel=1e-5)
    assert vbench.motion_ratio(moving[:, :, :1].expand_as(moving), moving) == 0.0  # frozen on frame 0


def test_dynamic_degree_ignores_small_noise():
    still = textured(b=1, t=17)
    noisy = still + 0.02 * torch.randn(still.shape, generator=torch.Generator().manual_seed(0))
    assert vbench.dynamic_degree(noisy) == 0.0
    assert vbench.temporal_flickering(noisy) < vbench.temporal_flickering(still)


def test_imaging_quality_falls_with_blur_and_noise():
    ref = textured(b=2, t=3, h=64, w=64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(ref.shape, generator=g)
    by_noise = [vbench.imaging_quality(ref + s * noise, ref) for s in (0.0, 0.02, 0.05, 0.1)]

    def box(x, k):
        f = x.transpose(1, 2).flatten(0, 1)
        f = F.avg_pool2d(F.pad(f, (k // 2,) * 4, mode="replicate"), k, stride=1)
        return f.reshape(x.shape[0], x.shape[2], 3, *f.shape[-2:]).transpose(1, 2)

    by_blur = [vbench.imaging_quality(box(ref, k), ref) for k in (1, 3, 5, 7)]
    assert by_noise[0] == 1.0 and by_blur[0] == 1.0
    assert all(a > b for a, b in zip(by_noise, by_noise[1:])), by_noise
    assert all(a > b for a, b in zip(by_blur, by_blur[1:])), by_blur
    assert 0.0 < min(by_noise + by_blur)


# --- feature dimensions: exact values on constructed features -------------------------------------

def test_subject_consistency_closed_form():
    e1, e2 = torch.eye(2)
    t = 5
    f = torch.stack([e1] + [e2] * (t - 1))[None]  # frame 1 differs from all later frames
    # t = 2: (cos(e1, e2) + cos(e1, e2)) / 2 = 0; t >= 3: (cos(e1, e2) + cos(e2, e2)) / 2 = 1/2
    assert vbench.subject_consistency_from_features(f) == pytest.approx((t - 2) * 0.5 / (t - 1))
    flipped = torch.stack([e1, -e1, e1])[None]  # anti-correlated frames clamp at 0 as in VBench
    assert vbench.subject_consistency_from_features(flipped) == pytest.approx((0 + 0.5) / 2)


def test_i2v_subject_closed_form_and_wrong_image():
    e1, e2 = torch.eye(2)
    f = torch.stack([e1, e1, e2, e2])[None]
    # to the image e1 over frames 2..4: (1 + 0 + 0) / 3; consecutive: (1 + 0 + 1) / 3
    assert vbench.i2v_subject_from_features(f, e1[None]) == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 3)
    assert vbench.i2v_subject_from_features(f, e2[None]) == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)


def test_i2v_subject_with_images_through_an_extractor():
    clip = constant([0.5] * 5)
    same, other = clip[:, :, 0], clip[:, :, 0].clone()
    other[:, 0] = 1.0  # red raised: features (3, 2, 2) against the grey frames' (2, 2, 2)
    ext = MeanColour()
    assert vbench.i2v_subject(clip, ext, cond_images=same) == pytest.approx(1.0)
    assert vbench.i2v_subject(clip, ext) == pytest.approx(1.0)  # default: frame 0
    assert vbench.i2v_subject(clip, ext, cond_images=other) == pytest.approx(0.5 * 14 / (12 ** 0.5 * 17 ** 0.5) + 0.5)
    with pytest.raises(ValueError, match="conditioning images"):
        vbench.i2v_subject(clip, ext, cond_images=clip)


def test_average_and_errors():
    scores = dict(zip(vbench.DIMENSIONS, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)))
    assert vbench.average(scores) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="at least 3 frames"):
        vbench.motion_smoothness(constant([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        vbench.temporal_flickering(torch.zeros(3, 5, 8, 8))


def _blob(speed, t=9, size=32, sigma=3.0):
    """A Gaussian blob crossing a dark frame at ``speed`` pixels per frame (sub-pixel positions exact)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    frames = [torch.exp(-((yy - 16) ** 2 + (xx - 8 - speed * i) ** 2) / (2 * sigma ** 2)) for i in range(t)]
    return (torch.stack(frames) * 2 - 1)[None, None].expand(1, 3, -1, -1, -1).clone()


def test_motion_ratio_orders_still_slow_and_fast_where_dynamic_degree_saturates():
    """The bench's continuous motion measure (motion / the truth's): monotone in speed on constructed clips, and on
    the held-out portrait clips it tells the truth from its first frame repeated and from the same clips sped up."""
    from magicdistill.demo import held_out_clips
    from magicdistill.pipeline import SHIPPED_DIR, read_record

    still, slow, fast, faster = (_blob(v) for v in (0.0, 0.5, 1.0, 2.0))
    ratios = [vbench.motion_ratio(v, fast) for v in (still, slow, fast, faster)]
    assert ratios[0] == 0.0 and ratios[2] == pytest.approx(1.0)
    assert ratios[0] < ratios[1] < ratios[2] < ratios[3], ratios
    # the thresholded count cannot tell slow from fast: both "move"
    assert vbench.dynamic_degree(slow) == vbench.dynamic_degree(fast) == vbench.dynamic_degree(faster) == 1.0
    truth = held_out_clips(read_record(SHIPPED_DIR / "teacher"), 4, 0)[0]
    frozen = truth[:, :, :1].expand_as(truth)
    assert vbench.motion_ratio(frozen, truth) == 0.0 and vbench.motion_ratio(truth, truth) == pytest.approx(1.0)
    assert vbench.motion_ratio(truth[:, :, ::2], truth) > 1.2  # every other frame: twice the speed (measured 1.40)
    assert vbench.dynamic_degree(truth[:, :, ::2]) == vbench.dynamic_degree(truth) == 1.0  # saturated on both
