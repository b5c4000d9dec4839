"""DMD2 with weak-to-strong distribution matching (MagicDistillation / W2SVD), method.md stage 3.

One frozen backbone (the teacher) carries one LoRA (distill/scores.py):
  real score  = backbone, LoRA at alpha_weak, with the teacher's CFG;
  fake score  = backbone, LoRA at alpha_strong, no CFG;
  generator   = a separate trainable copy of the teacher, or (``generator="lora"``) a second adapter
                on the same frozen backbone, switched on only in its own role (the memory option).
alpha_weak = 0 is vanilla DMD2 with a LoRA fake score (``--method dmd``); ``scores="separate"``
is DMD2 with full real and fake copies.

The method owns the update schedule: the fake score (LoRA) and the discriminator head are updated
every iteration, the generator every ``generator_every``-th (r = 5 in the paper).
"""

from __future__ import annotations

import copy
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ..config import DistillConfig
from ..flow import add_noise, shift_sigma, sigma_schedule, x0_from_v
from ..models.dit import Condition, VideoDiT
from ..models.discriminator import DiscriminatorHead
from ..models.folder import model_sampler
from ..models.parallelize import reshard
from ..models.text import TextEmbedding
from ..sampling import guided_velocity
from ..train.distributed import draw_rows
from ..train.ema import EMA
from . import losses
from .memory import apply_memory_options
from .scores import LoRAGenerator, build_scores
from .telemetry import latent_drift


@dataclass
class DistillBatch:
    x_gt: torch.Tensor  # (B, C, T, h, w) clean latents
    text: TextEmbedding
    null_text: TextEmbedding  # the empty prompt, batch-expanded
    image: torch.Tensor | None  # (B, 3, H, W) first frames in [-1, 1]
    image_latent: torch.Tensor | None  # (B, C, 1, h, w)
    has_clips: bool = True  # False for a prompts-only cache: x_gt is zeros of the latent shape, not data


@contextmanager
def frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Temporarily stop gradients into ``params`` (they stay frozen only inside the block)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def keep_first_frame(x0: torch.Tensor, image_latent: torch.Tensor | None) -> torch.Tensor:
    """I2V: the first latent frame is the image, in training exactly as at inference."""
    if image_latent is None:
        return x0
    return torch.cat([image_latent.to(x0.dtype), x0[:, :, 1:]], dim=2)


def with_teacher_guidance(cfg: DistillConfig, teacher_meta: dict) -> DistillConfig:
    """Unset CFG scales (real score, LCM's teacher) become the teacher's own (its dit.json sampler)."""
    w = model_sampler(teacher_meta)["guidance"]
    return DistillConfig.strict_update(cfg, real_guidance=w if cfg.real_guidance is None else cfg.real_guidance,
                                       lcm_guidance=w if cfg.lcm_guidance is None else cfg.lcm_guidance)


def equivalent_dmd_guidance(w: float, alpha_weak: float, alpha_strong: float = 1.0) -> float:
    """The real-score CFG scale at which vanilla DMD2's generator gradient is, to first order in the LoRA,
    (1 - alpha_weak / alpha_strong) times W2S's at CFG w: w_eff = 1 + (w - 1) / (1 - alpha_weak / alpha_strong),
    up to the LoRA's change of the CFG direction (docs/METHOD.md, "W2S and DMD2 to first order")."""
    if not 0 <= alpha_weak < alpha_strong:
        raise ValueError(f"need 0 <= alpha_weak < alpha_strong, got {alpha_weak}, {alpha_strong}")
    return 1 + (w - 1) / (1 - alpha_weak / alpha_strong)


class W2SMethod:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig, *, sharder=None, rows: slice | None = None):
        """``sharder`` (models/parallelize.py): shard every model before optimizers and EMA are built over
        them (a multi-process run). ``rows``: this process's rows of the global batch (``cfg.batch_size``);
        None: all of them."""
        cfg = with_teacher_guidance(cfg, getattr(teacher, "meta", {}))
        if cfg.alpha_weak >= cfg.alpha_strong:
            raise ValueError(f"alpha_weak ({cfg.alpha_weak}) must be below alpha_strong ({cfg.alpha_strong})")
        if cfg.disc_sigma_min > cfg.disc_sigma_max:
            raise ValueError(f"disc_sigma_min ({cfg.disc_sigma_min}) must not exceed disc_sigma_max ({cfg.disc_sigma_max})")
        self.cfg = cfg
        # generator="full": a separate, fully trainable copy of the teacher, made before the LoRA exists
        full = copy.deepcopy(teacher).train().requires_grad_(True) if cfg.generator == "full" else None
        # the scores: by default the teacher itself, frozen, with one LoRA (+ the LoRA generator's adapter)
        self.scores = build_scores(teacher, cfg)
        # checkpointing, bf16 frozen backbone (docs/SCALING.md): before the EMA copy and the sharding, which keep
        # each tensor's dtype
        apply_memory_options(cfg, self.scores, full)
        self.rows = rows
        self.sharded = sharder is not None
        # a full generator's EMA is copied before sharding and sharded like it (a sharded module is not copied)
        ema_full = EMA(full, cfg.ema_decay) if full is not None and sharder is not None else None
        if sharder is not None:
            for model in (self.scores.backbone, getattr(self.scores, "fake", None), full,
                          ema_full.shadow if ema_full else None):
                if model is not None:
                    sharder.model(model)
        device = next(teacher.parameters()).device
        self.generator = full if full is not None else LoRAGenerator(self.scores)
        # what the generator's optimizer, EMA and checkpoint hold: the copy, or the adapter's tensors only
        self.generator_weights = full if full is not None else self.generator.weights
        self.ema = ema_full or EMA(self.generator_weights, cfg.ema_decay)
        dim = teacher.transformer.config.num_attention_heads * teacher.transformer.config.attention_head_dim
        self.head = DiscriminatorHead(dim, len(cfg.disc_layers)).to(device)
        if sharder is not None:
            sharder.module(self.head)
        self.recent_d_acc: deque[float] = deque(maxlen=20)  # logged as d_acc_recent: one batch's d_acc is noisy
        self.sigmas = sigma_schedule(cfg.steps, cfg.shift)  # inference schedule; generator trains at sigmas[:-1]
        self.fake_params = self.scores.parameters() + list(self.head.parameters())
        self.opt_generator = torch.optim.AdamW(self.generator.parameters(), lr=cfg.lr_generator, betas=(0.0, 0.99),
                                               weight_decay=0.0)
        # one optimizer for the fake turn, the head in its own group (its own rate: cfg.lr_disc)
        self.opt_fake = torch.optim.AdamW([{"params": self.scores.parameters()},
                                           {"params": list(self.head.parameters()), "lr": cfg.lr_disc}],
                                          lr=cfg.lr_fake, betas=(0.0, 0.99), weight_decay=0.0)

    # --- schedule (owned by the method) ----------------------------------------------------------
    def generator_turn(self, it: int) -> bool:
        return it % self.cfg.generator_every == 0

    # --- scores ----------------------------------------------------------------------------------
    @property
    def backbone(self) -> VideoDiT:
        """The frozen teacher (under the shared LoRA by default)."""
        return self.scores.backbone

    @property
    def lora(self):
        return self.scores.lora

    def _score_x0(self, x_t, sigma, cond: Condition, uncond: Condition | None, role: str, guidance: float):
        with self.scores.use(role) as model:
            v = guided_velocity(model, x_t, sigma, cond, uncond, guidance)
        return x0_from_v(x_t, v, sigma)

    def _features_logits(self, x_t, sigma, cond: Condition) -> torch.Tensor:
        role = "fake" if self.cfg.disc_features == "fake" else "teacher"
        with self.scores.use(role) as model, self.scores.tap(role).capture() as feats:
            model(x_t, sigma, cond)
        return self.head(feats)

    def _draw(self, sample, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        """``sample`` (torch.rand / torch.randn) for this process's rows of the global batch."""
        return draw_rows(sample, shape, g, self.rows, self.cfg.batch_size)

    def _fake_sigma(self, b: int, g: torch.Generator, device) -> torch.Tensor:
        u = self._draw(torch.rand, (b,), g) * (self.cfg.fake_sigma_max - self.cfg.fake_sigma_min) + self.cfg.fake_sigma_min
        return shift_sigma(u, self.cfg.shift).to(device)

    def _disc_input(self, x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 noised for the discriminator: its own sigma ~ U[disc_sigma_min, disc_sigma_max] (unshifted, so
        detail stays visible) and its own noise, so a real and a generated input never share either."""
        lo, hi = self.cfg.disc_sigma_min, self.cfg.disc_sigma_max
        sigma = (self._draw(torch.rand, (x0.shape[0],), g) * (hi - lo) + lo).to(x0.device)
        return add_noise(x0, self._draw(torch.randn, tuple(x0.shape), g).to(x0.device), sigma), sigma

    # --- generator input ---------------------------------------------------------------------------
    @torch.no_grad()
    def _generator_input(self, batch: DistillBatch, gen_cond: Condition, g: torch.Generator):
        b, device = batch.x_gt.shape[0], batch.x_gt.device
        i = torch.randint(len(self.sigmas) - 1, (1,), generator=g).item()
        sigma = self.sigmas[i].expand(b).to(device)
        eps = self._draw(torch.randn, tuple(batch.x_gt.shape), g).to(device)
        if self.cfg.input_mode == "noised_data" or i == 0:
            return add_noise(batch.x_gt, eps, sigma), sigma
        # DMD2 backward simulation: the generator's own Euler rollout from noise down to sigma_i
        x = eps
        for k in range(i):
            s = self.sigmas[k].expand(b).to(device)
            x0 = keep_first_frame(x0_from_v(x, self.generator(x, s, gen_cond), s), batch.image_latent)
            v = (x - x0) / s.view(-1, 1, 1, 1, 1)
            x = x + (self.sigmas[k + 1] - self.sigmas[k]) * v
        return x, sigma

    # --- one iteration -------------------------------------------------------------------------------
    def conditions(self, batch: DistillBatch) -> tuple[Condition, Condition]:
        """Text + image context from the frozen teacher, shared by every score (also the fake copy)."""
        with torch.no_grad():
            return self.backbone.conditions(batch.text, batch.null_text, batch.image, batch.image_latent)

    def generate(self, batch: DistillBatch, g: torch.Generator, *, grad: bool) -> torch.Tensor:
        """Steps 1-2: x_gen = x_in - sigma_i G(x_in, sigma_i, c), x_in noised data or a rollout."""
        with torch.set_grad_enabled(grad):
            gen_cond = self.generator.condition(batch.text, batch.image, batch.image_latent)
            x_in, sigma_in = self._generator_input(batch, gen_cond, g)
            return keep_first_frame(x0_from_v(x_in, self.generator(x_in, sigma_in, gen_cond), sigma_in),
                                    batch.image_latent)

    def step(self, batch: DistillBatch, it: int, g: torch.Generator) -> dict[str, float]:
        cond, uncond = self.conditions(batch)
        gen_turn = self.generator_turn(it)
        x_gen = self.generate(batch, g, grad=gen_turn)
        metrics = self.generator_update(batch, x_gen, cond, uncond, g) if gen_turn else {}
        metrics.update(self.fake_update(batch, x_gen, cond, g))
        if batch.has_clips:
            metrics.update(latent_drift(x_gen.detach(), batch.x_gt))
        for k, v in metrics.items():  # several processes: the trainer checks the means over all of them
            if self.rows is None and not torch.isfinite(torch.tensor(v)):  # (one raising alone would hang the rest)
                raise losses.NonFiniteError(f"non-finite {k} = {v} at iteration {it}")
        return metrics

    def generator_update(self, batch: DistillBatch, x_gen: torch.Tensor, cond: Condition, uncond: Condition,
                         g: torch.Generator) -> dict[str, float]:
        """Step 3: L_G = L_DMD + lambda_reg L_reg + lambda_adv L_G,adv; only the generator learns."""
        cfg, device, b = self.cfg, x_gen.device, x_gen.shape[0]
        metrics: dict[str, float] = {}
        with frozen(self.fake_params):
            sigma = self._fake_sigma(b, g, device)
            x_t = add_noise(x_gen, self._draw(torch.randn, tuple(x_gen.shape), g).to(device), sigma)
            with torch.no_grad():
                x0_real = self._score_x0(x_t, sigma, cond, uncond, "real", cfg.real_guidance)
                x0_fake = self._score_x0(x_t, sigma, cond, None, "fake", 1.0)
            dmd = losses.dmd_loss(x_gen, x0_real, x0_fake)
            loss = dmd.loss
            metrics.update(loss_dmd=dmd.loss.item(), dmd_normaliser=dmd.normaliser.mean().item(),
                           dmd_grad_abs=dmd.grad.abs().mean().item())
            if cfg.lambda_reg > 0:
                reg = losses.regularisation_loss(x_gen, batch.x_gt, x0_fake)
                loss = loss + cfg.lambda_reg * reg.loss
                metrics["loss_reg"] = reg.loss.item()
            if cfg.lambda_adv > 0:
                adv = losses.gan_generator_loss(self._features_logits(*self._disc_input(x_gen, g), cond))
                loss = loss + cfg.lambda_adv * adv
                metrics["loss_g_adv"] = adv.item()
            self.opt_generator.zero_grad(set_to_none=True)
            loss.backward()
            metrics["grad_norm_generator"] = _clip(self.generator.parameters(), cfg.grad_clip)
            self.opt_generator.step()
            self.ema.update(self.generator_weights)
        return metrics

    def fake_update(self, batch: DistillBatch, x_gen: torch.Tensor, cond: Condition,
                    g: torch.Generator) -> dict[str, float]:
        """Step 4: the LoRA (at alpha_strong) learns the generator's distribution by flow matching;
        the head learns to tell noised generated from noised ground-truth latents."""
        cfg, device, b = self.cfg, x_gen.device, x_gen.shape[0]
        x_fake = x_gen.detach()
        sigma = self._fake_sigma(b, g, device)
        eps = self._draw(torch.randn, tuple(x_fake.shape), g).to(device)
        x_t = add_noise(x_fake, eps, sigma)
        with self.scores.use("fake") as fake:
            v_fake = fake(x_t, sigma, cond)
        loss_fake = losses.flow_matching_loss(v_fake, x_fake, eps)
        loss = loss_fake
        metrics = {"loss_fake": loss_fake.item()}
        if cfg.lambda_disc > 0:
            # independent sigma and noise for each side: with shared ones the two inputs differed only by
            # (1 - sigma)(x_gt - x_gen) on paired data, and the head stayed at chance (loss_d = ln 4)
            logits_fake = self._features_logits(*self._disc_input(x_fake, g), cond)
            logits_real = self._features_logits(*self._disc_input(batch.x_gt, g), cond)
            loss_d = losses.gan_discriminator_loss(logits_fake, logits_real)
            loss = loss + cfg.lambda_disc * loss_d
            acc = losses.discriminator_accuracy(logits_fake, logits_real)
            self.recent_d_acc.append(acc)
            metrics.update(loss_d=loss_d.item(), d_real=logits_real.mean().item(), d_fake=logits_fake.mean().item(),
                           d_acc=acc, d_acc_recent=sum(self.recent_d_acc) / len(self.recent_d_acc))
        self.opt_fake.zero_grad(set_to_none=True)
        with frozen(list(self.generator.parameters())):
            loss.backward()
        metrics["grad_norm_fake"] = _clip(self.fake_params, cfg.grad_clip)
        self.opt_fake.step()
        return metrics

    # --- the result -----------------------------------------------------------------------------------
    @contextmanager
    def ema_generator(self) -> Iterator[VideoDiT]:
        """The EMA generator as a plain VideoDiT (to sample; ``models.lora.merged`` of it to save). A LoRA
        generator's is the backbone in the generator role with the EMA adapter swapped in meanwhile."""
        if isinstance(self.generator, LoRAGenerator):
            if self.sharded:  # the real copy's last forward (--scores separate) had no backward: it may still be
                reshard(self.backbone)  # gathered, and the EMA adapter is swapped into the shards
            with self.generator.model(self.ema.shadow) as model:
                try:
                    yield model
                finally:  # sharded: the adapter's own weights go back into shards, not into gathered copies
                    if self.sharded:
                        reshard(model)
        else:
            try:
                yield self.ema.shadow
            finally:
                if self.sharded:
                    reshard(self.ema.shadow)

    # --- state for checkpoints ------------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator_weights, "ema": self.ema.shadow, "head": self.head,
                **self.scores.modules()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_generator, "fake": self.opt_fake}


def _clip(params, max_norm: float) -> float:
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    return torch.nn.utils.clip_grad_norm_(params, max_norm).item()
