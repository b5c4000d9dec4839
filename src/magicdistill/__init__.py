"""magicdistill: few-step video generators from video diffusion transformers (Magic 1-For-1 + MagicDistillation).

    from magicdistill import load_pipeline
    video = load_pipeline()("examples/portrait.png", prompt="The person is talking.")
    video.save("out/talking.mp4")

Importing the package is light: torch and the models load on first use of the API (api.py).
"""

__version__ = "0.1.0"
__all__ = ["load_pipeline", "Pipeline", "Video", "Settings", "ModelInfo"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'magicdistill' has no attribute {name!r}")
