"""Retrieval prior R(y) = argmax_{x in D} cos(phi(y), psi(x)) over a local image corpus D (method.md Stage 0).

A corpus is a folder of images (searched recursively). Each image's caption is the text of a sidecar
``NAME.txt`` beside it if there is one, else its file name ("red_hair-01.png" -> "red hair 01").
Two embedders:

- ``minilm`` (the default, always available offline): the MiniLM text encoder's pooled vector
  (models/text.py) of each *caption*, compared with the same vector of the query.
- ``clip`` (``--clip DIR``, a local Hugging Face CLIP folder): CLIP image embeddings of the *pixels*,
  compared with the CLIP text embedding of the query, so captions are not needed.

An index is a folder: ``embeddings.npy`` (N, D) float16, L2-normalised rows, and ``index.json``
(format, version, embedder, corpus root, the files and captions). It is written to a temporary
folder and renamed, so an interrupted build never leaves half an index.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_folder
from ..video import load_image

INDEX_FORMAT = "magicdistill-image-index"
INDEX_VERSION = 1
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MINILM_TOKENS = 128  # captions and prompts are sentences; 128 word pieces never truncate them


# --------------------------------------------------------------------------------------------
# corpus


@dataclass(frozen=True)
class CorpusItem:
    file: str  # path relative to the corpus root, "/"-separated
    caption: str


def caption_from_name(path: Path) -> str:
    return " ".join(path.stem.replace("_", " ").replace("-", " ").split())


def scan_corpus(root: str | Path) -> list[CorpusItem]:
    """The corpus's images in a fixed (sorted) order with their captions; no pixels are read."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"image corpus not found: {root}")
    if not root.is_dir():
        raise ValueError(f"the image corpus must be a folder of images, got the file {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    items = []
    for p in files:
        sidecar = p.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar.is_file() else ""
        items.append(CorpusItem(p.relative_to(root).as_posix(), caption or caption_from_name(p)))
    return items


# --------------------------------------------------------------------------------------------
# embedders: text -> (N, D) and corpus -> (N, D), both L2-normalised float32


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def _features(out) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output holds the projected features;
    # older versions return the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class MiniLMEmbedder:
    """Captions and queries embedded by the same text encoder (cosine of pooled vectors)."""

    kind = "minilm"

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_tokens: int = MINILM_TOKENS):
        from ..models.text import TextEncoder

        self.path = str(path) if path else None  # None = the shipped default MiniLM
        self.max_tokens = max_tokens
        self.encoder = TextEncoder(path, max_tokens=max_tokens, device=device)

    def spec(self) -> dict:
        return {"kind": self.kind, "path": self.path, "max_tokens": self.max_tokens, "dim": self.encoder.dim}

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return _normalise(self.encoder(texts).pooled).cpu()

    def embed_corpus(self, root: Path, items: list[CorpusItem], batch_size: int = 64,
                     progress: bool = True) -> torch.Tensor:
        chunks = [self.embed_texts([i.caption for i in items[s:s + batch_size]])
                  for s in tqdm(range(0, len(items), batch_size), desc="embedding captions", unit="batch",
                                disable=not progress, leave=False)]
        return torch.cat(chunks)


class ClipEmbedder:
    """CLIP image embeddings of the pixels vs the CLIP text embedding of the query."""

    kind = "clip"

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"no CLIP model at {path}: expected a Hugging Face CLIP folder with config.json")
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"cannot load CLIP from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             ) from None
        self.path, self.device = str(path.resolve()), device
        crop = self.processor.image_processor.crop_size
        self.image_size = (crop["height"], crop["width"])

    def spec(self) -> dict:
        return {"kind": self.kind, "path": self.path, "dim": self.model.config.projection_dim}

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        batch = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        batch = batch.to(self.device)
        return _normalise(_features(self.model.get_text_features(**batch))).cpu()

    @torch.no_grad()
    def embed_pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 images already resized/cropped to the processor's crop size."""
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(pixel_values=pixels.to(self.device))
        return _normalise(_features(features)).cpu()

    def embed_corpus(self, root: Path, items: list[CorpusItem], batch_size: int = 32,
                     progress: bool = True) -> torch.Tensor:
        chunks = []
        for s in tqdm(range(0, len(items), batch_size), desc="embedding images", unit="batch", disable=not progress,
                      leave=False):
            # load_image's resize-to-cover + centre crop is CLIP's own preprocessing geometry
            batch = [load_image(root / i.file, *self.image_size) for i in items[s:s + batch_size]]
            chunks.append(self.embed_pixels(batch))
        return torch.cat(chunks)


def make_embedder(spec: dict | None = None, *, device: str = "cpu"):
    """The embedder an index was built with (``spec`` from its index.json); None = default MiniLM."""
    spec = spec or {"kind": "minilm"}
    if spec["kind"] == "minilm":
        return MiniLMEmbedder(spec.get("path"), device=device, max_tokens=spec.get("max_tokens", MINILM_TOKENS))
    if spec["kind"] == "clip":
        return ClipEmbedder(spec["path"], device=device)
    raise ValueError(f"unknown embedder {spec['kind']!r} in the index: rebuild it with `magicdistill index-images`")


# --------------------------------------------------------------------------------------------
# the index


@dataclass(frozen=True)
class Match:
    path: Path  # the image file
    caption: str
    score: float  # cosine similarity in [-1, 1]
    rank: int  # 0 = best


class ImageIndex:
    def __init__(self, root: Path, items: list[CorpusItem], embeddings: torch.Tensor, embedder: dict):
        assert len(items) == len(embeddings), "one embedding per corpus image"
        self.root, self.items, self.embedder = Path(root), items, embedder
        self.embeddings = _normalise(embeddings)  # stored as float16: re-normalise so cosines are exact again

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def load(path: str | Path) -> "ImageIndex":
        path = Path(path)
        hint = f"build one with `magicdistill index-images CORPUS --out {path}`"
        if not (path / INDEX_FILE).is_file():
            raise ValueError(f"no image index at {path} (missing {INDEX_FILE}): {hint}")
        try:
            meta = json.loads((path / INDEX_FILE).read_text())
            emb = np.load(path / EMBEDDINGS_FILE)
        except (OSError, ValueError) as e:
            raise ValueError(f"the image index at {path} is damaged ({type(e).__name__}): {hint}") from None
        if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
            raise ValueError(f"{path / INDEX_FILE} is not a version-{INDEX_VERSION} image index: {hint}")
        try:
            items = [CorpusItem(i["file"], i["caption"]) for i in meta["items"]]
            embedder, root = meta["embedder"], Path(meta["root"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path / INDEX_FILE} lacks {e}: {hint}") from None
        if emb.ndim != 2 or len(emb) != len(items) or not items:
            raise ValueError(f"the image index at {path} holds {len(items)} files but embeddings of shape "
                             f"{emb.shape}: {hint}")
        root = root if root.is_absolute() else path / root
        missing = [i.file for i in items if not (root / i.file).is_file()]
        if missing:  # a moved or pruned corpus: say so now, not after the models have loaded
            raise ValueError(f"{len(missing)} of the {len(items)} indexed images are missing from {root} "
                             f"(e.g. {missing[0]}): {hint}")
        return ImageIndex(root, items, torch.from_numpy(emb), embedder)

    def save(self, path: str | Path) -> Path:
        return write_index_folder(path, self, extra=None)

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine of one query embedding (D,) with every corpus embedding -> (N,)."""
        return self.embeddings @ _normalise(query.reshape(-1))

    def search(self, prompt: str, k: int = 1, embedder=None, device: str = "cpu") -> list[Match]:
        """The k corpus images most similar to ``prompt``, best first."""
        if not prompt or not prompt.strip():
            raise ValueError("the query is empty: describe the image")
        embedder = embedder or make_embedder(self.embedder, device=device)
        if embedder.spec()["kind"] != self.embedder["kind"]:
            raise ValueError(f"the index was built with {self.embedder['kind']}, not {embedder.spec()['kind']}")
        cos = self.scores(embedder.embed_texts([prompt])[0])
        order = torch.sort(cos, descending=True, stable=True)  # stable: ties go to the earlier (sorted) file
        return [Match(self.root / self.items[i].file, self.items[i].caption, float(s), r)
                for r, (s, i) in enumerate(zip(order.values[:k].tolist(), order.indices[:k].tolist()))]


def write_index_folder(path: str | Path, index: ImageIndex, extra=None) -> Path:
    """Write ``index`` to folder ``path`` atomically. ``extra(tmp)`` may add files (e.g. the corpus
    itself, for a self-contained index) into the temporary folder before it is renamed into place."""
    path = Path(path)
    with atomic_folder(path) as tmp:
        if extra is not None:
            extra(tmp)
        np.save(tmp / EMBEDDINGS_FILE, index.embeddings.numpy().astype(np.float16))
        root = index.root.resolve()
        # A corpus inside the index folder is stored relative to it, so the folder can be moved or shipped.
        rel = os.path.relpath(root, path.resolve()) if root.is_relative_to(path.resolve()) else str(root)
        meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "embedder": index.embedder, "root": rel,
                "count": len(index), "items": [{"file": i.file, "caption": i.caption} for i in index.items]}
        (tmp / INDEX_FILE).write_text(json.dumps(meta, indent=1))
    return path


def check_images(root: Path, items: list[CorpusItem], progress: bool = True) -> None:
    """Every corpus image must be readable (even when only captions are embedded): the error names the
    first bad file, before any model is loaded."""
    for item in tqdm(items, desc="checking images", unit="img", disable=not progress, leave=False, delay=1.0):
        load_image(root / item.file, 8, 8)


def check_index_out(out: Path, corpus: Path | None = None) -> None:
    """--out may be new, empty, or an earlier index (replaced); never a folder holding other things."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the index")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_FILE).is_file():
        raise ValueError(f"--out {out} is a non-empty folder that is not an image index: choose a new folder")
    if corpus is not None and Path(corpus).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} would replace the corpus {corpus}: put the index in another folder")


def build_index(corpus: str | Path, out: str | Path, *, clip: str | Path | None = None, device: str = "cpu",
                batch_size: int = 32, progress: bool = True, embedder=None) -> ImageIndex:
    """Embed every image of ``corpus`` (MiniLM over captions, or CLIP over pixels) and write the index.
    ``embedder``: an already loaded MiniLMEmbedder/ClipEmbedder to use instead of loading one."""
    corpus, out = Path(corpus), Path(out)
    check_index_out(out, corpus)
    items = scan_corpus(corpus)
    check_images(corpus, items, progress=progress)
    embedder = embedder or (ClipEmbedder(clip, device=device) if clip else MiniLMEmbedder(device=device))
    emb = embedder.embed_corpus(corpus, items, batch_size=batch_size, progress=progress)
    index = ImageIndex(corpus.resolve(), items, emb, embedder.spec())
    index.save(out)
    return ImageIndex.load(out)
