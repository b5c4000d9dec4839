"""`magicdistill cache --videos SHARD.tar|LIST.shards`: webdataset shards (KEY.mp4 + KEY.txt) as a clip source,
read in place; the same clip gives the same latents as from a folder; bad members are skipped with a reason."""

import tarfile

import numpy as np
import pytest
import torch

from magicdistill.data.cache_reader import CachedClips
from magicdistill.data.clip_sources import ClipRule, list_sources
from magicdistill.data.encoders import teacher_encoders
from magicdistill.data.video_cache import build_cache
from magicdistill.video import write_mp4

RULE = ClipRule(height=32, width=32, num_frames=5, fps=8.0)


def _mp4(path, frames, seed):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 60, frames)[:, None, None, None]
    write_mp4(path, np.clip(rng.integers(0, 190, (1, 1, 1, 3)) + ramp + np.zeros((frames, 32, 32, 3)), 0, 255)
              .astype(np.uint8), 8.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards: a/000.tar with 2 captioned clips (one in a sub-folder, a dotted key), b/001.tar with a
    captioned clip, an uncaptioned one, a corrupt one and a 1-frame one; a folder holding the same first clip."""
    root = tmp_path_factory.mktemp("wds")
    src = root / "src"
    src.mkdir()
    for i in range(3):
        _mp4(src / f"c{i}.mp4", 12, i)
    _mp4(src / "short.mp4", 1, 9)
    (src / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    texts = {}
    for name, caption in (("c0", "a first colour"), ("c1", "a second colour"), ("c2", "a third colour"),
                          ("short", "one frame"), ("bad", "broken")):
        texts[name] = src / f"{name}.txt"
        texts[name].write_text(caption)
    (root / "a").mkdir()
    (root / "b").mkdir()
    with tarfile.open(root / "a" / "000.tar", "w") as tar:
        tar.add(src / "c0.mp4", "clips/c0.mp4")
        tar.add(texts["c0"], "clips/c0.txt")
        tar.add(src / "c1.mp4", "c1.x.mp4")  # webdataset key "c1", extension "x.mp4"
        tar.add(texts["c1"], "c1.txt")
    with tarfile.open(root / "b" / "001.tar", "w") as tar:
        for name in ("c2", "short", "bad"):
            tar.add(src / f"{name}.mp4", f"{name}.mp4")
            tar.add(texts[name], f"{name}.txt")
        tar.add(src / "c0.mp4", "nocap.mp4")
    (root / "list.shards").write_text("a/000.tar\n\n" + str(root / "b" / "001.tar") + "\n")
    folder = root / "folder"
    folder.mkdir()
    (folder / "c0.mp4").write_bytes((src / "c0.mp4").read_bytes())
    (folder / "c0.txt").write_text("a first colour")
    return root


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from toys import write_tiny_teacher

    return teacher_encoders(write_tiny_teacher(tmp_path_factory.mktemp("tiny")))


def test_shards_are_a_clip_source(shards, encoders, tmp_path):
    sources = list_sources(shards / "list.shards")
    assert [(s.member, s.caption) for s in sources] == [
        ("clips/c0.mp4", "a first colour"), ("c1.x.mp4", "a second colour"), ("c2.mp4", "a third colour"),
        ("short.mp4", "one frame"), ("bad.mp4", "broken"), ("nocap.mp4", None)]
    summary = build_cache(sources, tmp_path / "c", encoders, RULE, shard_size=8)
    assert summary.cached == 3 and summary.skipped == {"no_caption": 1, "too_short": 1, "unreadable": 1}
    data = CachedClips(tmp_path / "c")
    assert data.captions == ["a first colour", "a second colour", "a third colour"]
    assert data.sources[0] == f"{(shards / 'a' / '000.tar').resolve()}#clips/c0.mp4"
    # the same mp4 read from a folder gives the same cached latents and first frame
    build_cache(list_sources(shards / "folder"), tmp_path / "f", encoders, RULE)
    a, b = data.take([0]), CachedClips(tmp_path / "f").take([0])
    assert torch.equal(a.latents, b.latents) and torch.equal(a.first_frames, b.first_frames)
    assert not torch.equal(data.take([1]).latents, a.latents)
    # one shard given alone
    assert [s.member for s in list_sources(shards / "a" / "000.tar")] == ["clips/c0.mp4", "c1.x.mp4"]


def test_shard_list_errors(shards, tmp_path):
    (tmp_path / "missing.shards").write_text("nope.tar\n")
    with pytest.raises(ValueError, match="shard .*nope.tar does not exist"):
        list_sources(tmp_path / "missing.shards")
    (tmp_path / "fake.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ValueError, match="not a readable .tar shard"):
        list_sources(tmp_path / "fake.tar")
