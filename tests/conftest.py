import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def text_encoder():
    from magicdistill.models.text import TextEncoder

    return TextEncoder(max_tokens=64)


@pytest.fixture
def tiny_dit_cfg():
    from magicdistill.config import DiTConfig

    return DiTConfig(hidden_heads=2, head_dim=16, num_layers=1, num_single_layers=1, rope_axes_dim=(4, 6, 6),
                     text_dim=32, image_tokens=4, latent_channels=4)


@pytest.fixture(scope="session")
def real_folder(tmp_path_factory):
    """real_folder(kind) -> a tiny architecturally real diffusers pipeline folder, built once per session."""
    from real_fixtures import FolderCache

    return FolderCache(tmp_path_factory.mktemp("real_folders"))
