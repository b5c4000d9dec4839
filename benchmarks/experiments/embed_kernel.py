"""The experiments' wider patch embedding (docs/DECISIONS.md "Stop 10"), shared by toy_translation.py and
teacher_variant.py: each token's embedding reads ``tokens`` x ``tokens`` tokens centred on its own patch.
Not a package option: a model changed so no longer has diffusers' HunyuanVideo layout (kernel = patch)."""
from torch import nn


def widen_embedding_kernel(transformer: nn.Module, tokens: int, patch: int = 2) -> None:
    """In place: a fresh Conv3d with a (tokens * patch)-pixel kernel, stride ``patch``, padded so the
    token grid keeps its size and each kernel stays centred on its token (``tokens`` odd)."""
    if tokens <= 1:
        return
    proj, k = transformer.x_embedder.proj, tokens * patch
    transformer.x_embedder.proj = nn.Conv3d(proj.in_channels, proj.out_channels, (1, k, k), (1, patch, patch),
                                            (0, (k - patch) // 2, (k - patch) // 2))
