"""`magicdistill distill` end to end on a tiny random teacher: telemetry, the generator folder,
and exact resume (a run interrupted at iteration 3 and resumed equals an uninterrupted one)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from magicdistill.config import DistillConfig
from magicdistill.distill.trainer import distill
from magicdistill.models.dit import VideoDiT
from toys import write_tiny_teacher


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


def _cfg(**kw):
    base = dict(method="w2s", iters=6, batch_size=2, lora_rank=4, num_clips=8, log_every=1, checkpoint_every=3,
                sample_every=100)
    base.update(kw)
    return DistillConfig(**base)


def test_w2s_run_telemetry_and_generator(tmp_path, tiny_teacher):
    out = distill(_cfg(), tiny_teacher, tmp_path / "run", cache_dir=tmp_path / "cache")
    meta = json.loads((out / "dit.json").read_text())
    assert meta["sampler"] == {"kind": "euler", "steps": 4, "shift": 5.0, "guidance": 1.0} and meta["method"] == "w2s"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    gen_rows = [r for r in rows if "loss_dmd" in r]
    assert [r["step"] for r in gen_rows] == [1, 6]  # the generator learns at iterations 0 and 5 (r = 5)
    iter_rows = [r for r in rows if "motion_ratio" not in r]  # the rest: the collapse signal at sample time
    assert all({"loss_fake", "loss_d", "grad_norm_fake", "motion_ratio_latent", "rms_ratio_latent"} <= set(r)
               for r in iter_rows)
    sample_rows = [r for r in rows if "motion_ratio" in r]
    assert [r["step"] for r in sample_rows] == [6] and sample_rows[0]["data_motion"] > 0
    assert sample_rows[0]["saturation_ratio"] > 0
    assert all(r["dmd_normaliser"] > 0 for r in gen_rows)
    assert (tmp_path / "run" / "samples" / "iter_000006.mp4").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["alpha_weak"] == 0.25


def test_resume_is_exact(tmp_path, tiny_teacher):
    full = distill(_cfg(), tiny_teacher, tmp_path / "full", cache_dir=tmp_path / "cache")
    part_cfg = _cfg()
    distill(DistillConfig.strict_update(part_cfg, iters=3), tiny_teacher, tmp_path / "part", cache_dir=tmp_path / "cache")
    # a resumed run may be made longer (iters), nothing else
    with pytest.raises(ValueError, match="differs .* in alpha_weak"):
        distill(DistillConfig.strict_update(part_cfg, alpha_weak=0.5), tiny_teacher, tmp_path / "part", resume=True)
    resumed = distill(part_cfg, tiny_teacher, tmp_path / "part", resume=True, cache_dir=tmp_path / "cache")
    a = load_file(str(full / "transformer" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_dmd_forces_alpha_weak_zero_and_bad_method(tmp_path, tiny_teacher):
    distill(_cfg(method="dmd", iters=1), tiny_teacher, tmp_path / "dmd", cache_dir=tmp_path / "cache")
    assert json.loads((tmp_path / "dmd" / "config.json").read_text())["alpha_weak"] == 0.0
    with pytest.raises(ValueError):
        DistillConfig(method="magic")


@pytest.mark.parametrize("method,kind,guidance", [("lcm", "consistency", 1.0), ("cfg", "euler", 6.0), ("euler", "euler", 6.0)])
def test_other_methods_run_and_record_their_sampler(tmp_path, tiny_teacher, method, kind, guidance):
    out = distill(_cfg(method=method, iters=2), tiny_teacher, tmp_path / method, cache_dir=tmp_path / "cache")
    sampler = json.loads((out / "dit.json").read_text())["sampler"]
    assert sampler["kind"] == kind and sampler["guidance"] == guidance
    loaded = VideoDiT.load(out)
    assert loaded.transformer.config.guidance_embeds == (method == "cfg")


def test_t2v_teacher_distils_without_a_first_frame(tmp_path):
    """A T2V teacher distils end to end, and its batches carry no image (so no first frame is pasted into x_gen)."""
    from magicdistill.data.latent_cache import LatentSet
    from magicdistill.distill.trainer import make_batch

    teacher_dir = write_tiny_teacher(tmp_path / "t2v", task="t2v")
    out = distill(_cfg(iters=2), teacher_dir, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert json.loads((out / "dit.json").read_text())["task"] == "t2v"
    data = next(iter((tmp_path / "cache").glob("latents_train_*.safetensors")))
    from magicdistill.data.latent_cache import load_latent_set

    key = data.stem.split("_")[-1]
    ls: LatentSet = load_latent_set(data, key)
    null = ls.text.index(torch.tensor([0]))
    batch = make_batch(ls, torch.tensor([0, 1]), null, "cpu", i2v=False)
    assert batch.image is None and batch.image_latent is None
    with_image = make_batch(ls, torch.tensor([0, 1]), null, "cpu")
    assert torch.equal(with_image.image_latent, ls.image_latents[:2])


def test_generator_of_the_shipped_teacher_finds_its_vae(tmp_path):
    """The shipped teacher records its VAE as "../vae" (a sibling folder); a generator written to a run folder
    must record the VAE it was distilled with, not that relative path (which points nowhere from there)."""
    from magicdistill.pipeline import SHIPPED_DIR, resolve_vae_dir

    out = distill(_cfg(method="euler"), SHIPPED_DIR / "teacher", tmp_path / "run")
    assert not (out.parent / "vae").exists()  # no sibling: the record must be what finds it
    assert resolve_vae_dir(out) == (SHIPPED_DIR / "vae").resolve()
