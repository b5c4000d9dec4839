"""`magicdistill demo` end to end at a very small size: distil, sample, report."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_full_size_runs(tmp_path):
    """The newcomer's command as the README gives it (about three minutes on 2 CPU cores)."""
    r = subprocess.run([sys.executable, "-m", "magicdistill", "demo", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "report" / "report.md").is_file()


def test_demo_writes_side_by_side_videos_timings_and_metrics(tmp_path):
    from magicdistill.demo import run_demo
    from magicdistill.video import read_video

    report = run_demo(tmp_path / "demo", iters=2, clips=1, num_clips=8)
    m = json.loads((report / "metrics.json").read_text())
    names = [r["sampler"] for r in m["rows"]]
    assert names[:3] == ["teacher 50-step CFG", "teacher 4-step CFG (Euler)", "W2S 4-step (this demo)"]
    rows = {r["sampler"]: r for r in m["rows"]}
    assert rows["teacher 50-step CFG"]["nfe"] == 100 and rows["W2S 4-step (this demo)"]["nfe"] == 4
    assert rows["teacher 4-step CFG (Euler)"]["nfe"] == 8
    assert all(r["seconds_per_video"] > 0 and 5 < r["psnr_vs_truth"] < 60 for r in m["rows"])
    # fewer network evaluations take less time, measured in the same run
    assert rows["W2S 4-step (this demo)"]["seconds_per_video"] < rows["teacher 50-step CFG"]["seconds_per_video"]
    frames, _ = read_video(report / "clip_00.mp4")
    assert frames.shape[2] == 64 * (1 + len(names))  # ground truth | one column per sampler
    assert (report / "overview.png").is_file() and "| sampler |" in (report / "report.md").read_text()
