"""Tiny stand-ins shared by the distillation tests: a random-weight teacher folder and a batch."""

from pathlib import Path

import torch

from magicdistill.config import DiTConfig
from magicdistill.distill.w2s import DistillBatch
from magicdistill.models.dit import VideoDiT
from magicdistill.models.patch_vae import CausalPatchVAE
from magicdistill.models.text import TextEmbedding
from magicdistill.models.vae import VideoVAE


def write_tiny_teacher(root: Path, task: str = "i2v") -> Path:
    """A 32x32, 5-frame teacher (random weights; I2V or T2V) with its VAE beside it, as models are shipped."""
    torch.manual_seed(0)
    VideoVAE(CausalPatchVAE(latent_channels=4, hidden=16, blocks=1)).save(root / "vae")
    cfg = DiTConfig(latent_channels=4, hidden_heads=2, head_dim=16, num_layers=1, num_single_layers=1,
                    rope_axes_dim=(4, 6, 6), image_tokens=4)
    VideoDiT.tiny(cfg, task).save(root / "teacher", task=task, height=32, width=32, num_frames=5, fps=8.0,
                                   max_text_tokens=32)
    return root / "teacher"


def toy_batch(cfg_dit: DiTConfig, seed: int = 0) -> DistillBatch:
    """Two random clips of 3 latent frames at 8x8 with random text; the first frame is the image latent."""
    g = torch.Generator().manual_seed(seed)
    c, d = cfg_dit.latent_channels, cfg_dit.text_dim
    x = torch.randn(2, c, 3, 8, 8, generator=g)
    text = TextEmbedding(torch.randn(2, 5, d, generator=g), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, d, generator=g))
    null = TextEmbedding(torch.zeros(2, 5, d), torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, d))
    return DistillBatch(x, text, null, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, x[:, :, :1].clone())


def decode_served_mp4(mp4: bytes) -> "np.ndarray":
    """The frames the model made, from a served mp4's bytes: the file is stored enlarged (video.write_mp4's integer
    upscale, which browsers show); read_video undoes it, and the stored size must be a whole multiple of the model's."""
    import io
    import tempfile
    from pathlib import Path

    import av

    from magicdistill.video import read_video

    with av.open(io.BytesIO(mp4)) as c:
        stored = c.streams.video[0].codec_context
        stored_hw = (stored.height, stored.width)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "v.mp4"
        f.write_bytes(mp4)
        frames, _ = read_video(f)
    assert stored_hw[0] % frames.shape[1] == 0 and stored_hw[0] // frames.shape[1] == stored_hw[1] // frames.shape[2]
    return frames
