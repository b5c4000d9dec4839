"""`magicdistill cast-weights`: a model folder stored in float16 is half the size and the same model."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from magicdistill.models.cast import cast_weights
from magicdistill.models.dit import Condition, VideoDiT


def _folder(tiny_dit_cfg, tmp_path):
    torch.manual_seed(0)
    dit = VideoDiT.tiny(tiny_dit_cfg, "i2v")
    with torch.no_grad():  # trained-looking weights: the zero-initialised output layer would hide casting errors
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    dit.save(tmp_path / "m", vae="../vae", sampler={"steps": 4})
    return dit


def _weights_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def test_float16_folder_is_half_the_size_and_the_same_model(tiny_dit_cfg, tmp_path):
    dit = _folder(tiny_dit_cfg, tmp_path)
    out = cast_weights(tmp_path / "m", tmp_path / "half", "float16")
    with safe_open(str(out / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert 0.45 < _weights_bytes(out) / _weights_bytes(tmp_path / "m") < 0.55
    meta = json.loads((out / "dit.json").read_text())
    assert meta["weights_dtype"] == "float16" and meta["sampler"] == {"steps": 4}
    assert meta["vae"] == str((tmp_path / "vae").resolve())  # absolute: the new folder can live anywhere
    loaded = VideoDiT.load(out)  # float32 compute by default
    assert loaded.dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    c = tiny_dit_cfg.latent_channels
    x, img = torch.randn(2, c, 3, 8, 8, generator=g), torch.randn(2, c, 1, 8, 8, generator=g)
    cond = Condition(torch.randn(2, 6, tiny_dit_cfg.text_dim, generator=g), torch.ones(2, 6, dtype=torch.bool),
                     torch.randn(2, tiny_dit_cfg.text_dim, generator=g), img)
    with torch.no_grad():
        ref, got = dit(x, torch.tensor([0.7, 0.3]), cond), loaded(x, torch.tensor([0.7, 0.3]), cond)
    rel = (got - ref).norm() / ref.norm()
    assert 0 < rel < 2e-3  # rounded to float16 (not a silent copy), and still the same function


@pytest.mark.parametrize("case,needle", [("exists", "exists"), ("dtype", "dtype must be one of"),
                                         ("missing", "no model at")])
def test_bad_input_one_line_error(tiny_dit_cfg, tmp_path, case, needle):
    _folder(tiny_dit_cfg, tmp_path)
    out = tmp_path / "half"
    if case == "exists":
        out.mkdir()
    args = ["cast-weights", "--model", str(tmp_path / ("nothing" if case == "missing" else "m")), "--out", str(out),
            "--dtype", "int4" if case == "dtype" else "float16"]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "magicdistill", *args], capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
