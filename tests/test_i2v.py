"""Magic 1-For-1 section 3: I2V by channel concat, converted from a T2V model."""

import copy
import json

import pytest
import torch

from magicdistill.models.dit import Condition, VideoDiT, tiny_transformer
from magicdistill.models.i2v import convert_t2v_to_i2v, i2v_input
from magicdistill.models.patch_embed import embed_tokens, widen_patch_embedding
from magicdistill.models.text import TextEmbedding


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def _inputs(cfg, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.latent_channels, 3, 8, 8, generator=g)
    ctx = torch.randn(b, 6, cfg.text_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)[:b]
    pooled = torch.randn(b, cfg.text_dim, generator=g)
    img = torch.randn(b, cfg.latent_channels, 1, 8, 8, generator=g)
    return x, ctx, mask, pooled, img


def test_i2v_input_layout():
    x = torch.randn(2, 4, 3, 8, 8)
    img = torch.randn(2, 4, 1, 8, 8)
    z = i2v_input(x, img)
    assert z.shape == (2, 9, 3, 8, 8)
    torch.testing.assert_close(z[:, :4], x)
    torch.testing.assert_close(z[:, 4:8, :1], img)
    assert z[:, 4:8, 1:].abs().sum() == 0  # zero-padded over time
    assert z[:, 8, 0].eq(1).all() and z[:, 8, 1:].eq(0).all()  # mask: ones on the first latent frame
    with pytest.raises(ValueError):
        i2v_input(x, torch.randn(2, 4, 2, 8, 8))
    # the recorded deviation: the image latent repeated over every latent frame, same mask
    r = i2v_input(x, img, "repeat")
    torch.testing.assert_close(r[:, :4], x)
    torch.testing.assert_close(r[:, 4:8], img.expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(r[:, 8], z[:, 8])
    with pytest.raises(ValueError, match="padding"):
        i2v_input(x, img, "reflect")


def test_image_padding_is_saved_and_changes_the_function(tiny_dit_cfg, tmp_path):
    cfg = tiny_dit_cfg.model_copy(update={"image_padding": "repeat"})
    torch.manual_seed(0)
    dit = VideoDiT.tiny(cfg, "i2v").eval()
    assert dit.image_padding == "repeat"
    with torch.no_grad():  # trained image channels, so the padding matters
        dit.transformer.x_embedder.proj.weight[:, cfg.latent_channels:].normal_(0, 0.1)
    dit.save(tmp_path / "m")
    loaded = VideoDiT.load(tmp_path / "m")
    assert loaded.image_padding == "repeat"
    x, ctx, mask, pooled, img = _inputs(cfg)
    cond = Condition(ctx, mask, pooled, img)
    s = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        out = loaded(x, s, cond)
        torch.testing.assert_close(out, dit(x, s, cond))
        loaded.image_padding = "zero"
        assert (loaded(x, s, cond) - out).abs().mean() > 1e-3
    # a folder written before the option existed loads as Magic 1-For-1's zero padding
    meta = json.loads((tmp_path / "m" / "dit.json").read_text())
    del meta["image_padding"]
    (tmp_path / "m" / "dit.json").write_text(json.dumps(meta))
    assert VideoDiT.load(tmp_path / "m").image_padding == "zero"


def test_widen_copies_old_and_zeroes_new():
    conv = torch.nn.Conv3d(4, 8, (1, 2, 2), (1, 2, 2))
    wide = widen_patch_embedding(conv, 9)
    torch.testing.assert_close(wide.weight[:, :4], conv.weight)
    assert wide.weight[:, 4:].abs().sum() == 0
    torch.testing.assert_close(wide.bias, conv.bias)
    with pytest.raises(ValueError):
        widen_patch_embedding(conv, 3)


def test_widen_kernel_centres_old_weights_and_keeps_the_function():
    """A 1-token (2x2) embedding widened to 3 tokens (6x6, stride 2, padded 2): the old kernel sits at the
    centre, the ring around it is zero, so the output is the same; then trained ring weights read the
    neighbouring tokens."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 8, (1, 2, 2), (1, 2, 2))
    wide = widen_patch_embedding(conv, 9, tokens=3)
    assert wide.kernel_size == (1, 6, 6) and wide.stride == (1, 2, 2) and wide.padding == (0, 2, 2)
    assert embed_tokens(conv) == 1 and embed_tokens(wide) == 3
    torch.testing.assert_close(wide.weight[:, :4, :, 2:4, 2:4], conv.weight)
    assert wide.weight.abs().sum() == conv.weight.abs().sum()  # everything else is zero
    x = torch.randn(2, 9, 3, 8, 8)
    with torch.no_grad():
        out = wide(x)
        torch.testing.assert_close(out, conv(x[:, :4]))
        assert out.shape == (2, 8, 3, 4, 4)  # the token grid keeps its size
        wide.weight[:, :, :, :2].normal_()  # a ring column: now the token to the left matters
        x2 = x.clone()
        x2[..., 0:2] += 1.0  # change the first token column only
        d = (wide(x2) - wide(x)).abs().mean((0, 1, 2, 3))  # per output token column
    assert d[0] > 1e-3 and d[1] > 1e-3 and d[2:].abs().max() < 1e-6  # column 1 reads column 0 now
    with pytest.raises(ValueError, match="narrow"):
        widen_patch_embedding(wide, tokens=1)
    with pytest.raises(ValueError, match="odd"):
        widen_patch_embedding(conv, tokens=2)


def test_embed_tokens_builds_saves_and_loads(tiny_dit_cfg, tmp_path):
    """DiTConfig.embed_tokens widens a fresh model's embedding (T2V and I2V), is recorded in dit.json, and a
    folder with it loads to the same function (diffusers' own loader would reject the 6x6 kernel)."""
    from magicdistill.config import DiTConfig

    cfg = tiny_dit_cfg.model_copy(update={"embed_tokens": 3})
    torch.manual_seed(0)
    t2v = VideoDiT.tiny(cfg, "t2v")
    assert t2v.transformer.x_embedder.proj.kernel_size == (1, 6, 6)
    dit = _randomise(VideoDiT.tiny(cfg, "i2v")).eval()
    proj = dit.transformer.x_embedder.proj
    assert proj.kernel_size == (1, 6, 6) and proj.in_channels == 2 * cfg.latent_channels + 1
    dit.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "dit.json").read_text())["embed_tokens"] == 3
    loaded = VideoDiT.load(tmp_path / "m")
    x, ctx, mask, pooled, img = _inputs(cfg)
    cond, s = Condition(ctx, mask, pooled, img), torch.tensor([0.7, 0.3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, s, cond), dit(x, s, cond))
    assert VideoDiT.load(tmp_path / "m", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="odd"):
        DiTConfig(embed_tokens=4)


def test_converted_model_equals_t2v_at_step_zero(tiny_dit_cfg):
    cfg = tiny_dit_cfg
    t2v = _randomise(tiny_transformer(cfg)).eval()
    i2v = convert_t2v_to_i2v(copy.deepcopy(t2v)).eval()
    assert i2v.config.in_channels == 2 * cfg.latent_channels + 1
    assert i2v.config.image_condition_type == "latent_concat"
    x, ctx, mask, pooled, img = _inputs(cfg)
    t = torch.tensor([900.0, 250.0])
    with torch.no_grad():
        ref = t2v(x, t, ctx, mask, pooled, return_dict=False)[0]
        out = i2v(i2v_input(x, img), t, ctx, mask, pooled, return_dict=False)[0]
    assert ref.abs().mean() > 1e-3  # a non-trivial function
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # ...and once the new channels are trained, the image changes the output
    with torch.no_grad():
        i2v.x_embedder.proj.weight[:, cfg.latent_channels:].normal_(0, 0.1)
        moved = i2v(i2v_input(x, img), t, ctx, mask, pooled, return_dict=False)[0]
    assert (moved - ref).abs().mean() > 1e-3
    with pytest.raises(ValueError):
        convert_t2v_to_i2v(i2v)


def test_video_dit_conditioning_and_mask_prefix(tiny_dit_cfg):
    dit = _randomise(VideoDiT.tiny(tiny_dit_cfg, "i2v")).eval()
    x, ctx, mask, pooled, img = _inputs(tiny_dit_cfg)
    text = TextEmbedding(ctx, mask, pooled)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    cond = dit.condition(text, image, img)
    assert cond.context.shape == (2, tiny_dit_cfg.image_tokens + 6, tiny_dit_cfg.text_dim)
    # valid tokens form a prefix (the transformer's masking relies on it)
    m = cond.mask.int()
    assert torch.equal(m, m.cummin(dim=1).values)
    assert cond.mask.sum(1).tolist() == [tiny_dit_cfg.image_tokens + 4, tiny_dit_cfg.image_tokens + 6]
    dropped = dit.condition(text, image, img, drop_image=torch.tensor([True, False]))
    assert dropped.context[0, : tiny_dit_cfg.image_tokens].abs().sum() == 0
    assert dropped.context[1, : tiny_dit_cfg.image_tokens].abs().sum() > 0
    with torch.no_grad():
        v = dit(x, torch.tensor([0.5, 0.5]), cond)
    assert v.shape == x.shape
    with pytest.raises(ValueError):
        dit.condition(text, None, img)
    # padding tokens are ignored: changing them does not change the output
    ctx2 = ctx.clone()
    ctx2[0, 4:] += 5.0
    with torch.no_grad():
        v2 = dit(x, torch.tensor([0.5, 0.5]), dit.condition(TextEmbedding(ctx2, mask, pooled), image, img))
    torch.testing.assert_close(v2, v, atol=1e-5, rtol=1e-5)


def test_condition_cat_and_index(tiny_dit_cfg):
    c = Condition(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 8), torch.randn(2, 4, 1, 8, 8))
    both = Condition.cat([c, c])
    assert both.context.shape[0] == 4
    torch.testing.assert_close(both.index(slice(2, 4)).image_latent, c.image_latent)


def test_prediction_parametrisations_give_exact_velocities(tiny_dit_cfg):
    """With the transformer's output fixed to zero: "v" returns 0; "x0" predicts x0 = 0, so
    v = x_t / sigma; "x0_image_residual" predicts x0 = the first-frame latent repeated over time."""
    from magicdistill.models.dit import SIGMA_FLOOR

    g = torch.Generator().manual_seed(0)
    c = tiny_dit_cfg.latent_channels
    x_t = torch.randn(2, c, 3, 8, 8, generator=g)
    img = torch.randn(2, c, 1, 8, 8, generator=g)
    sigma = torch.tensor([0.5, 0.01])  # the second is below the floor
    text = TextEmbedding(torch.randn(2, 5, tiny_dit_cfg.text_dim, generator=g), torch.ones(2, 5, dtype=torch.bool),
                         torch.randn(2, tiny_dit_cfg.text_dim, generator=g))
    s = sigma.clamp(min=SIGMA_FLOOR).view(-1, 1, 1, 1, 1)
    expected = {"v": torch.zeros_like(x_t), "x0": x_t / s, "x0_image_residual": (x_t - img) / s}
    for pred, want in expected.items():
        dit = VideoDiT.tiny(tiny_dit_cfg.model_copy(update={"prediction": pred}), "i2v")
        with torch.no_grad():
            dit.transformer.proj_out.weight.zero_()
            dit.transformer.proj_out.bias.zero_()
            v = dit(x_t, sigma, dit.condition(text, torch.zeros(2, 3, 32, 32), img))
        torch.testing.assert_close(v, want, msg=pred)
    assert VideoDiT.tiny(tiny_dit_cfg, "t2v").prediction == "x0"  # no first frame to build on
    with pytest.raises(ValueError, match="prediction must be"):
        VideoDiT(tiny_transformer(tiny_dit_cfg), prediction="eps")


def test_gated_skip_passes_the_input_through_only_where_the_gate_and_the_noise_allow(tiny_dit_cfg, tmp_path):
    """skip 'gated': x0_hat = m + a (x_t - (1 - sigma) m) / (1 - sigma) + (1 - a) F,
    a = sigmoid(logits) (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2)."""
    cfg = tiny_dit_cfg.model_copy(update={"skip": "gated"})
    torch.manual_seed(0)
    dit = VideoDiT.tiny(cfg, "i2v").eval()
    c = cfg.latent_channels
    assert dit.transformer.config.out_channels == 2 * c and dit.latent_channels == c
    assert torch.all(dit.transformer.proj_out.bias.view(2 * c, -1)[c:] == -2.0)  # gates start mostly closed
    assert torch.all(dit.transformer.proj_out.bias.view(2 * c, -1)[:c] != -2.0)
    x, ctx, mask, pooled, img = _inputs(cfg)
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, c, 3, 8, 8, generator=g)
    out = lambda logit: torch.cat([f, torch.full_like(f, logit)], dim=1)  # noqa: E731
    s = lambda v: torch.tensor([v, v])  # noqa: E731
    torch.testing.assert_close(dit.x0_hat(x, s(1e-4), out(30.0), img), x, atol=2e-3, rtol=0)  # open, clean: copy
    torch.testing.assert_close(dit.x0_hat(x, s(1e-4), out(-30.0), img), img + f)  # closed: the prediction
    torch.testing.assert_close(dit.x0_hat(x, s(1.0), out(30.0), img), img + f)  # pure noise: nothing to copy
    sig, logit = 0.3, 0.4
    a = torch.sigmoid(torch.tensor(logit)) * (1 - sig) ** 2 / ((1 - sig) ** 2 + sig ** 2)
    want = img + a * (x - (1 - sig) * img) / (1 - sig) + (1 - a) * f
    torch.testing.assert_close(dit.x0_hat(x, s(sig), out(logit), img), want)
    # T2V (plain x0): the same gate around x_t / (1 - sigma)
    t2v = VideoDiT.tiny(cfg, "t2v")
    torch.testing.assert_close(t2v.x0_hat(x, s(sig), out(logit), None), a * x / (1 - sig) + (1 - a) * f)
    # the velocity is (x_t - x0_hat) / sigma with that x0_hat
    cond = Condition(ctx, mask, pooled, img)
    with torch.no_grad():
        raw = dit.transformer(i2v_input(x, img), s(0.6) * 1000, ctx, mask, pooled, return_dict=False)[0]
        torch.testing.assert_close(dit(x, s(0.6), cond), (x - dit.x0_hat(x, s(0.6), raw, img)) / 0.6)
    # saved and loaded with the folder
    dit.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "dit.json").read_text())["skip"] == "gated"
    loaded = VideoDiT.load(tmp_path / "m")
    assert loaded.skip == "gated" and loaded.latent_channels == c
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, s(0.6), cond), dit(x, s(0.6), cond))
    with pytest.raises(ValueError, match="needs an x0 prediction"):
        VideoDiT(tiny_transformer(tiny_dit_cfg), prediction="v", skip="gated")
    with pytest.raises(ValueError, match="skip must be one of"):
        VideoDiT(tiny_transformer(tiny_dit_cfg), prediction="x0", skip="wiener")
