"""train-vae --decoder-only --generated-from: the decoder also fitted to a generator's latents."""

import json

import pytest
import torch

from magicdistill.models.patch_vae import CausalPatchVAE
from magicdistill.models.vae import VideoVAE, load_vae
from magicdistill.pipeline import SHIPPED_DIR


def _steps(levels: list[float]) -> torch.Tensor:
    """A 1x3x17x8x8 video: a fixed pattern brightened by ``levels[t]`` / 10 at frame t."""
    pattern = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    return (pattern + torch.tensor(levels).view(1, -1, 1, 1) / 10)[None]


def test_second_difference_loss_is_zero_for_even_motion_and_largest_for_a_judder():
    from magicdistill.train.vae_decoder import second_difference_loss

    even = _steps([t * 0.25 for t in range(17)])  # brightens evenly
    # the same change over 16 frames, but standing still inside each group of 4 and jumping between
    judder = _steps([0.0] + [((t - 1) // 4) * 1.0 + 1.0 for t in range(1, 17)])
    assert second_difference_loss(even, 4).item() == pytest.approx(0.0, abs=1e-6)
    assert second_difference_loss(judder, 4).item() > 0.05
    # the boundary term: the same jumps placed inside the groups (phase 2) cost less
    inside = _steps([0.0, 0.0] + [((t - 2) // 4) * 1.0 + 1.0 for t in range(2, 17)])
    assert second_difference_loss(inside, 4).item() < second_difference_loss(judder, 4).item()


def test_init_with_another_context_is_refused():
    from magicdistill.train.vae_decoder import decoder_from

    vae = VideoVAE(CausalPatchVAE(latent_channels=4, hidden=16, blocks=1, decoder_context=2))
    with pytest.raises(ValueError, match="--decoder-context 2"):
        decoder_from(vae, 3)
    assert decoder_from(vae, 2).model.config.decoder_context == 2


def test_finetune_on_generated_latents_continues_the_shipped_decoder(tmp_path):
    from magicdistill.config import VAETrainConfig
    from magicdistill.train.vae_decoder import finetune_decoder

    cfg = VAETrainConfig(pool_clips=2, pca_clips=2, steps=1, batch_size=1, decoder_only=True, decoder_context=3,
                         init_from=str(SHIPPED_DIR / "vae"), temporal_weight=1.0, crop=32, lr=1e-4,
                         generated_from=str(SHIPPED_DIR / "generator"), generated_latents=2)
    finetune_decoder(cfg, str(tmp_path / "run"), eval_clips=1)
    latents = torch.load(tmp_path / "run" / "generated_latents.pt")
    assert latents.shape == (2, 16, 5, 16, 16)  # the generator's latents: 17 frames of 64x64
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "gen_smooth" in r)
    assert step["gen_smooth"] > 0 and 0 < step["gen_consistency"] < 0.1  # decodings re-encode close to z
    assert not any("fit_judder" in r for r in rows)  # the fitted context path is continued, not refitted
    before, after = load_vae(SHIPPED_DIR / "vae").model.state_dict(), load_vae(tmp_path / "run" / "vae").model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("enc_"))
    moved = (after["dec_ctx.weight"] - before["dec_ctx.weight"]).abs().max().item()
    assert 0 < moved < 1e-3  # one Adam step at 1e-4 (warm-up 1/20) from the shipped weights
    # the generated-latent loss is in the step: without it (weights 0) the same step lands elsewhere
    finetune_decoder(cfg.model_copy(update={"smooth_weight": 0.0, "consistency_weight": 0.0}), str(tmp_path / "real"),
                     eval_clips=1)
    real_only = load_vae(tmp_path / "real" / "vae").model.state_dict()
    assert not torch.equal(real_only["dec_ctx.weight"], after["dec_ctx.weight"])
