"""magicdistill: few-step video generators from video diffusion transformers (Magic 1-For-1 + MagicDistillation)."""

__version__ = "0.1.0"
