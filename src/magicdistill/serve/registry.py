"""The server's warm models: each loaded once at start-up (api.load_pipeline), chosen by name per request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..api import ModelInfo, Pipeline, load_pipeline, resolve_model

DEFAULT_MODELS = ("generator", "teacher")  # the shipped 4-step generator and the 50-step CFG teacher


@dataclass
class ModelRegistry:
    """name -> loaded Pipeline; the first is the default of a request without ``model``."""

    pipelines: dict[str, Pipeline]
    max_seconds: int = 12

    @classmethod
    def load(cls, models: list[str | Path] | None = None, *, device: str = "cpu", dtype: str = "float32",
             max_seconds: int = 12) -> "ModelRegistry":
        """``models``: folders (or "generator"/"teacher", the shipped ones); names are the folders' names,
        made unique with -2, -3 ..."""
        pipelines: dict[str, Pipeline] = {}
        for m in models or DEFAULT_MODELS:
            base = resolve_model(m).resolve().name  # the shipped ones are "generator" and "teacher"
            name, k = base, 2
            while name in pipelines:
                name, k = f"{base}-{k}", k + 1
            pipelines[name] = load_pipeline(m, device=device, dtype=dtype, name=name)
        return cls(pipelines, max_seconds=max_seconds)

    @property
    def default(self) -> str:
        return next(iter(self.pipelines))

    def get(self, name: str | None) -> Pipeline:
        if not name:
            return self.pipelines[self.default]
        if name not in self.pipelines:
            raise ValueError(f"unknown model {name!r}: this server has {', '.join(self.pipelines)}")
        return self.pipelines[name]

    def supported_seconds(self) -> list[str]:
        return [str(s) for s in range(1, self.max_seconds + 1)]

    def describe(self, name: str) -> dict:
        """The /v1/models entry: OpenAI's model object plus what the model makes and its recorded settings."""
        info: ModelInfo = self.pipelines[name].info
        return {"id": name, "object": "model", "owned_by": "magicdistill", "created": 0, **info.to_dict(),
                "default": name == self.default, "sizes": [info.size], "seconds": self.supported_seconds()}
