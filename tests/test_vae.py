"""VAEs behind one interface: the shipped causal patch VAE and tiny random Hunyuan / Wan VAEs."""

import pytest
import torch

from magicdistill.models.patch_vae import CausalPatchVAE
from magicdistill.models.vae import VideoVAE, load_vae, tiny_hunyuan_vae
from magicdistill.pipeline import SHIPPED_DIR


def _video(b=2, t=9, h=32, w=32, seed=0):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_patch_vae_shapes_and_causality():
    torch.manual_seed(0)
    m = CausalPatchVAE(latent_channels=4, hidden=16, blocks=1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # make every branch non-trivial
    vae = VideoVAE(m)
    x = _video()
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (2, 4, 3, 8, 8)
        y = vae.decode(z)
        assert y.shape == x.shape and y.abs().max() <= 1
        # encoder causality: changing frames after the first group leaves earlier latents unchanged
        x2 = x.clone()
        x2[:, :, 5:] = 0
        z2 = vae.encode(x2)
        torch.testing.assert_close(z2[:, :, :2], z[:, :, :2])
        assert (z2[:, :, 2:] - z[:, :, 2:]).abs().max() > 0
        # decoder causality: changing the last latent leaves the first 5 frames unchanged
        z3 = z.clone()
        z3[:, :, 2:] += 1
        torch.testing.assert_close(vae.decode(z3)[:, :, :5], y[:, :, :5])
        # the first frame alone encodes to the clip's first latent (strictly causal)
        torch.testing.assert_close(vae.encode(x[:, :, :1]), z[:, :, :1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(_video(t=8))


def test_pca_init_reconstructs_before_training():
    x = (_video(b=4, t=5, h=16, w=16, seed=1) * 0.2).clamp(-1, 1)
    x = x + torch.linspace(-0.5, 0.5, 16).view(1, 1, 1, 1, 16)  # structured: a shared gradient
    m = CausalPatchVAE(latent_channels=8, hidden=16, blocks=1)
    vae = VideoVAE(m)
    with torch.no_grad():
        before = (vae.decode(vae.encode(x)) - x).abs().mean()
        m.init_pca(x)
        after = (vae.decode(vae.encode(x)) - x).abs().mean()
    assert after < 0.5 * before


def test_save_load_round_trip_keeps_normalisation(tmp_path):
    m = CausalPatchVAE(latent_channels=4, hidden=16, blocks=1)
    vae = VideoVAE(m)
    vae.set_normalisation(torch.arange(4.0), torch.full((4,), 2.0))
    vae.save(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    x = _video(t=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), vae.encode(x))
    raw = m.encode(x).latent_dist.mode()
    torch.testing.assert_close(vae.encode(x), (raw - torch.arange(4.0).view(1, -1, 1, 1, 1)) / 2.0)


def test_shipped_vae_reconstructs_synthetic_clips():
    from magicdistill.data.synthetic import SyntheticVideos
    from magicdistill.train.vae_trainer import psnr
    from magicdistill.video import frames_to_tensor

    vae = load_vae(SHIPPED_DIR / "vae")
    src = SyntheticVideos(split="test", seed=5)
    x = torch.stack([frames_to_tensor(src.clip(i).frames) for i in range(4)])
    with torch.no_grad():
        assert psnr(vae.decode(vae.encode(x)), x).mean() > 24.0


@pytest.mark.parametrize("family", ["hunyuan", "wan"])
def test_real_vae_classes_through_the_adapter(tmp_path, family):
    torch.manual_seed(0)
    if family == "hunyuan":
        model = tiny_hunyuan_vae(latent_channels=4, block_out_channels=(8, 16, 16), spatial_ratio=4)
    else:
        from diffusers import AutoencoderKLWan

        model = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[True, True], latents_mean=[0.1] * 4, latents_std=[2.0] * 4)
    model.save_pretrained(str(tmp_path / "vae"))
    vae = load_vae(tmp_path / "vae")
    assert vae.temporal_ratio == 4
    x = _video(b=1, t=5, h=16, w=16)
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape[:3] == (1, 4, 2) and z.shape[-1] == 16 // vae.spatial_ratio
        assert vae.decode(z).shape == x.shape


def test_load_vae_errors(tmp_path):
    with pytest.raises(ValueError, match="no VAE"):
        load_vae(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(ValueError, match="supported"):
        load_vae(tmp_path)


def test_recalibrate_per_channel_gives_unit_channels_and_keeps_the_weights(tmp_path):
    """`calibrate-vae`: a new folder, same weights, every latent channel at unit std on the calibration clips."""
    from magicdistill.config import DataConfig
    from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
    from magicdistill.train.vae_trainer import recalibrate_vae
    from magicdistill.video import frames_to_tensor

    out = recalibrate_vae(SHIPPED_DIR / "vae", tmp_path / "pc", "per_channel", clips=8)
    pc, shipped = load_vae(out), load_vae(SHIPPED_DIR / "vae")
    assert all(torch.equal(a, b) for a, b in zip(pc.model.state_dict().values(), shipped.model.state_dict().values()))
    src = SyntheticVideos(SyntheticVideoConfig.of(DataConfig()), "train", DataConfig().seed)
    x = torch.stack([frames_to_tensor(src.clip(i).frames) for i in range(8)])
    with torch.no_grad():
        z, z_global = pc.encode(x), shipped.encode(x)
        torch.testing.assert_close(pc.decode(z), shipped.decode(z_global), atol=1e-4, rtol=1e-4)  # same video
    torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.ones(z.shape[1]), atol=1e-4, rtol=1e-4)
    spread = z_global.std(dim=(0, 2, 3, 4))
    assert spread.max() / spread.min() > 5  # the global std keeps the channels' spectrum; per-channel flattens it
    with pytest.raises(ValueError, match="normalisation"):
        recalibrate_vae(SHIPPED_DIR / "vae", tmp_path / "bad", "per_pixel", clips=8)
    with pytest.raises(ValueError, match="multiple of 8"):  # clips are encoded 8 at a time
        recalibrate_vae(SHIPPED_DIR / "vae", tmp_path / "bad", "per_channel", clips=12)
    assert not (tmp_path / "bad").exists()


# --- decoder context (no group-boundary judder) ---------------------------------------------------

def test_decoder_context_starts_as_the_old_decoder_and_keeps_the_latent_space():
    from magicdistill.train.vae_decoder import decoder_from

    torch.manual_seed(0)
    m = CausalPatchVAE(latent_channels=4, hidden=16, blocks=1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    old = VideoVAE(m)
    old.set_normalisation(torch.arange(4.0) / 10, torch.full((4,), 1.5))
    new = decoder_from(old, 2)
    assert new.model.config.decoder_context == 2 and old.model.config.decoder_context == 0
    x = _video(t=13)
    with torch.no_grad():
        z = old.encode(x)
        assert torch.equal(new.encode(x), z)  # same encoder, same normalisation: same latents
        torch.testing.assert_close(new.decode(z), old.decode(z))  # new layers start at zero
        for p in list(new.model.dec_ctx.parameters()) + list(new.model.trefine.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
        y = new.decode(z)
        assert (y - old.decode(z)).abs().max() > 1e-3  # the context layers are in the decode path
        # still causal: a change to latent frame 2 leaves frames 0..4 (latents 0 and 1) unchanged
        z2 = z.clone()
        z2[:, :, 2:] += 1
        torch.testing.assert_close(new.decode(z2)[:, :, :5], y[:, :, :5])
        assert (new.decode(z2)[:, :, 5:] - y[:, :, 5:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="decoder_context"):
        CausalPatchVAE(latent_channels=4, hidden=16, blocks=1, decoder_context=-1)


def test_shipped_vae_decodes_without_group_boundary_judder():
    """Phase-0 transitions (0->1, 4->5, ...) of the round trip move about as much as the others, as in
    the data (ratio ~1.1); the group-wise decoder gave 2.2-2.3 on the same clips."""
    from magicdistill.data.synthetic import SyntheticVideos
    from magicdistill.eval.judder import judder_ratio, transition_differences
    from magicdistill.train.vae_trainer import psnr
    from magicdistill.video import frames_to_tensor

    vae = load_vae(SHIPPED_DIR / "vae")
    src = SyntheticVideos(split="test", seed=5)
    x = torch.stack([frames_to_tensor(src.clip(i).frames) for i in range(4)])
    with torch.no_grad():
        rec = vae.decode(vae.encode(x))
    data = judder_ratio(transition_differences(x))
    assert judder_ratio(transition_differences(rec)) < JUDDER_LIMIT * data
    assert psnr(rec, x).mean() > 24.0


JUDDER_LIMIT = 1.3  # x the data's own ratio (the shipped decoder: 1.20x on 32 held-out clips, docs/VAE.md; the old one 2.0x)


def test_decoder_only_finetune_trains_the_decoder_and_freezes_the_encoder(tmp_path):
    from magicdistill.config import DataConfig, VAETrainConfig
    from magicdistill.train.vae_decoder import finetune_decoder

    torch.manual_seed(0)
    init = VideoVAE(CausalPatchVAE(latent_channels=4, hidden=16, blocks=1))
    init.set_normalisation(torch.zeros(4), torch.full((4,), 2.0))
    init.save(tmp_path / "init")
    cfg = VAETrainConfig(data=DataConfig(height=32, width=32, num_frames=9), latent_channels=4, hidden=16, blocks=1,
                         pool_clips=3, steps=2, batch_size=1, clip_frames=9, decoder_only=True,
                         init_from=str(tmp_path / "init"), decoder_context=1, temporal_weight=1.0, crop=16)
    vae = finetune_decoder(cfg, str(tmp_path / "run"), eval_clips=2)
    saved = load_vae(tmp_path / "run" / "vae")
    assert saved.model.config.decoder_context == 1
    before = load_vae(tmp_path / "init").model.state_dict()
    after = saved.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("enc_"))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("dec_"))
    torch.testing.assert_close(saved.shift, init.shift) and torch.testing.assert_close(saved.scale, init.scale)
    x = _video(b=1, t=9)
    with torch.no_grad():
        assert torch.equal(saved.encode(x), init.encode(x))
    # resumable like train-vae: the same command again continues from the checkpoint (here: complete)
    again = finetune_decoder(cfg, str(tmp_path / "run"), resume=True, eval_clips=2)
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in vae.model.state_dict().items())
    with pytest.raises(ValueError, match="differs"):
        finetune_decoder(cfg.model_copy(update={"temporal_weight": 2.0}), str(tmp_path / "run"), resume=True)
    with pytest.raises(ValueError, match="--crop must be a multiple of 4"):
        finetune_decoder(cfg.model_copy(update={"crop": 10}), str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()  # checked before the run folder is made
