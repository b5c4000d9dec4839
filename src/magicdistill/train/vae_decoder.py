"""``magicdistill train-vae --decoder-only --init-from VAE``: fine-tune a CausalPatchVAE's decoder.

The encoder (and with it the latent space and its normalisation, which the shipped teacher and
generators were trained in) is copied from ``init_from`` and frozen; the decoder is rebuilt with
``decoder_context`` previous latent frames (models/patch_vae.py, "Decoder context": new layers
zero-initialised, so the rebuilt VAE decodes exactly as ``init_from``), then

1. the context path is set in closed form (``fit_context``: ridge least squares on ``pca_clips``
   training clips; alone it took the judder ratio from 2.31 to 1.18 on held-out clips, data 1.05);
2. the whole decoder is fine-tuned for ``steps`` with

    L1 + MSE + temporal_weight * (|D(rec) - D(x)| + |D(rec) - D(x)| at group boundaries)

where D is the frame difference x[t+1] - x[t] and a group boundary is a phase-0 transition
(eval/judder.py): the term asks the decoded video to move when and as much as the clip does, which
a per-frame loss does not (a still group plus a jump costs little per frame). Batches are fixed by
(seed, step), as in ``train-vae``, so ``--resume`` replays the same data.

With ``generated_from`` (a model folder) each step also decodes a batch of that generator's latents
(``generated_latents`` of them, sampled once from training-split first frames). A generator's
latents move more between latent frames than encodings of real clips, and a decoder fitted on
encodings alone judders more on them (docs/VAE.md). They have no ground-truth frames, so their
loss asks for what any good decoding of z has:

    consistency_weight * |E(D(z)) - z|^2 + smooth_weight * (|A(D(z))| + |A(D(z))| at group boundaries)

with the frozen encoder E (a latent fixes only its group's compressed projection: the decoding
must encode back to z) and A the second frame difference x[t+1] - 2 x[t] + x[t-1] (among the
decodings of z, the one that moves evenly across group boundaries, as real motion at 8 fps does
over three frames). If ``init_from`` already has the context path, the closed-form fit is skipped
and its decoder is fine-tuned further.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import atomic_folder
from ..config import VAETrainConfig
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..eval.judder import judder_ratio, transition_differences
from ..models.patch_vae import CausalPatchVAE
from ..models.vae import VideoVAE, load_vae
from ..video import frames_to_tensor
from .run import Run, lr_schedule


def decoder_from(init: VideoVAE, context: int) -> VideoVAE:
    """A VAE with ``init``'s weights and normalisation and a decoder with ``context`` previous latents
    (new layers zero: it decodes as ``init`` does until trained)."""
    if not isinstance(init.model, CausalPatchVAE):
        raise ValueError("--decoder-only fine-tunes the embedded default's CausalPatchVAE; "
                         f"--init-from holds a {type(init.model).__name__}")
    cfg = {k: v for k, v in init.model.config.items() if not k.startswith("_")}
    if cfg.get("decoder_context", 0) not in (0, context):
        raise ValueError(f"--init-from VAE reads {cfg['decoder_context']} previous latent frames; fine-tune it with "
                         f"--decoder-context {cfg['decoder_context']} (or start from a group-wise VAE)")
    model = CausalPatchVAE(**{**cfg, "decoder_context": context})
    missing, unexpected = model.load_state_dict(init.model.state_dict(), strict=False)
    new = {n for n in missing if not n.startswith(("dec_ctx", "trefine"))}
    if new or unexpected:
        raise ValueError(f"--init-from VAE does not match: missing {sorted(new)}, unexpected {sorted(unexpected)}")
    return VideoVAE(model)


@torch.no_grad()
def fit_context(model: CausalPatchVAE, clips: torch.Tensor, ridge: float = 1e-3) -> tuple[float, float]:
    """Closed-form start of the decoder context (as ``init_pca`` is for the linear path): ``dec_ctx``
    set to the ridge least-squares map from the stacked latent frames t..t-K (5x5) to what the rest
    of the decoder leaves of group t's patch, over ``clips`` (N, 3, T, H, W); the encoder's mean
    latents. Returns the patch MSE before and after (the refines come after the patches)."""
    conv = model.dec_ctx
    k2 = conv.kernel_size[0] * conv.kernel_size[1]
    n_in = conv.in_channels * k2 + 1
    a = torch.zeros(n_in, n_in, dtype=torch.float64)
    rhs = torch.zeros(n_in, model.p, dtype=torch.float64)
    sse, count = 0.0, 0
    for chunk in clips.split(8):
        z = model.encode(chunk).latent_dist.mode()
        resid = (model._patches(chunk) - model.decode_patches(z, context=False)).reshape(-1, model.p).double()
        cols = F.unfold(model.context_input(z), conv.kernel_size, padding=conv.padding)  # (BT, in*k2, hw)
        feats = cols.permute(0, 2, 1).reshape(-1, n_in - 1).double()
        feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
        a += feats.T @ feats
        rhs += feats.T @ resid
        sse, count = sse + resid.pow(2).sum().item(), count + resid.numel()
    a += ridge * a.diagonal().mean() * torch.eye(n_in, dtype=torch.float64)
    w = torch.linalg.solve(a, rhs)
    conv.weight.copy_(w[:-1].T.reshape(conv.weight.shape).float())
    conv.bias.copy_(w[-1].float())
    after = sum((model._patches(c) - model.decode_patches(model.encode(c).latent_dist.mode())).pow(2).sum().item()
                for c in clips.split(8))
    return sse / count, after / count


def crop(x: torch.Tensor, cfg: VAETrainConfig, step: int) -> torch.Tensor:
    """The same random crop window for the whole batch of ``step`` (fixed by (seed, step) for resuming);
    a multiple of the spatial ratio, so patches stay aligned with the full-frame grid."""
    if not cfg.crop:
        return x
    s, (hh, ww) = cfg.spatial_ratio, x.shape[-2:]
    if cfg.crop % s or cfg.crop > min(hh, ww):
        raise ValueError(f"--crop must be a multiple of {s} and at most the frame size {hh}x{ww}, got {cfg.crop}")
    rng = np.random.default_rng([cfg.seed, step, 1])
    top, left = (int(rng.integers(0, (n - cfg.crop) // s + 1)) * s for n in (hh, ww))
    return x[..., top:top + cfg.crop, left:left + cfg.crop]


def second_difference_loss(v: torch.Tensor, ratio: int) -> torch.Tensor:
    """v (B, 3, T, H, W): mean |x[t+1] - 2 x[t] + x[t-1]| over all frames t, plus over those next to a
    group boundary (centred on either frame of a phase-0 transition t -> t + 1, t > 0)."""
    acc = (v[:, :, 2:] - 2 * v[:, :, 1:-1] + v[:, :, :-2]).abs()  # centred on frames 1 .. T-2
    centre = torch.arange(1, v.shape[2] - 1)
    edge = ((centre % ratio == 0) | ((centre - 1) % ratio == 0)) & (centre > 1)
    return acc.mean() + acc[:, :, edge].mean()


@torch.no_grad()
def generated_latents(folder: str, count: int, seed: int) -> torch.Tensor:
    """(count, C, T', h, w) normalised latents of the model at ``folder`` (its recorded sampler) for
    training-split portraits' first frames and captions, generator seed ``seed + i``."""
    from ..pipeline import I2VPipeline, model_sampler, read_record, sample_video

    rec = model_sampler(read_record(folder))
    pipe = I2VPipeline.from_dir(folder)
    train = SyntheticVideos(split="train", seed=seed)
    out = []
    for i in tqdm(range(count), desc="sampling generated latents"):
        clip = train.clip(i, portrait_only=True)
        image = frames_to_tensor(clip.frames[0][None])[:, 0][None]
        out.append(sample_video(pipe.dit, pipe.vae, pipe.text_encoder([clip.caption]), pipe.null_text, image,
                                num_frames=pipe.spec.num_frames, generator=torch.Generator().manual_seed(seed + i),
                                steps=rec["steps"], guidance=rec["guidance"], shift=rec["shift"], decode=False,
                                sampler=rec["kind"], eta=rec["eta"]))
    return torch.cat(out)


def generated_loss(vae: VideoVAE, latents: torch.Tensor, cfg: VAETrainConfig, step: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(second-difference loss, consistency loss) on step's batch of generated latents, cropped in latent
    space like the real clips (the encoder-decoder is convolutional)."""
    rng = np.random.default_rng([cfg.seed, step, 2])
    z = latents[rng.integers(0, len(latents), cfg.batch_size)]
    if cfg.crop:
        c = cfg.crop // cfg.spatial_ratio
        top, left = (int(rng.integers(0, n - c + 1)) for n in z.shape[-2:])
        z = z[..., top:top + c, left:left + c]
    video = vae.decode(z)
    consistency = (vae.encode(video) - z)[..., 1:-1, 1:-1].pow(2).mean()  # the crop's edges see padding
    return second_difference_loss(video, vae.temporal_ratio), consistency


def temporal_loss(rec: torch.Tensor, x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Frame-difference L1 over every transition plus over the group-boundary (phase-0) ones."""
    err = ((rec[:, :, 1:] - rec[:, :, :-1]) - (x[:, :, 1:] - x[:, :, :-1])).abs()
    return err.mean() + err[:, :, ::ratio].mean()


@torch.no_grad()
def evaluate(vae: VideoVAE, data: SyntheticVideoConfig = SyntheticVideoConfig(), clips: int = 32,
             seed: int = 0) -> dict[str, float]:
    """Held-out synthetic clips: round-trip PSNR, judder ratio of the round trip and of the data."""
    from .vae_trainer import psnr

    test = SyntheticVideos(data, "test", seed)
    x = torch.stack([frames_to_tensor(test.clip(i).frames) for i in range(clips)])
    rec = torch.cat([vae.decode(vae.encode(c)) for c in x.split(8)])
    r = vae.temporal_ratio
    return {"test_psnr": psnr(rec, x).mean().item(), "judder": judder_ratio(transition_differences(rec), r),
            "data_judder": judder_ratio(transition_differences(x), r)}


def finetune_decoder(cfg: VAETrainConfig, out: str, *, resume: bool = False, eval_clips: int = 32) -> VideoVAE:
    from .vae_trainer import vae_batch

    if not cfg.init_from:
        raise ValueError("--decoder-only needs --init-from, the VAE folder whose encoder is kept")
    if cfg.decoder_context < 1:
        raise ValueError("--decoder-only needs --decoder-context >= 1 (previous latent frames the decoder reads)")
    if cfg.crop and (cfg.crop % cfg.spatial_ratio or cfg.crop > min(cfg.data.height, cfg.data.width)):
        raise ValueError(f"--crop must be a multiple of {cfg.spatial_ratio} and at most the frame size "
                         f"{cfg.data.height}x{cfg.data.width}, got {cfg.crop}")
    torch.manual_seed(cfg.seed)
    run = Run(out, cfg, resume=resume)
    init = load_vae(cfg.init_from)
    refit = init.model.config.get("decoder_context", 0) == 0  # else: fine-tune its fitted context path further
    vae = decoder_from(init, cfg.decoder_context).to(cfg.device)
    vae.check_frames(cfg.clip_frames)
    for p in vae.model.encoder_parameters():
        p.requires_grad_(False)
    params = vae.model.decoder_parameters()
    source = SyntheticVideos(SyntheticVideoConfig.of(cfg.data), "train", cfg.data.seed)
    pool = torch.from_numpy(np.stack([source.clip(i).frames for i in tqdm(range(cfg.pool_clips), desc="rendering clips")]))
    gen = None
    if cfg.generated_from:
        cache = run.dir / "generated_latents.pt"  # sampled once per run; resuming reads them back
        if resume and cache.is_file():
            gen = torch.load(cache)
        else:
            gen = generated_latents(cfg.generated_from, cfg.generated_latents, cfg.data.seed)
            torch.save(gen, cache)
        gen = gen.to(cfg.device)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    start = run.resume({"vae": vae.model}, {"vae": opt}) if resume else 0
    if start == 0 and refit:  # 1. closed-form start of the context path, then its held-out figures
        init = torch.stack([frames_to_tensor(pool[i].numpy()) for i in range(min(cfg.pca_clips, len(pool)))])
        before, after = fit_context(vae.model, init.to(cfg.device))
        fit = evaluate(vae, SyntheticVideoConfig.of(cfg.data), eval_clips, cfg.data.seed)
        run.log(0, fit_patch_mse_before=before, fit_patch_mse=after, **{f"fit_{k}": v for k, v in fit.items()})
        print(f"context fit: patch MSE {before:.5f} -> {after:.5f}; held-out PSNR {fit['test_psnr']:.2f} dB, "
              f"judder {fit['judder']:.3f} (data {fit['data_judder']:.3f})")
    sched = lr_schedule(opt, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * (1 - s / cfg.steps)), start)
    vae.model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-vae --decoder-only", unit="it")
    for step in bar:
        x = crop(vae_batch(pool, step, cfg), cfg, step).to(cfg.device)
        with torch.no_grad():  # the frozen encoder: the same posterior sample the first training decoded
            z = vae.model.encode(x).latent_dist.sample()
        rec = vae.model.decode(z).sample
        l1, mse = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        td = temporal_loss(rec, x, vae.temporal_ratio)
        loss = l1 + mse + cfg.temporal_weight * td
        extra = {}
        if gen is not None:
            smooth, consistency = generated_loss(vae, gen, cfg, step)
            loss = loss + cfg.smooth_weight * smooth + cfg.consistency_weight * consistency
            extra = {"gen_smooth": smooth.item(), "gen_consistency": consistency.item()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(l1=f"{l1.item():.4f}", td=f"{td.item():.4f}")
        run.log(step + 1, l1=l1.item(), temporal=td.item(), lr=sched.get_last_lr()[0], **extra)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            run.save(step + 1, {"vae": vae.model}, {"vae": opt})
    vae.eval()
    metrics = evaluate(vae, SyntheticVideoConfig.of(cfg.data), eval_clips, cfg.data.seed)
    with atomic_folder(run.dir / "vae") as tmp:
        vae.save(tmp)
    run.log(cfg.steps, **{f"{k}_full_clips" if k == "test_psnr" else k: v for k, v in metrics.items()})
    print(f"held-out full-clip PSNR {metrics['test_psnr']:.2f} dB; judder ratio {metrics['judder']:.3f} "
          f"(the data's {metrics['data_judder']:.3f})")
    print(run.dir / "vae")
    return vae

