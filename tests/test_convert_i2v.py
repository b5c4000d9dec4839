"""convert-i2v: a T2V diffusers folder becomes an I2V one that equals the T2V model until fine-tuned."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from real_fixtures import call_kwargs


def _wan_pair(t2v_dir, i2v_dir, name="transformer", image_tokens=False, seed=0):
    """Outputs of the T2V transformer on x and of the converted one on [x, random mask+image channels]."""
    from diffusers import WanTransformer3DModel

    g = torch.Generator().manual_seed(seed)
    t2v = WanTransformer3DModel.from_pretrained(t2v_dir / name).eval()
    i2v = WanTransformer3DModel.from_pretrained(i2v_dir / name).eval()
    assert i2v.config.in_channels == 36 and i2v.config.out_channels == 16
    x = torch.randn(2, 16, 3, 4, 4, generator=g)
    condition = torch.randn(2, 20, 3, 4, 4, generator=g)  # 4 mask + 16 image-latent channels, not zero
    text = torch.randn(2, 512, 32, generator=g)  # Wan's I2V attention assumes 512 text tokens
    t = torch.tensor([700.0, 250.0])
    extra = {"encoder_hidden_states_image": torch.randn(2, 5, 32, generator=g)} if image_tokens else {}
    with torch.no_grad():
        return t2v(x, t, text).sample, i2v(torch.cat([x, condition], 1), t, text, **extra).sample


def test_wan_t2v_becomes_wan_i2v_equal_on_noise(real_folder, tmp_path):
    from diffusers import DiffusionPipeline
    from magicdistill.models.convert import convert_to_i2v

    src = real_folder("wan-t2v")
    out = convert_to_i2v(src, tmp_path / "i2v")
    a, b = _wan_pair(src, out)
    # zero weights on the new input channels: the image/mask channels contribute exactly nothing
    assert torch.equal(a, b)
    assert a.abs().mean() > 0.1

    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline" and index["image_encoder"] == [None, None]
    pipe = DiffusionPipeline.from_pretrained(out)  # diffusers' own I2V class loads and runs it
    assert type(pipe).__name__ == "WanImageToVideoPipeline"
    frames = pipe(**call_kwargs("wan-i2v", pipe), output_type="pt").frames
    assert frames.shape == (1, 9, 3, 32, 32) and torch.isfinite(frames).all()

    _generates_from_first_frame(out, tmp_path)


def test_wan_with_clip_image_tokens_adds_exactly_nothing(real_folder, tmp_path):
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file
    from magicdistill.models.convert import convert_to_i2v

    src = real_folder("wan-t2v")
    out = convert_to_i2v(src, tmp_path / "i2v", image_encoder_from=real_folder("wan-i2v"))
    a, b = _wan_pair(src, out, image_tokens=True)
    assert torch.equal(a, b)  # image tokens attend through a zero value projection
    weights = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert weights["blocks.0.attn2.add_k_proj.weight"].abs().sum() > 0  # keys start from the text keys
    assert torch.count_nonzero(weights["blocks.1.attn2.add_v_proj.weight"]) == 0
    pipe = DiffusionPipeline.from_pretrained(out)
    assert pipe.transformer.config.image_dim == 32 and pipe.image_encoder is not None
    frames = pipe(**call_kwargs("wan-i2v", pipe), output_type="pt").frames
    assert frames.shape == (1, 9, 3, 32, 32) and torch.isfinite(frames).all()


def test_sharded_and_two_expert_wan(real_folder, tmp_path):
    """A14B-like folder with sharded weights: both experts widened; only the patch shard is rewritten."""
    from diffusers import WanTransformer3DModel
    from magicdistill.models.convert import convert_to_i2v

    src = tmp_path / "a14b"
    shutil.copytree(real_folder("wan22-a14b"), src)
    shutil.rmtree(src / "transformer_2")
    WanTransformer3DModel.from_pretrained(real_folder("wan22-a14b") / "transformer_2").save_pretrained(
        src / "transformer_2", max_shard_size="40KB")
    shards = sorted(p.name for p in (src / "transformer_2").glob("*.safetensors"))
    assert len(shards) > 2
    out = convert_to_i2v(src, tmp_path / "i2v")
    for name in ("transformer", "transformer_2"):
        a, b = _wan_pair(src, out, name)
        assert torch.equal(a, b)
    linked = [s for s in shards if (out / "transformer_2" / s).stat().st_ino == (src / "transformer_2" / s).stat().st_ino]
    assert len(linked) == len(shards) - 1  # unchanged shards are hard links, not copies
    assert json.loads((out / "model_index.json").read_text())["boundary_ratio"] == 0.875


def test_hunyuan_t2v_becomes_latent_concat_i2v(real_folder, tmp_path):
    from diffusers import DiffusionPipeline, HunyuanVideoTransformer3DModel
    from magicdistill.models.convert import convert_to_i2v

    src = real_folder("hunyuan-t2v")
    out = convert_to_i2v(src, tmp_path / "i2v", text_encoder_from=real_folder("hunyuan-i2v"))
    t2v = HunyuanVideoTransformer3DModel.from_pretrained(src / "transformer").eval()
    i2v = HunyuanVideoTransformer3DModel.from_pretrained(out / "transformer").eval()
    assert i2v.config.in_channels == 33 and i2v.config.image_condition_type == "latent_concat"
    assert i2v.config.guidance_embeds  # the T2V model's embedded guidance is kept
    g = torch.Generator().manual_seed(1)
    x, condition = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 17, 3, 4, 4, generator=g)
    text, pooled = torch.randn(2, 7, 32, generator=g), torch.randn(2, 32, generator=g)
    t, guidance, mask = torch.tensor([700.0, 300.0]), torch.tensor([6000.0, 6000.0]), torch.ones(2, 7)
    with torch.no_grad():
        a = t2v(x, t, text, mask, pooled, guidance=guidance).sample
        b = i2v(torch.cat([x, condition], 1), t, text, mask, pooled, guidance=guidance).sample
    assert torch.equal(a, b) and a.abs().mean() > 0.1

    pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe).__name__ == "HunyuanVideoImageToVideoPipeline"
    frames = pipe(**call_kwargs("hunyuan-i2v", pipe), output_type="pt").frames
    assert frames.shape == (1, 5, 3, 32, 32) and torch.isfinite(frames).all()
    _generates_from_first_frame(out, tmp_path, frames=5)  # latent_concat drops the first latent frame's 4


def _generates_from_first_frame(folder, tmp_path, frames=9):
    """magicdistill's generate takes the converted folder as an image-to-video model."""
    from typer.testing import CliRunner

    from magicdistill.cli import app
    from magicdistill.video import read_video
    from real_fixtures import first_frame

    first_frame().save(tmp_path / "first.png")
    result = CliRunner().invoke(app, ["generate", "--model", str(folder), "--image", str(tmp_path / "first.png"),
                                      "--prompt", "a cat runs", "--out", str(tmp_path / "v.mp4"), "--height", "32",
                                      "--width", "32", "--frames", "9", "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (frames, 32, 32, 3)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "magicdistill", "convert-i2v", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_converts_and_rejects_bad_input_in_one_line(real_folder, tmp_path):
    out = tmp_path / "i2v"
    run = _cli("--model", real_folder("wan-t2v"), "--out", out)
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "WanImageToVideoPipeline"
    run = _cli("--model", real_folder("hunyuan-t2v"), "--out", tmp_path / "b")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "--text-encoder-from" in lines[0] and not (tmp_path / "b").exists()


@pytest.mark.parametrize("source, flags, message", [
    ("wan-i2v", {}, "already an image-to-video"),
    ("hunyuan-t2v", {}, "--text-encoder-from"),
    ("wan22-ti2v", {}, "needs no conversion"),
    (None, {}, "no model_index.json"),
    ("hunyuan-t2v", {"text_encoder_from": "hunyuan-t2v"}, "no 'image_processor'"),
    ("wan-t2v", {"text_encoder_from": "hunyuan-i2v"}, "is for HunyuanVideo"),
    ("wan-t2v", {"image_encoder_from": "wan-t2v"}, "no 'image_encoder'"),
    ("wan22-a14b", {"image_encoder_from": "wan-i2v"}, "two-expert"),
])
def test_bad_input_is_a_value_error_and_writes_nothing(real_folder, tmp_path, source, flags, message):
    from magicdistill.models.convert import convert_to_i2v

    src = real_folder(source) if source else tmp_path
    flags = {key: real_folder(value) for key, value in flags.items()}
    with pytest.raises(ValueError, match=message):
        convert_to_i2v(src, tmp_path / "out", **flags)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(real_folder, tmp_path):
    from magicdistill.models.convert import convert_to_i2v

    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        convert_to_i2v(real_folder("wan-t2v"), tmp_path / "out")
