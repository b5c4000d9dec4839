"""`quantize` and `cast-weights` on real Wan / HunyuanVideo folders: only the transformer is rewritten (int8 or
another dtype) into a derived folder; the VAE and the folder's own text encoders stay the source's."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app
from magicdistill.models.families.real import RealPipeline
from magicdistill.models.folder import read_model_folder


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _latents(folder, kind):
    pipe = RealPipeline.from_dir(folder)
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    return pipe, pipe.latents(rf.first_frame() if kind.endswith("i2v") else None, "a cat runs", height=32, width=32,
                              frames=9, steps=2, guidance=3.0, shift=3.0, noise=noise, max_sequence_length=16)


def test_quantize_keeps_the_folders_own_encoders(real_folder, tmp_path):
    source = real_folder("wan-t2v")
    result = run_cli("quantize", "--model", source, "--out", tmp_path / "q")
    assert result.exit_code == 0, result.output
    q = tmp_path / "q"
    assert not (q / "text_encoder").exists() and not (q / "vae").exists()  # nothing of MiniLM, nothing copied
    folder = read_model_folder(q)
    assert folder.base == source.resolve() and folder.record["quantization"]["scheme"] == "int8_weight_only"
    with safe_open(str(q / "transformer.int8.safetensors"), "pt") as f:
        assert any(f.get_tensor(k).dtype == torch.int8 for k in f.keys())
    pipe, lat_q = _latents(q, "wan-t2v")
    ref_pipe, lat = _latents(source, "wan-t2v")
    # the encoders used are the source's own UMT5, weight for weight
    assert type(pipe.pipe.text_encoder).__name__ == "UMT5EncoderModel"
    ref_sd = ref_pipe.pipe.text_encoder.state_dict()
    assert all(torch.equal(v, ref_sd[k]) for k, v in pipe.pipe.text_encoder.state_dict().items())
    # int8 transformer: close to the float one, not identical
    err = (lat_q - lat).abs().max().item()
    assert 0 < err < 0.05 * lat.abs().max().item()


@pytest.mark.parametrize("kind", ["hunyuan-i2v"])
def test_cast_weights_rewrites_only_the_transformer(real_folder, tmp_path, kind):
    source = real_folder(kind)
    result = run_cli("cast-weights", "--model", source, "--out", tmp_path / "c", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    c = tmp_path / "c"
    assert sorted(p.name for p in c.iterdir()) == ["magicdistill.json", "transformer"]
    with safe_open(str(c / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    folder = read_model_folder(c)
    assert folder.record["weights_dtype"] == "bfloat16" and folder.pipeline == "HunyuanVideoImageToVideoPipeline"
    assert folder.component_path("text_encoder") == source.resolve() / "text_encoder"
    _, lat_c = _latents(c, kind)
    _, lat = _latents(source, kind)
    err = (lat_c - lat).abs().max().item()
    assert 0 < err < 0.05 * lat.abs().max().item()  # bf16 rounding of the weights only
