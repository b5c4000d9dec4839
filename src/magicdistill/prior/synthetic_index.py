"""The embedded default's retrieval corpus: first frames of synthetic portrait clips (data/synthetic.py),
one per distinct identity, captioned with that identity's description, in a self-contained index folder
(``images/`` + ``index.json`` + ``embeddings.npy``) that ships under checkpoints/tiny/prior/."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from .retrieval import CorpusItem, ImageIndex, MiniLMEmbedder, check_index_out, write_index_folder

IMAGES_DIR = "images"


def identity_caption(caption: str) -> str:
    """The first sentence of a portrait caption: who is shown, not how they move (a still image
    cannot show motion, and the motion sentence is the same kind of text for every clip)."""
    return caption.split(". ")[0].rstrip(".") + "."


def synthetic_first_frames(n: int, seed: int = 0, split: str = "train", progress: bool = True):
    """(frames (H, W, 3) uint8, captions, identity ids) of the first ``n`` distinct portrait identities."""
    if n < 1:
        raise ValueError(f"--synthetic needs at least 1 image, got {n}")
    videos = SyntheticVideos(SyntheticVideoConfig(), split, seed)
    frames, captions, seen = [], [], []
    bar = tqdm(total=n, desc="rendering identities", unit="img", disable=not progress, leave=False)
    i = 0
    while len(frames) < n:
        clip = videos.clip(i, portrait_only=True)
        i += 1
        if clip.identity in seen:
            continue
        frames.append(clip.frames[0])
        captions.append(identity_caption(clip.caption))
        seen.append(clip.identity)
        bar.update()
    bar.close()
    return frames, captions, seen


def build_synthetic_index(out: str | Path, n: int = 256, *, seed: int = 0, device: str = "cpu",
                          progress: bool = True) -> ImageIndex:
    out = Path(out)
    check_index_out(out)
    frames, captions, ids = synthetic_first_frames(n, seed, progress=progress)
    items = [CorpusItem(f"{k:04d}-identity{ident:05d}.png", c) for k, (c, ident) in enumerate(zip(captions, ids))]
    embedder = MiniLMEmbedder(device=device)
    emb = embedder.embed_texts(captions)

    def write_images(tmp: Path) -> None:
        (tmp / IMAGES_DIR).mkdir()
        for item, frame in zip(items, frames):
            Image.fromarray(frame).save(tmp / IMAGES_DIR / item.file, optimize=True)
            (tmp / IMAGES_DIR / item.file).with_suffix(".txt").write_text(item.caption + "\n")

    write_index_folder(out, ImageIndex(out / IMAGES_DIR, items, emb, embedder.spec()), extra=write_images)
    return ImageIndex.load(out)
