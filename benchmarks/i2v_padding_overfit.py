"""Diagnostic for the teacher's blocky frames on swaying heads (docs/research/LOG.md).

Overfits a fresh tiny TI2V DiT on 8 swaying training clips, twice from the same seed: with the image latent
zero-padded over time in the concat channels (Magic 1-For-1, what the package does) and repeat-padded (every latent
frame sees the image at its own position). Prints the one-step x0 error / variance at sigma 0.5 and 0.9 on those
clips after the same number of steps. The repeat-padded variant is patched in here only (no package option yet).

    OMP_NUM_THREADS=1 python benchmarks/i2v_padding_overfit.py [STEPS=400]
"""
import sys, torch, time
import magicdistill.models.dit as dit_mod
from magicdistill.models.i2v import i2v_input as zero_pad
from magicdistill.config import DiTConfig, TeacherTrainConfig
from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
from magicdistill.data.latent_cache import build_latent_set
from magicdistill.models.vae import load_vae
from magicdistill.models.text import TextEncoder
from magicdistill.models.dit import VideoDiT
from magicdistill.pipeline import SHIPPED_DIR
from magicdistill.train.teacher import teacher_loss, step_generator
from magicdistill.flow import add_noise, x0_from_v
torch.set_num_threads(1)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 400

def repeat_pad(x_t, image_latent):
    b, c, t, h, w = x_t.shape
    mask = torch.zeros(b, 1, t, h, w, dtype=x_t.dtype); mask[:, :, :1] = 1.0
    return torch.cat([x_t, image_latent.to(x_t.dtype).expand(-1, -1, t, -1, -1), mask], dim=1)

class Sway:
    def __init__(self, src): self.src, self.idx = src, [i for i in range(400) if src.clip(i, portrait_only=True).labels.get("sway", 0) > 0][:8]
    def clip(self, i, portrait_only=False): return self.src.clip(self.idx[i], portrait_only=True)

vae = load_vae(SHIPPED_DIR / "vae"); enc = TextEncoder(max_tokens=64)
data = build_latent_set(Sway(SyntheticVideos(SyntheticVideoConfig(), "train", 0)), 8, vae, enc)
null = enc([""]); cfg = TeacherTrainConfig(text_dropout=0.0, image_dropout=0.0)
for name, pad in (("zero-padded", zero_pad), ("repeat-padded", repeat_pad)):
    dit_mod.i2v_input = pad
    torch.manual_seed(0)
    dit = VideoDiT.tiny(DiTConfig(), "i2v").train()
    opt = torch.optim.AdamW(dit.parameters(), lr=4e-4, weight_decay=0.01, betas=(0.9, 0.99))
    t0 = time.time()
    for s in range(steps):
        g = step_generator(0, s)
        loss = teacher_loss(dit, data, torch.randint(8, (8,), generator=g), null, cfg, g)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0); opt.step()
    dit.eval(); idx = torch.arange(8)
    with torch.no_grad():
        cond = dit.condition(data.text.index(idx).to(dtype=torch.float32), data.first_frame_pixels(idx), data.image_latents)
        x0 = data.latents; eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)); var = x0[:, :, 1:].var().item()
        still = (data.image_latents.expand_as(x0) - x0)[:, :, 1:].pow(2).mean().item() / var
        errs = []
        for sg in (0.5, 0.9):
            sig = torch.full((8,), sg); xt = add_noise(x0, eps, sig)
            errs.append(round((x0_from_v(xt, dit(xt, sig, cond), sig) - x0)[:, :, 1:].pow(2).mean().item() / var, 4))
    print(f"{name}: {steps} steps in {time.time()-t0:.0f} s, last loss {loss.item():.4f}, still baseline {still:.3f}, x0 err/var @0.5, 0.9: {errs}", flush=True)
