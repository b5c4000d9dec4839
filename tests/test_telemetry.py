"""Collapse signals on constructed clips with known answers."""

import pytest
import torch

from magicdistill.distill.telemetry import latent_drift, motion_energy, pixel_drift, saturation


def test_still_clip_has_no_motion_and_grey_has_no_saturation():
    still = torch.rand(1, 3, 1, 8, 8).expand(2, 3, 5, 8, 8) * 2 - 1
    assert motion_energy(still) == 0.0
    grey = torch.full((1, 3, 4, 8, 8), 0.3)
    assert saturation(grey) == pytest.approx(0.0, abs=1e-6)


def test_known_motion_and_saturation_values():
    v = torch.zeros(1, 1, 3, 2, 2)
    v[:, :, 1] = 1.0  # frames 0, 1, 0: every consecutive difference is 1
    assert motion_energy(v) == pytest.approx(1.0)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1, 1).expand(1, 3, 2, 4, 4)
    assert saturation(red) == pytest.approx(1.0)
    half = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1, 1).expand(1, 3, 2, 4, 4)  # rgb (1, .5, .5)
    assert saturation(half) == pytest.approx(0.5)


def test_frozen_generator_shows_as_a_motion_ratio_near_zero():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 6, 8, 8, generator=g) * 2 - 1
    frozen = truth[:, :, :1].expand_as(truth)
    d = pixel_drift(frozen, truth)
    assert d["motion_ratio"] == 0.0 and d["sample_motion"] == 0.0 and d["data_motion"] > 0.1
    assert pixel_drift(truth, truth)["motion_ratio"] == pytest.approx(1.0)
    assert pixel_drift(truth, truth)["saturation_ratio"] == pytest.approx(1.0)
    lat = latent_drift(2 * truth, truth)
    assert lat["rms_ratio_latent"] == pytest.approx(2.0) and lat["motion_ratio_latent"] == pytest.approx(4.0)


def test_collapse_signal_flags_the_first_iteration_that_drifts_from_the_start():
    from magicdistill.distill.telemetry import collapse_signal

    def row(step, motion, rms):
        return {"step": step, "motion_ratio_latent": motion, "rms_ratio_latent": rms}

    steady = [row(1, 0.3, 1.0), row(10, 0.28, 1.1), row(20, 0.31, 0.95),
              {"step": 20, "motion_ratio": 0.4, "saturation_ratio": 1.02}]
    s = collapse_signal(steady)
    assert s["flagged_at"] is None and s["motion_drift"] == pytest.approx(0.31 / 0.3)
    assert s["rms_drift"] == pytest.approx(0.95) and s["saturation_ratio"] == 1.02 and s["motion_ratio"] == 0.4
    # motion below half of its start (0.14 < 0.15), or RMS 1.6x the start: flagged at that iteration
    assert collapse_signal([*steady[:2], row(30, 0.14, 1.0)])["flagged_at"] == 30
    assert collapse_signal([*steady[:2], row(30, 0.2, 1.6), row(40, 0.1, 3.0)])["flagged_at"] == 30
    assert collapse_signal([*steady[:2], row(30, 0.3, 0.6)])["flagged_at"] == 30  # shrinking latents too
    # up_to: a snapshot's signal ignores what the run logged after it
    late = collapse_signal([*steady, row(40, 0.01, 1.0)], up_to=20)
    assert late["flagged_at"] is None and late["motion_drift"] == pytest.approx(0.31 / 0.3)
    assert collapse_signal([])["flagged_at"] is None and collapse_signal([])["saturation_ratio"] is None
