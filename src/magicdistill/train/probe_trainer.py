"""``magicdistill train-probe``: fit the evaluation probe (eval/probe.py) on synthetic clips.

1. render a pool of training clips once (and a held-out pool of test-split identities);
2. train every head: per attribute (portrait clips only: "general" clips carry no attribute labels,
   so they only teach the clip-kind head), per frame (identity, kind), and "in order" against
   copies of the batch's first clips with their frames shuffled; random clip lengths teach the
   temporal model any T;
3. report held-out accuracy per attribute, and how far shuffling moves the clip features compared
   with tiny noise, into metrics.jsonl and the saved probe's probe.json.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm import tqdm

from ..config import DataConfig, Strict
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..eval.probe import KINDS, ORDER_HEAD, ProbeConfig, ProbeNetwork, attribute_classes
from ..video import frames_to_tensor
from .run import Run, closes_runs, lr_schedule


class ProbeTrainConfig(Strict):
    data: DataConfig = DataConfig()
    probe: ProbeConfig = ProbeConfig()
    pool_clips: int = Field(1500, ge=2)  # rendered once; batches are drawn from this pool
    test_clips: int = Field(256, ge=2)  # held-out identities, for the accuracies reported at the end
    steps: int = Field(800, ge=1)
    batch_size: int = Field(24, ge=2)
    shuffled_fraction: float = Field(1 / 3, gt=0, le=1)  # extra shuffled-frame copies, as a share of the batch
    min_frames: int = Field(4, ge=3)  # shortest training window (3: so a shuffle can differ from a reversal)
    full_clip_share: float = Field(0.5, ge=0, le=1)  # batches that use whole clips
    noise: float = Field(0.03, ge=0)  # max std of Gaussian pixel noise added to training clips (robustness)
    frame_loss_weight: float = Field(0.5, ge=0)
    order_loss_weight: float = Field(1.0, ge=0)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    device: str = "cpu"


def render_pool(source: SyntheticVideos, n: int, desc: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frames (N, T, H, W, 3) uint8, attribute labels (N, A) int64 with -1 where absent, kinds (N,))."""
    names = list(attribute_classes())
    frames, labels, kinds = [], [], []
    for i in tqdm(range(n), desc=desc):
        clip = source.clip(i)
        frames.append(clip.frames)
        labels.append([clip.labels.get(k, -1) for k in names])
        kinds.append(KINDS.index(clip.kind))
    return torch.from_numpy(np.stack(frames)), torch.tensor(labels), torch.tensor(kinds)


def shuffle_frames(video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each clip of (B, 3, T, H, W) with its frames in a random order other than the original."""
    t = video.shape[2]
    out = []
    for clip in video:
        perm = rng.permutation(t)
        while (perm == np.arange(t)).all():
            perm = rng.permutation(t)
        out.append(clip[:, torch.from_numpy(perm)])
    return torch.stack(out)


def probe_batch(pool: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor, step: int, cfg: ProbeTrainConfig):
    """The batch for ``step`` is fixed by (seed, step), so resuming replays the same data: video
    (B + S, 3, T, H, W) whose last S clips are shuffled copies of the first S, their labels and kinds
    (for the first B) and the in-order targets (B + S,)."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = torch.from_numpy(rng.integers(0, len(pool), cfg.batch_size))
    full = pool.shape[1]
    whole = rng.random() < cfg.full_clip_share or cfg.min_frames >= full
    t = full if whole else int(rng.integers(cfg.min_frames, full))
    start = int(rng.integers(0, full - t + 1))
    video = torch.stack([frames_to_tensor(pool[i, start:start + t].numpy()) for i in idx])
    if cfg.noise > 0:
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        std = torch.rand(len(video), 1, 1, 1, 1, generator=g) * cfg.noise
        video = (video + std * torch.randn(video.shape, generator=g)).clamp(-1, 1)
    n_shuf = max(1, round(cfg.batch_size * cfg.shuffled_fraction))
    video = torch.cat([video, shuffle_frames(video[:n_shuf], rng)])
    in_order = torch.cat([torch.ones(cfg.batch_size), torch.zeros(n_shuf)])
    return video, labels[idx], kinds[idx], in_order


def probe_losses(model: ProbeNetwork, video: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor,
                 in_order: torch.Tensor, cfg: ProbeTrainConfig) -> dict[str, torch.Tensor]:
    """Cross-entropy per head. Attribute heads learn from in-order clips with labels; kind and frame
    heads from every clip (a shuffled clip's frames are still real frames); the order head from all."""
    clip_logits, frame_logits = model(video)
    b, t = len(labels), video.shape[2]
    names = list(attribute_classes())
    attr = [F.cross_entropy(clip_logits[k][:b], labels[:, j], ignore_index=-1)
            for j, k in enumerate(names) if (labels[:, j] >= 0).any()]
    all_kinds = torch.cat([kinds, kinds[:len(video) - b]])
    all_labels = torch.cat([labels, labels[:len(video) - b]]).repeat_interleave(t, dim=0)  # per frame
    frame = [F.cross_entropy(frame_logits[k], all_labels[:, names.index(k)], ignore_index=-1)
             for k in frame_logits if k != "kind" and (all_labels[:, names.index(k)] >= 0).any()]
    frame.append(F.cross_entropy(frame_logits["kind"], all_kinds.repeat_interleave(t)))
    out = {
        "attributes": torch.stack(attr).mean() if attr else video.new_zeros(()),
        "kind": F.cross_entropy(clip_logits["kind"], all_kinds),
        "order": F.binary_cross_entropy_with_logits(clip_logits[ORDER_HEAD][:, 0], in_order),
        "frame": torch.stack(frame).mean(),
    }
    out["loss"] = out["attributes"] + out["kind"] + cfg.order_loss_weight * out["order"] + \
        cfg.frame_loss_weight * out["frame"]
    return out


@torch.no_grad()
def evaluate_probe(model: ProbeNetwork, pool: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor,
                   seed: int = 0, batch: int = 32) -> dict[str, float]:
    """Held-out accuracy per attribute (portrait clips), of the clip kind and of "in order" (each clip
    and a shuffled copy), the chance level of each attribute (its most frequent test class), and
    ``shuffle_vs_noise``: the median ratio of the clip-feature distance to a shuffled copy and to a
    copy with pixel noise of std 0.01."""
    model.eval()
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    names = list(attribute_classes())
    preds, kind_pred, order_hits, ratios = [], [], [], []
    for j in range(0, len(pool), batch):
        video = torch.stack([frames_to_tensor(c.numpy()) for c in pool[j:j + batch]])
        shuffled = shuffle_frames(video, rng)
        noisy = (video + 0.01 * torch.randn(video.shape, generator=g)).clamp(-1, 1)
        logits, _ = model(torch.cat([video, shuffled]))
        n = len(video)
        preds.append(torch.stack([logits[k][:n].argmax(1) for k in names], 1))
        kind_pred.append(logits["kind"][:n].argmax(1))
        order = logits[ORDER_HEAD][:, 0] > 0
        order_hits.append(torch.cat([order[:n], ~order[n:]]).float())
        f, fs, fn = model.clip_features(video), model.clip_features(shuffled), model.clip_features(noisy)
        ratios.append((f - fs).norm(dim=1) / (f - fn).norm(dim=1).clamp(min=1e-8))
    pred = torch.cat(preds)
    result = {}
    portrait = kinds == KINDS.index("portrait")
    for j, k in enumerate(names):
        y = labels[portrait, j]
        result[f"test_acc_{k}"] = (pred[portrait, j] == y).float().mean().item()
        result[f"chance_{k}"] = (torch.bincount(y).max() / len(y)).item()
    result["test_acc_kind"] = (torch.cat(kind_pred) == kinds).float().mean().item()
    result["test_acc_in_order"] = torch.cat(order_hits).mean().item()
    result["shuffle_vs_noise"] = torch.cat(ratios).median().item()
    return result


@closes_runs
def train_probe(cfg: ProbeTrainConfig, out: str, *, resume: bool = False) -> ProbeNetwork:
    torch.manual_seed(cfg.seed)
    run = Run(out, cfg, resume=resume, may_change=("steps",))
    data = SyntheticVideoConfig.of(cfg.data)
    if cfg.min_frames > data.num_frames:
        raise ValueError(f"min_frames {cfg.min_frames} exceeds the clips' {data.num_frames} frames")
    # 1. the clip pools (rendering costs ~25 ms a clip; a training step would otherwise wait for it)
    pool, labels, kinds = render_pool(SyntheticVideos(data, "train", cfg.data.seed), cfg.pool_clips, "rendering clips")
    model = ProbeNetwork(cfg.probe).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = run.resume({"probe": model}, {"probe": opt}) if resume else 0
    sched = lr_schedule(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.02, 1 - s / cfg.steps), start)
    # 2. training
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-probe", unit="it")
    for step in bar:
        video, y, kind, in_order = probe_batch(pool, labels, kinds, step, cfg)
        losses = probe_losses(model, video.to(cfg.device), y.to(cfg.device), kind.to(cfg.device),
                              in_order.to(cfg.device), cfg)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{losses['loss'].item():.3f}", order=f"{losses['order'].item():.3f}")
        run.log(step + 1, **{k: v.item() for k, v in losses.items()}, lr=sched.get_last_lr()[0])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            run.save(step + 1, {"probe": model}, {"probe": opt})
    # 3. held-out evaluation and the model folder
    del pool
    test = render_pool(SyntheticVideos(data, "test", cfg.data.seed), cfg.test_clips, "rendering test clips")
    result = evaluate_probe(model, *test, seed=cfg.seed)
    run.log(cfg.steps, **result)
    model.save(run.dir / "probe", trained={"steps": cfg.steps, "seed": cfg.seed, "test_clips": cfg.test_clips},
               test=result)
    for k, v in result.items():
        if k.startswith("test_acc_"):
            name = k.removeprefix("test_acc_")
            chance = result.get(f"chance_{name}")
            print(f"{name:12s} {v:6.3f}" + (f"   (chance {chance:.3f})" if chance is not None else ""))
    print(f"shuffled/noisy clip-feature distance (median) {result['shuffle_vs_noise']:.1f}")
    print(run.dir / "probe")
    return model
