"""``magicdistill cache``: a user's clips (or prompts) -> a folder of latent shards, read lazily by training.

Layout of a cache folder (docs/DATA.md):
  manifest.json              format, kind ("clips" | "prompts"), key, clip rule, encoder fingerprints, shapes
  null_text.safetensors      the empty prompt's embedding (CFG's unconditional branch): no text encoder at train time
  shard_00000.safetensors    latents (N, C, T', h, w) float32, image_latents (N, C, 1, h, w), first_frames
                             (N, 3, H, W) uint8, tokens (N, L, D) float16, mask (N, L) uint8, pooled (N, D) float16
                             (a prompts cache holds the text tensors only; a HunyuanVideo-I2V cache's tokens
                             are each caption read together with its clip's first frame)
  shard_00000.json           the shard's commit record: its clips (source, caption) and the sources skipped
                             (with reason) since the previous shard

A shard's JSON is written after its tensors, both atomically: a shard exists when its JSON does. A
killed run re-run with the same command continues after the last committed shard (sources already
recorded, cached or skipped, are not read again). The key hashes the encoders' fingerprints and the
clip rule; a cache folder holding another key is an error, never extended.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from ..atomic import atomic_file, write_text_atomic
from ..models.text import TextEmbedding
from ..video import frames_to_tensor
from .clip_sources import ClipRule, Skip, Source, read_clip

FORMAT = "magicdistill-cache/1"


@dataclass
class CacheSummary:
    path: Path
    cached: int
    skipped: dict[str, int]  # reason -> count
    shards: int

    def report(self) -> str:
        skips = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items())) or "none"
        return f"{self.cached} clips cached in {self.shards} shards; skipped: {skips}"


def cache_key(kind: str, rule: dict, fingerprint: dict[str, str]) -> str:
    blob = json.dumps({"format": FORMAT, "kind": kind, "rule": rule, "encoders": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def committed_records(out: Path) -> list[dict]:
    """The shard records of a cache folder, in order (a shard without its JSON was never committed)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("shard_*.json"))]


def _open_folder(out: Path, manifest: dict) -> None:
    """Create the cache folder, or check that an existing one was built the same way (resume)."""
    mfile = out / "manifest.json"
    if mfile.is_file():
        old = json.loads(mfile.read_text())
        if old.get("key") != manifest["key"]:
            diff = [k for k in ("kind", "rule", "encoders") if old.get(k) != manifest.get(k)]
            raise ValueError(f"--out {out} holds a cache built differently (key {old.get('key')} vs {manifest['key']}; "
                             f"differs in {', '.join(diff) or 'format'}); use a new --out")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not a cache folder; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)


def build_cache(sources: list[Source], out: str | Path, encoders, rule: ClipRule, *, kind: str = "clips",
                shard_size: int = 256, batch: int = 4, teacher: str = "") -> CacheSummary:
    """Encode ``sources`` into ``out``: clips cut by ``rule``, or (kind "prompts") their captions only, ``rule``
    then giving the latent shape a data-free run generates at. Resumable."""
    out = Path(out)
    if kind not in ("clips", "prompts"):
        raise ValueError(f"kind must be clips or prompts, got {kind!r}")
    if kind == "clips" and encoders.encode_video is None:
        raise ValueError("these encoders have no video encoder; a clips cache needs one")
    if rule.num_frames < 1 or (rule.num_frames - 1) % encoders.temporal_ratio:
        k = max(0, round((rule.num_frames - 1) / encoders.temporal_ratio))
        raise ValueError(f"--frames {rule.num_frames}: must be 1 + {encoders.temporal_ratio}k for this VAE "
                         f"(try {1 + encoders.temporal_ratio * k})")
    if rule.height % (2 * encoders.spatial_ratio) or rule.width % (2 * encoders.spatial_ratio):
        raise ValueError(f"--height/--width {rule.height}x{rule.width}: each must be a multiple of "
                         f"{2 * encoders.spatial_ratio} (VAE x patch size)")
    rule_dict = rule.as_dict()
    key = cache_key(kind, rule_dict, encoders.fingerprint)
    null = encoders.encode_text([""])
    manifest = {"format": FORMAT, "kind": kind, "key": key, "rule": rule_dict, "encoders": encoders.fingerprint,
                "teacher": teacher, "text_tokens": list(null.tokens.shape[1:]),
                "latent_shape": [encoders.latent_channels, (rule.num_frames - 1) // encoders.temporal_ratio + 1,
                                 rule.height // encoders.spatial_ratio, rule.width // encoders.spatial_ratio]}
    _open_folder(out, manifest)
    if not (out / "manifest.json").is_file():
        _save(out / "null_text.safetensors", _text_tensors(null))
        write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    records = committed_records(out)
    done = {c["source"] for r in records for c in r["clips"]} | {s["source"] for r in records for s in r["skipped"]}
    todo = [s for s in sources if s.id not in done]
    shard = len(records)
    pending: list[tuple[Source, object]] = []  # (source, frames or None)
    skipped: list[dict] = []
    for src in tqdm(todo, desc=f"caching {kind}", unit="clip", disable=not todo):
        try:
            if src.caption is None:
                raise Skip("no_caption", "no caption (NAME.txt beside the video, or the manifest's caption)")
            if kind != "clips":
                frames = None
            else:  # (a webdataset shard's member is named; a file is read by its path alone)
                frames = read_clip(src.path, rule) if src.member is None else read_clip(src.path, rule, src.member)
        except Skip as s:
            skipped.append({"source": src.id, "reason": s.reason, "detail": s.detail})
            continue
        pending.append((src, frames))
        if len(pending) == shard_size:
            _write_shard(out, shard, pending, skipped, encoders, batch)
            shard, pending, skipped = shard + 1, [], []
    if pending or skipped:
        _write_shard(out, shard, pending, skipped, encoders, batch)
    records = committed_records(out)
    counts = Counter(s["reason"] for r in records for s in r["skipped"])
    return CacheSummary(out, sum(len(r["clips"]) for r in records), dict(counts),
                        sum(1 for r in records if r["file"]))


def _text_tensors(text: TextEmbedding) -> dict[str, torch.Tensor]:
    return {"tokens": text.tokens.to(torch.float16).contiguous(), "mask": text.mask.to(torch.uint8).contiguous(),
            "pooled": text.pooled.to(torch.float16).contiguous()}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp))


@torch.no_grad()
def _write_shard(out: Path, shard: int, pending: list, skipped: list[dict], encoders, batch: int) -> None:
    name = f"shard_{shard:05d}"
    clips = [{"source": s.id, "caption": s.caption} for s, _ in pending]
    if pending:
        tensors: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(pending), batch):
            part = pending[start:start + batch]
            # HunyuanVideo-I2V: each caption with its own clip's first frame (as distillation encodes it uncached)
            kw = {"images": [Image.fromarray(f[0]) for _, f in part]} if encoders.text_needs_image else {}
            text = encoders.encode_text([s.caption for s, _ in part], **kw)
            for k, v in _text_tensors(text).items():
                tensors.setdefault(k, []).append(v)
            if part[0][1] is not None:
                video = torch.stack([frames_to_tensor(f) for _, f in part])
                tensors.setdefault("latents", []).append(encoders.encode_video(video).float())
                # the first frame alone, exactly as inference encodes the conditioning image
                tensors.setdefault("image_latents", []).append(encoders.encode_video(video[:, :, :1]).float())
                tensors.setdefault("first_frames", []).append(
                    torch.stack([torch.from_numpy(f[0]).permute(2, 0, 1) for _, f in part]))
        _save(out / f"{name}.safetensors", {k: torch.cat(v).contiguous() for k, v in tensors.items()})
    record = {"shard": shard, "file": f"{name}.safetensors" if pending else None, "clips": clips, "skipped": skipped}
    write_text_atomic(out / f"{name}.json", json.dumps(record, indent=1))  # the commit
