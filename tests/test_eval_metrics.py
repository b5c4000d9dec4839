"""Feature metrics: Fréchet distance and KID against closed forms, FVD behaviour (identity, noise,
blur, shuffled frames), the TorchScript adapters on tiny scripted modules, the suite and the CLI."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magicdistill.eval import features, frechet
from magicdistill.eval.suite import evaluate_folders, evaluate_videos
from magicdistill.eval.vbench import DIMENSIONS


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: with two threads on a loaded 2-core machine the hand-offs cost more
    than the arithmetic (measured 0.5 s vs 7.9 s for one suite call), so run them on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PixelStats:
    """A constructed extractor: per-frame 4x4 colour grid + high-pass energy; per-clip mean, a
    time-weighted sum (order-sensitive) and mean frame-to-frame change of those features."""

    name = "pixel-stats"

    def frame_features(self, video):
        x = features.flatten_frames(video.float())
        grid = F.adaptive_avg_pool2d(x, 4).flatten(1)
        high = (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs().mean((2, 3))
        return torch.cat([grid, 10 * high], 1)

    def clip_features(self, video):
        f = self.frame_features(video).reshape(video.shape[0], video.shape[2], -1)
        ramp = torch.linspace(-1, 1, f.shape[1])[None, :, None]
        return torch.cat([f.mean(1), (ramp * f).mean(1), (f[:, 1:] - f[:, :-1]).abs().mean(1)], 1)


@pytest.fixture(scope="module")
def clips():
    """16 held-out synthetic clips (B, 3, 17, 64, 64) in [-1, 1]."""
    from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
    from magicdistill.video import frames_to_tensor

    src = SyntheticVideos(SyntheticVideoConfig(), "test", seed=0)
    return torch.stack([frames_to_tensor(src.clip(i).frames) for i in range(16)])


def blur(video, k):
    x = features.flatten_frames(video)
    x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return x.reshape(video.shape[0], video.shape[2], 3, *x.shape[-2:]).transpose(1, 2)


def shuffle_frames(video, seed=0):
    perm = torch.randperm(video.shape[2], generator=torch.Generator().manual_seed(seed))
    return video[:, :, perm]


def fvd(x, y, extractor):
    with torch.no_grad():
        return frechet.frechet_from_features(extractor.clip_features(x), extractor.clip_features(y))


# --- Fréchet distance -----------------------------------------------------------------------------

def test_frechet_diagonal_closed_form():
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    mu2 = torch.tensor([1.0, -2.0, 0.5])
    d = frechet.frechet_distance(torch.zeros(3), torch.diag(a), mu2, torch.diag(b))
    expected = mu2.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()  # 5.25 + 4 + 1 + 0
    assert d == pytest.approx(expected.item(), abs=1e-10)
    assert d == pytest.approx(10.25, abs=1e-10)


def test_frechet_non_commuting_2x2_closed_form():
    # for 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); M = A S2 A has tr = tr(S1 S2), det = det S1 det S2
    s1 = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    r = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    s2 = r @ torch.diag(torch.tensor([9.0, 0.5], dtype=torch.float64)) @ r.T
    tr_sqrt = math.sqrt((s1 @ s2).trace().item() + 2 * math.sqrt(torch.det(s1).item() * torch.det(s2).item()))
    expected = s1.trace().item() + s2.trace().item() - 2 * tr_sqrt + 1.0
    d = frechet.frechet_distance(torch.zeros(2), s1, torch.tensor([1.0, 0.0]), s2)
    assert d == pytest.approx(expected, abs=1e-10)


def test_frechet_isotropic_scale_and_identity():
    eye = torch.eye(50)
    for scale in (0.5, 1.0, 2.0):  # N(0, I) vs N(0, c^2 I): D (1 - c)^2
        assert frechet.frechet_distance(torch.zeros(50), eye, torch.zeros(50), scale ** 2 * eye) == \
            pytest.approx(50 * (1 - scale) ** 2, abs=1e-9)


def test_frechet_matches_scipy_on_random_covariances():
    import scipy.linalg as scipy_linalg  # a dependency (pyproject): never skipped
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 16, generator=g, dtype=torch.float64), torch.randn(40, 16, generator=g, dtype=torch.float64)
    s1, s2 = a.T @ a / 40, b.T @ b / 40 + 0.1 * torch.eye(16, dtype=torch.float64)
    mu1, mu2 = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_statistics_match_numpy_and_need_two_rows():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    mu, sigma = frechet.statistics(x)
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        frechet.statistics(x[:1])


def test_frechet_of_samples_estimates_mean_shift():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(20000, 4, generator=g), torch.randn(20000, 4, generator=g) + torch.tensor([1.0, 0, 0, 2.0])
    assert frechet.frechet_from_features(x, y) == pytest.approx(5.0, abs=0.15)  # 3 sd of the estimate


# --- KID and the paired distance ------------------------------------------------------------------

def _k(a, b):
    return (a @ b / a.numel() + 1) ** 3


def test_polynomial_mmd_point_masses_closed_form():
    u, v = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), torch.tensor([0.0, -1.0, 3.0], dtype=torch.float64)
    x, y = u.repeat(5, 1), v.repeat(5, 1)
    expected = _k(u, u) + _k(v, v) - 2 * _k(u, v)
    assert frechet.polynomial_mmd2(x, y) == pytest.approx(expected.item(), rel=1e-12)


def test_polynomial_mmd_matches_brute_force_loops():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    m = 6
    xx = sum(_k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(_k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(_k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    assert frechet.polynomial_mmd2(x, y) == pytest.approx((xx + yy - 2 * xy).item(), rel=1e-10)


def test_kid_full_subsets_equal_mmd_and_detect_a_shift():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    # subsets as large as the sets: every draw is a permutation, and MMD^2 is permutation-invariant
    assert frechet.kid(x, y, num_subsets=3, subset_size=1000) == pytest.approx(frechet.polynomial_mmd2(x, y), rel=1e-9)
    same = frechet.kid(x, y, num_subsets=20, subset_size=100)
    shifted = frechet.kid(x, y + 0.5, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 and shifted > 10 * max(abs(same), 1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        frechet.kid(x[:1], y)


def test_perceptual_distance_known_angles():
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert frechet.perceptual_distance(a, 2 * a) == pytest.approx(0.0, abs=1e-12)
    assert frechet.perceptual_distance(a, -a) == pytest.approx(4.0)
    assert frechet.perceptual_distance(a, a.flip(1)) == pytest.approx(2.0)  # orthogonal pairs


# --- FVD behaviour on synthetic clips -------------------------------------------------------------

def _fvd_by_noise_and_blur(clips, ext, noise_levels, blur_sizes):
    """FVD against ``clips`` of noisier and blurrier copies, each list asserted strictly increasing."""
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    by_noise = [fvd(clips, clips + s * noise, ext) for s in noise_levels]
    by_blur = [fvd(clips, blur(clips, k), ext) for k in blur_sizes]
    assert all(a < b for a, b in zip(by_noise, by_noise[1:])), by_noise
    assert all(a < b for a, b in zip(by_blur, by_blur[1:])), by_blur
    return by_noise, by_blur


def test_fvd_zero_on_itself_and_monotone_in_noise_and_blur(clips):
    ext = PixelStats()
    assert fvd(clips, clips, ext) == pytest.approx(0.0, abs=1e-6)
    by_noise, by_blur = _fvd_by_noise_and_blur(clips, ext, (0.02, 0.06, 0.2), (3, 5, 9))
    assert by_noise[0] > 0 and by_blur[0] > 0


def test_shuffled_frames_raise_fvd_constructed_extractor(clips):
    ext = PixelStats()
    tiny = fvd(clips, clips + 0.01 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(1)), ext)
    assert fvd(clips, shuffle_frames(clips), ext) > 5 * tiny


def _shipped_probe():
    from magicdistill.eval.probe import load_probe

    return load_probe()  # shipped in src/magicdistill/checkpoints/tiny/probe/: its absence is a failure


def test_shuffled_frames_raise_fvd_with_the_shipped_probe(clips):
    probe = _shipped_probe()
    tiny = fvd(clips, clips + 0.01 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(1)), probe)
    shuffled = fvd(clips, shuffle_frames(clips), probe)
    assert fvd(clips, clips, probe) == pytest.approx(0.0, abs=1e-6 * max(shuffled, 1.0))
    assert shuffled > 5 * tiny, (shuffled, tiny)


def test_fvd_monotone_in_noise_with_the_shipped_probe(clips):
    _fvd_by_noise_and_blur(clips, _shipped_probe(), (0.05, 0.15, 0.4), (3, 7, 11))


# --- the suite ------------------------------------------------------------------------------------

def test_suite_identity_keys_and_average(clips):
    r = evaluate_videos(clips[:8], clips[:8], extractor=PixelStats())
    assert r["fid"] == pytest.approx(0.0, abs=1e-6) and r["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert r["perceptual"] == pytest.approx(0.0, abs=1e-9)
    assert r["imaging_quality"] == pytest.approx(1.0)
    assert r["average"] == pytest.approx(sum(r[k] for k in DIMENSIONS) / 6)
    assert r["extractor"] == "pixel-stats" and r["motion_ratio"] == pytest.approx(1.0)
    worse = evaluate_videos(clips[:8] + 0.2 * torch.randn(clips[:8].shape, generator=torch.Generator().manual_seed(0)),
                            clips[:8], extractor=PixelStats())
    assert worse["fid"] > 1.0 and worse["fvd"] > 1.0 and worse["kid"] > r["kid"] and worse["perceptual"] > 0.01
    assert worse["imaging_quality"] < 0.9 and worse["temporal_flickering"] < r["temporal_flickering"]


def test_suite_distance_to_the_teacher_reuses_the_truths_formula(clips):
    """teacher=: FVD and FID of the same videos against the teacher's samples, beside those against the truth."""
    videos = clips[:8] + 0.2 * torch.randn(clips[:8].shape, generator=torch.Generator().manual_seed(0))
    plain = evaluate_videos(videos, clips[:8], extractor=PixelStats())
    assert "fvd_teacher" not in plain and "fid_teacher" not in plain
    r = evaluate_videos(videos, clips[:8], extractor=PixelStats(), teacher=videos)
    assert r["fvd_teacher"] == pytest.approx(0.0, abs=1e-6) and r["fid_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert r["fvd"] == plain["fvd"] > 1.0  # the truth's columns are unchanged by the teacher's
    swapped = evaluate_videos(videos, clips[8:16], extractor=PixelStats(), teacher=clips[:8])
    assert swapped["fvd_teacher"] == pytest.approx(plain["fvd"]) and swapped["fid_teacher"] == pytest.approx(plain["fid"])
    with pytest.raises(ValueError, match="differ"):
        evaluate_videos(videos, clips[:8], extractor=PixelStats(), teacher=clips[:8, :, :9])


def test_suite_unpaired_single_video_and_bad_shapes(clips):
    r = evaluate_videos(clips[:1], clips[1:4], extractor=PixelStats())
    assert r["fvd"] is None and "perceptual" not in r and r["fid"] > 0  # FID: 17 frames are enough
    with pytest.raises(ValueError, match="differ"):
        evaluate_videos(clips[:2, :, :9], clips[:2], extractor=PixelStats())
    with pytest.raises(ValueError, match="cond_images"):
        evaluate_videos(clips[:2], clips[:2], extractor=PixelStats(), cond_images=clips[:3, :, 0])


def test_suite_conditioning_images_default_to_frame_zero(clips):
    a = evaluate_videos(clips[:3], clips[3:6], extractor=PixelStats())
    b = evaluate_videos(clips[:3], clips[3:6], extractor=PixelStats(), cond_images=clips[:3, :, 0])
    c = evaluate_videos(clips[:3], clips[3:6], extractor=PixelStats(), cond_images=clips[3:6, :, 0])
    assert a["i2v_subject"] == pytest.approx(b["i2v_subject"], abs=1e-9)
    assert c["i2v_subject"] < a["i2v_subject"]  # another clip's first frame fits worse


# --- TorchScript adapters on tiny scripted modules -----------------------------------------------

class FakeInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        # reveals what it was given: per-image min, max, height
        return torch.stack([x.amin((1, 2, 3)), x.amax((1, 2, 3)), torch.full_like(x[:, 0, 0, 0], x.shape[2])], 1)


class FakeI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        flags = float(rescale) + 2 * float(resize) + 4 * float(return_features)
        return torch.stack([x.amax((1, 2, 3, 4)), torch.full_like(x[:, 0, 0, 0, 0], x.shape[2]),
                            torch.full_like(x[:, 0, 0, 0, 0], flags)], 1)


class FakeVGG(torch.nn.Module):
    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        return torch.stack([torch.full_like(x[:, 0, 0, 0], x.shape[2]), torch.full_like(x[:, 0, 0, 0], x.shape[3]),
                            x.mean((1, 2, 3))], 1)


def _script(module, path):
    torch.jit.script(module).save(str(path))
    return path


def test_inception_adapter_gets_pixel_range_and_frames(tmp_path):
    ext = features.InceptionFeatures(_script(FakeInception(), tmp_path / "inception-2015-12-05.pt"), batch=3)
    video = torch.cat([-torch.ones(1, 3, 4, 8, 8), torch.ones(1, 3, 4, 8, 8)])
    f = ext.frame_features(video)
    assert f.shape == (8, 3)
    assert f[:4, 0].tolist() == [0.0] * 4 and f[4:, 1].tolist() == [255.0] * 4 and f[:, 2].eq(8).all()


def test_i3d_adapter_gets_clips_with_stylegan_v_flags(tmp_path):
    ext = features.I3DFeatures(_script(FakeI3D(), tmp_path / "i3d_torchscript.pt"), batch=1)
    f = ext.clip_features(torch.zeros(2, 3, 16, 8, 8))
    assert f.tolist() == [[127.5, 16.0, 7.0]] * 2  # [0, 255] input, T kept, rescale+resize+return_features


def test_vgg_adapter_downsamples_above_256(tmp_path):
    ext = features.VGG16Features(_script(FakeVGG(), tmp_path / "vgg16.pt"))
    assert ext.perceptual_features(torch.zeros(1, 3, 2, 300, 600))[0, :2].tolist() == [128.0, 256.0]
    assert ext.perceptual_features(torch.zeros(1, 3, 2, 64, 64))[0].tolist() == [64.0, 64.0, 127.5]


def test_adapter_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="not found.*inception-2015-12-05.pt"):
        features.InceptionFeatures(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        features.I3DFeatures(junk)
    wrong = features.I3DFeatures(_script(FakeInception(), tmp_path / "wrong.pt"))  # an image model in the I3D role
    with pytest.raises(ValueError, match="does not accept the i3d input convention"):
        wrong.clip_features(torch.zeros(1, 3, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown extractor"):
        features.get_extractor("clip")
    with pytest.raises(ValueError, match="needs --weights"):
        features.get_extractor("i3d")


def test_get_extractor_fills_other_roles_from_the_probe(tmp_path):
    from magicdistill.eval.probe import ProbeNetwork

    probe_dir = ProbeNetwork().save(tmp_path / "probe")
    ext = features.get_extractor("i3d", _script(FakeI3D(), tmp_path / "i3d.pt"), probe_path=probe_dir)
    video = torch.zeros(2, 3, 4, 64, 64)
    assert ext.clip_features(video).shape == (2, 3)  # the I3D role
    assert ext.frame_features(video).shape[0] == 8  # the probe's frame features
    assert "clip:i3d" in ext.name
    vgg = features.get_extractor("vgg16", _script(FakeVGG(), tmp_path / "vgg16.pt"), probe_path=probe_dir)
    a, b = torch.zeros(2, 3, 3, 64, 64), torch.full((2, 3, 3, 64, 64), 0.5)
    assert evaluate_videos(a, a, extractor=vgg)["perceptual"] == pytest.approx(0.0, abs=1e-12)
    # the fake VGG's features are (64, 64, mean pixel): 127.5 vs 191.25 -> |a^ - b^|^2 from the normalised vectors
    fa, fb = F.normalize(torch.tensor([64.0, 64, 127.5], dtype=torch.float64), dim=0), \
        F.normalize(torch.tensor([64.0, 64, 191.25], dtype=torch.float64), dim=0)
    assert evaluate_videos(a, b, extractor=vgg)["perceptual"] == pytest.approx((fa - fb).pow(2).sum().item(), rel=1e-6)


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folders(tmp_path_factory, clips):
    from magicdistill.eval.probe import ProbeNetwork
    from magicdistill.video import tensor_to_frames, write_mp4

    root = tmp_path_factory.mktemp("evaluate")
    for name, vids in (("gen", clips[:4]), ("ref", clips[4:8])):
        for i, v in enumerate(vids):
            write_mp4(root / name / f"{i:02d}.mp4", tensor_to_frames(v), 8)
    # a different size and length: conformed by the documented rule
    write_mp4(root / "odd" / "00.mp4", tensor_to_frames(F.interpolate(clips[0], size=(96, 80))[:, :12]), 8)
    write_mp4(root / "odd" / "01.mp4", tensor_to_frames(clips[1]), 8)
    ProbeNetwork().save(root / "probe")  # untrained: the command's plumbing does not need a good probe
    from PIL import Image

    for i, v in enumerate(clips[8:12]):  # first frames of other clips: the wrong conditioning images
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(tensor_to_frames(v)[0]).save(root / "images" / f"{i:02d}.png")
    (root / "one_image").mkdir()
    Image.fromarray(tensor_to_frames(clips[0])[0]).save(root / "one_image" / "a.png")
    return root


def test_evaluate_folders_reads_conforms_and_reports(folders):
    r, notes = evaluate_folders(folders / "gen", folders / "ref", weights=folders / "probe")
    assert r["num_videos"] == 4 and r["num_reference"] == 4 and r["fvd"] is not None and "perceptual" in r
    same, _ = evaluate_folders(folders / "gen", folders / "gen", weights=folders / "probe", max_videos=2)
    assert same["num_videos"] == 2 and same["fid"] == pytest.approx(0.0, abs=1e-6)
    odd, notes = evaluate_folders(folders / "odd", folders / "ref", weights=folders / "probe")
    assert any("first 12 frames" in n for n in notes) and any("1 video(s) resized to 64x64" in n for n in notes)
    assert r["i2v_subject"] == pytest.approx(r["subject_consistency"])  # default image = frame 0: same formula
    with pytest.raises(ValueError, match="no .mp4 files"):
        evaluate_folders(folders / "probe", folders / "ref", weights=folders / "probe")
    with pytest.raises(ValueError, match="1 images for 4 videos"):
        evaluate_folders(folders / "gen", folders / "ref", weights=folders / "probe", images=folders / "one_image")
    wrong, _ = evaluate_folders(folders / "gen", folders / "ref", weights=folders / "probe", images=folders / "images")
    assert wrong["i2v_subject"] < r["i2v_subject"] and wrong["subject_consistency"] == r["subject_consistency"]
    with pytest.raises(ValueError, match="--reference is required"):
        evaluate_folders(folders / "gen", None, weights=folders / "probe")


def test_evaluate_reads_a_run_folder_grid(tmp_path, clips, folders):
    from magicdistill.video import tensor_to_frames, write_mp4

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"height": 64, "width": 64}}))
    truth, gen = clips[:3], clips[3:6]
    grid = torch.cat([torch.cat([t, g], dim=-1) for t, g in zip(truth, gen)], dim=-2)
    write_mp4(run / "samples" / "iter_000010.mp4", tensor_to_frames(grid), 8)
    r, notes = evaluate_folders(run, None, weights=folders / "probe")
    assert r["num_videos"] == 3 and r["num_reference"] == 3 and any("ground-truth" in n for n in notes)
    # the right-hand column is the sample, the left the truth (up to H.264 error: chroma subsampling, ~0.03)
    from magicdistill.eval.folders import split_run_samples
    from magicdistill.video import frames_to_tensor

    samples, truths, _ = split_run_samples(run)
    err = lambda a, b: (frames_to_tensor(a) - b).abs().mean().item()  # noqa: E731
    assert all(err(s, g) < 0.06 < err(s, t) for s, g, t in zip(samples, gen, truth))
    assert all(err(t_, t) < 0.06 for t_, t in zip(truths, truth))


def test_evaluate_command_writes_json_and_fails_in_one_line(folders, tmp_path):
    out = tmp_path / "m.json"
    cmd = [sys.executable, "-m", "magicdistill", "evaluate", "--videos", str(folders / "gen"), "--reference",
           str(folders / "ref"), "--weights", str(folders / "probe"), "--json", str(out)]
    # one thread: this small job on a loaded shared machine ran 48 s with two, 8 s with one
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert {"fid", "fvd", "kid", *DIMENSIONS, "average"} <= set(data)
    assert data["average"] == pytest.approx(sum(data[k] for k in DIMENSIONS) / 6)
    assert "FVD (per clip)" in r.stdout and not list(tmp_path.glob(".*tmp"))
    from typer.testing import CliRunner

    from magicdistill.cli import app

    bad = CliRunner().invoke(app, ["evaluate", "--videos", str(tmp_path / "nowhere"), "--reference",
                                   str(folders / "ref")])
    out_lines = [x for x in bad.output.splitlines() if x.strip()]
    assert bad.exit_code == 2 and len(out_lines) == 1 and out_lines[0].startswith("error: not a folder"), bad.output
