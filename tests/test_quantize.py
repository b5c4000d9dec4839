"""int8 weight-only quantization (quant/): numbers of the conversion, bytes, the folder round trip,
`generate --quantize int8` and `magicdistill quantize` end to end, one encoder pass per video, and
bad input (one-line error, exit 2, nothing written)."""

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from magicdistill.config import DiTConfig
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEmbedding
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline
from magicdistill.quant import bf16_bytes, quantize_int8, weight_bytes
from magicdistill.quant.folder import save_quantized_dit
from magicdistill.quant.int8_files import DIT_WEIGHTS, load_quantized_text_model, save_int8 as _save_int8
from magicdistill.quant.int8 import Int8Conv, Int8Embedding, is_int8

EXAMPLE = SHIPPED_DIR.parents[2].parent / "examples" / "portrait.png"


def _row_bound(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row int8: |w - deq(w)| <= half a step, step = max|w_row| / 127.5."""
    return w.abs().amax(dim=1, keepdim=True) / 127.5 / 2


def test_quantized_linear_is_within_the_int8_rounding_bound_of_fp32():
    torch.manual_seed(0)
    lin = nn.Linear(256, 128)
    w, x = lin.weight.detach().clone(), torch.randn(32, 256)
    ref = lin(x).detach()
    assert quantize_int8(nn.Sequential(lin)) == ["0"]
    assert is_int8(lin.weight) and lin.weight.qdata.dtype == torch.int8
    err_w = (lin.weight.dequantize() - w).abs()
    assert (err_w <= _row_bound(w) * 1.001 + 1e-7).all()
    out = lin(x).detach()
    assert out.dtype == torch.float32  # activations stay in the compute dtype
    # each output is a dot product: its error is at most sum_j |x_j| * (row bound)
    bound = x.abs().sum(1, keepdim=True) * _row_bound(w).T
    assert ((out - ref).abs() <= bound * 1.001 + 1e-5).all()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.01  # quantized (not a no-op), and close


def test_int8_conv_and_embedding_dequantize_their_torchao_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 96, 4, stride=4)
    x = torch.randn(2, 64, 16, 16)
    q = Int8Conv(conv)
    w = q.weight.dequantize().reshape(conv.weight.shape)
    torch.testing.assert_close(q(x), F.conv2d(x, w, conv.bias, stride=4), rtol=0, atol=1e-5)
    assert ((w - conv.weight).abs() <= _row_bound(conv.weight.flatten(1)).view(-1, 1, 1, 1) * 1.001 + 1e-7).all()
    assert ((q(x) - conv(x)).norm() / conv(x).norm()).item() < 0.01

    emb = nn.Embedding(1000, 48)
    ids = torch.tensor([[3, 999, 0], [5, 5, 42]])
    qe = Int8Embedding(emb)
    torch.testing.assert_close(qe(ids), qe.weight.dequantize()[ids], rtol=0, atol=1e-6)
    assert ((qe(ids) - emb(ids)).abs() <= _row_bound(emb.weight)[ids] * 1.001 + 1e-7).all()


def test_weight_bytes_count_int8_data_scales_and_zero_points():
    lin = nn.Linear(256, 128)
    assert weight_bytes(lin) == (128 * 256 + 128) * 4 and bf16_bytes(lin) == (128 * 256 + 128) * 2
    quantize_int8(nn.Sequential(lin))
    # int8 data + one fp32 scale and one int8 zero point per row + the fp32 bias
    assert weight_bytes(lin) == 128 * 256 + 128 * 4 + 128 + 128 * 4


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return VideoDiT.tiny(DiTConfig(), "i2v").eval()  # the embedded default's size, random weights


def test_tiny_dit_weight_bytes_at_most_055_of_bf16(dit):
    q = copy.deepcopy(dit)
    bf16 = bf16_bytes(q)
    names = quantize_int8(q)
    ratio = weight_bytes(q) / bf16
    assert ratio <= 0.55, ratio
    assert ratio >= 0.5  # int8 is 1/2 of bf16: anything below would mean bytes went uncounted
    # the input and output layers stay in the compute dtype, the blocks' own proj_out are int8
    assert "transformer.x_embedder.proj" not in names and "transformer.proj_out" not in names
    assert "transformer.single_transformer_blocks.0.proj_out" in names
    assert "vision.net.2" in names  # the vision encoder's patch conv
    assert not is_int8(q.transformer.x_embedder.proj.weight)


def _inputs(dit, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = dit.transformer.config.text_embed_dim
    text = TextEmbedding(torch.randn(b, 8, d, generator=g), torch.ones(b, 8, dtype=torch.bool),
                         torch.randn(b, d, generator=g))
    image = torch.rand(b, 3, 64, 64, generator=g) * 2 - 1
    lat = torch.randn(b, 16, 1, 16, 16, generator=g)
    cond = dit.condition(text, image, lat)
    return torch.randn(b, 16, 5, 16, 16, generator=g), torch.tensor([0.9, 0.3]), cond


@torch.no_grad()
@pytest.mark.parametrize("embed_tokens", [1, 3])
def test_quantized_folder_round_trip_gives_identical_outputs(dit, tmp_path, embed_tokens):
    """Also for a wider patch embedding (DiTConfig.embed_tokens), which the folder records."""
    if embed_tokens > 1:
        torch.manual_seed(0)
        dit = VideoDiT.tiny(DiTConfig(embed_tokens=embed_tokens), "i2v").eval()
    q = copy.deepcopy(dit)
    quantize_int8(q)
    meta = {"image_tokens": dit.image_tokens, "text_dim": dit.transformer.config.text_embed_dim,
            "prediction": dit.prediction, "quantization": {"scheme": "int8_weight_only"}}
    save_quantized_dit(q, tmp_path / "m", meta)
    loaded = VideoDiT.load(tmp_path / "m")  # the ordinary loader follows the record
    x, s, cond = _inputs(q)
    ref = q(x, s, cond)
    assert torch.equal(loaded(x, s, cond), ref)
    assert torch.equal(loaded.vision(torch.ones(1, 3, 64, 64)), q.vision(torch.ones(1, 3, 64, 64)))
    assert weight_bytes(loaded) == weight_bytes(q)
    assert (ref - dit(x, s, cond)).abs().max() > 0  # really the quantized model
    # no pickle: the file is safetensors with the int8 tensors flattened into plain components
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / DIT_WEIGHTS), framework="pt") as f:
        keys = list(f.keys())
        assert f.get_tensor("transformer.transformer_blocks.0.attn.to_q.weight::qdata").dtype == torch.int8
    assert loaded.transformer.x_embedder.proj.kernel_size[-1] == 2 * embed_tokens
    # the one-token embedding stays in the compute dtype; a wide one is 25x the weights at 5 tokens: int8
    wide = embed_tokens > 1
    assert is_int8(loaded.transformer.x_embedder.proj.weight) == wide
    assert ("transformer.x_embedder.proj.weight::qdata" in keys) == wide
    assert ("transformer.x_embedder.proj.weight" in keys) == (not wide)


@torch.no_grad()
def test_text_encoder_round_trip_and_closeness(text_encoder, tmp_path):
    prompts = ["The person is talking quickly and blinks often.", ""]
    ref = text_encoder(prompts)
    model = copy.deepcopy(text_encoder.model)
    names = quantize_int8(model)
    assert "embeddings.word_embeddings" in names and len(names) >= 37
    assert weight_bytes(model) / bf16_bytes(text_encoder.model) <= 0.55
    folder = tmp_path / "te"
    folder.mkdir()
    text_encoder.model.config.save_pretrained(folder)
    _save_int8(model, folder / "model.int8.safetensors")
    loaded = load_quantized_text_model(folder)
    batch = text_encoder.tokenizer(prompts, padding="max_length", max_length=64, return_tensors="pt")
    a, b = model(**batch).last_hidden_state, loaded(**batch).last_hidden_state
    assert torch.equal(a, b)
    # what the DiT sees: TextEncoder's masked token states (padding zeroed)
    text_encoder_q = copy.copy(text_encoder)
    text_encoder_q.model = loaded
    got = text_encoder_q(prompts)
    assert torch.equal(got.mask, ref.mask)
    rel = ((got.tokens - ref.tokens).norm() / ref.tokens.norm()).item()
    assert 0 < rel < 0.05, rel


def test_each_encoder_runs_once_per_video():
    pipe = I2VPipeline.from_dir(SHIPPED_DIR / "teacher")
    calls = {"vision": 0, "text": 0, "vae_encode": 0}

    def count(name):
        def hook(*_):
            calls[name] += 1
        return hook

    pipe.dit.vision.register_forward_hook(count("vision"))
    pipe.text_encoder.model.register_forward_hook(count("text"))
    encode = pipe.vae.encode
    pipe.vae.encode = lambda *a, **k: (count("vae_encode")(), encode(*a, **k))[1]
    img = torch.zeros(1, 3, 64, 64)
    pipe(img, "a person talking", steps=3, guidance=6.0, num_frames=5)  # CFG: two branches, 3 steps
    assert calls == {"vision": 1, "text": 1, "vae_encode": 1}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "magicdistill", *args], capture_output=True, text=True, timeout=900)


def _one_line_error(r, needle):
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def test_generate_quantize_int8_writes_an_mp4(tmp_path):
    from magicdistill.video import read_video

    out = tmp_path / "q.mp4"
    r = _cli("generate", "--image", str(EXAMPLE), "--prompt", "The person is talking.", "--quantize", "int8",
             "--frames", "5", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)
    frames, _ = read_video(out)
    assert frames.shape == (5, 64, 64, 3)


@pytest.mark.parametrize("case,needle", [
    ("bad_quantize", "--quantize must be one of int8"),
    ("out_is_file", "is a file"),
    ("out_not_empty", "not empty"),
    ("no_model", "no model at"),
])
def test_bad_input_one_line_error_and_nothing_written(tmp_path, case, needle):
    if case == "bad_quantize":
        out = tmp_path / "v.mp4"
        r = _cli("generate", "--image", str(EXAMPLE), "--prompt", "talking", "--quantize", "int4", "--out", str(out))
        _one_line_error(r, needle)
        assert not out.exists()
        return
    out = tmp_path / "q"
    before = {}
    if case == "out_is_file":
        out.write_text("keep me")
    elif case == "out_not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    args = ["quantize", "--out", str(out)] + (["--model", str(tmp_path / "nothing")] if case == "no_model" else [])
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_line_error(_cli(*args), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary folder left behind
    if out.is_file():
        assert out.read_text() == "keep me"
    elif out.is_dir():
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_compile_unavailable_is_a_clear_error_before_loading(tmp_path, monkeypatch):
    from magicdistill.generate import generate

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "v.mp4"
    with pytest.raises(ValueError, match=r"torch.compile is unavailable here \(RuntimeError: no C\+\+ compiler"):
        generate(prompt="talking", out=out, image=EXAMPLE, compile=True)
    assert not out.exists()


@pytest.mark.slow
def test_quantize_command_writes_a_folder_generate_can_use(tmp_path):
    out = tmp_path / "int8"
    r = _cli("quantize", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "gate: PASS" in r.stdout and r.stdout.strip().splitlines()[-1] == str(out)
    rec = json.loads((out / "dit.json").read_text())
    assert rec["quantization"]["scheme"] == "int8_weight_only" and rec["quality_gate"]["passed"]
    assert min(rec["quality_gate"]["psnr_db"]) >= 40
    assert not (out / "transformer" / "diffusion_pytorch_model.safetensors").exists()  # no fp copy
    video = tmp_path / "v.mp4"
    r = _cli("generate", "--model", str(out), "--image", str(EXAMPLE), "--prompt", "talking", "--frames", "5",
             "--out", str(video))
    assert r.returncode == 0 and video.is_file(), r.stderr
