"""The text->image prior: retrieval index (MiniLM over captions, CLIP over pixels), the shipped synthetic
index, a local T2I pipeline, and ``generate --prompt`` without ``--image``."""

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magicdistill.prior.first_frame import SHIPPED_INDEX, prior_paths
from magicdistill.prior.retrieval import (EMBEDDINGS_FILE, INDEX_FILE, CorpusItem, ImageIndex, MiniLMEmbedder,
                                          build_index, caption_from_name, scan_corpus)
from magicdistill.video import load_image, read_video


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def shipped():
    return ImageIndex.load(SHIPPED_INDEX)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def _cli(*args):
    """The CLI in-process (the same typer app as `python -m magicdistill`, without a new interpreter per call)."""
    from typer.testing import CliRunner

    from magicdistill.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(r, needle):
    assert r.exit_code == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def _corpus(root):
    """3 images: a caption from a sidecar, one from the file name, one in a sub-folder."""
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "red_hair-portrait.png")
    Image.new("RGB", (30, 40), (30, 30, 200)).save(root / "b.png")
    (root / "b.txt").write_text("a blue car on a road\n")
    Image.new("RGB", (64, 64), (30, 200, 30)).save(root / "sub" / "c.jpg")
    (root / "notes.md").write_text("not an image: ignored")
    return root


# --------------------------------------------------------------------------------------------
# retrieval over the shipped synthetic identities


def test_shipped_index_is_small_float16_and_reproducible(shipped, minilm):
    files = [p for p in SHIPPED_INDEX.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000  # well under the 2 MB budget
    emb = np.load(SHIPPED_INDEX / EMBEDDINGS_FILE)
    assert emb.dtype == np.float16 and emb.shape == (256, 384)
    assert len({i.caption for i in shipped.items}) == 256  # distinct identities
    first = shipped.items[0]
    assert np.asarray(Image.open(shipped.root / first.file)).shape == (64, 64, 3)
    assert (shipped.root / first.file).with_suffix(".txt").read_text().strip() == first.caption
    assert first.caption.startswith("a cartoon portrait of a person with") and "blinks" not in first.caption
    # the stored vectors are the MiniLM embeddings of the captions (up to float16 rounding)
    fresh = minilm.embed_texts([i.caption for i in shipped.items[:8]])
    assert (fresh - shipped.embeddings[:8]).abs().max() < 1e-3


def test_red_hair_query_retrieves_red_haired_identities(shipped, minilm):
    matches = shipped.search("a person with red hair", k=len(shipped), embedder=minilm)
    assert all("red hair" in m.caption for m in matches[:10])
    best_other = next(m for m in matches if "red hair" not in m.caption)
    assert matches[0].score - best_other.score > 0.05  # measured 0.515 vs 0.439
    # scores are the cosines of the normalised embeddings, best first
    q = torch.nn.functional.normalize(minilm.embed_texts(["a person with red hair"])[0], dim=0)
    cos = shipped.embeddings @ q
    best5 = torch.sort(cos, descending=True).values[:5].tolist()
    assert [m.score for m in matches[:5]] == pytest.approx(best5, abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(matches, matches[1:]))
    assert [m.rank for m in matches[:3]] == [0, 1, 2]


def test_a_caption_retrieves_its_own_image_with_cosine_one(shipped, minilm):
    item = shipped.items[37]
    top, second = shipped.search(item.caption, k=2, embedder=minilm)
    assert top.path == shipped.root / item.file and top.caption == item.caption
    assert top.score == pytest.approx(1.0, abs=1e-3) and second.score < top.score - 0.005


# --------------------------------------------------------------------------------------------
# building an index over a folder


def test_scan_corpus_captions_and_order(tmp_path):
    items = scan_corpus(_corpus(tmp_path / "corpus"))
    assert [(i.file, i.caption) for i in items] == [("b.png", "a blue car on a road"),
                                                     ("red_hair-portrait.png", "red hair portrait"),
                                                     ("sub/c.jpg", "c")]
    assert caption_from_name(tmp_path / "a__b-c.png") == "a b c"


def test_index_round_trip_and_rebuild(tmp_path, minilm):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "index"
    index = build_index(corpus, out, progress=False, embedder=minilm)
    assert sorted(p.name for p in out.iterdir()) == [EMBEDDINGS_FILE, INDEX_FILE]  # no .tmp left behind
    meta = json.loads((out / INDEX_FILE).read_text())
    assert meta["version"] == 1 and meta["embedder"]["kind"] == "minilm" and meta["count"] == 3
    assert meta["root"] == str(corpus.resolve())  # a corpus outside the index is stored by absolute path
    again = ImageIndex.load(out)
    assert [i.caption for i in again.items] == ["a blue car on a road", "red hair portrait", "c"]
    assert torch.allclose(again.embeddings, minilm.embed_texts([i.caption for i in again.items]), atol=1e-3)
    assert torch.equal(again.embeddings, index.embeddings)
    top = again.search("a blue car", k=3, embedder=minilm)
    assert top[0].path == corpus.resolve() / "b.png" and top[0].score > top[1].score + 0.2
    # rebuilding over an existing index replaces it
    (corpus / "b.png").unlink()
    assert len(build_index(corpus, out, progress=False, embedder=minilm)) == 2
    assert json.loads((out / INDEX_FILE).read_text())["count"] == 2


def test_index_images_cli_errors_name_the_problem_and_write_nothing(tmp_path):
    out = tmp_path / "index"
    _one_line_error(_cli("index-images", str(tmp_path / "missing"), "--out", str(out)), "not found")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    _one_line_error(_cli("index-images", str(tmp_path / "empty"), "--out", str(out)), "no images in")
    corpus = _corpus(tmp_path / "corpus")
    (corpus / "broken.png").write_bytes(b"not a png")
    _one_line_error(_cli("index-images", str(corpus), "--out", str(out)), "broken.png")
    _one_line_error(_cli("index-images", "--out", str(out)), "either an image folder")
    assert not out.exists() and not (tmp_path / "index.tmp").exists()
    # an existing folder that is not an index is never replaced
    _one_line_error(_cli("index-images", str(tmp_path / "empty"), "--out", str(corpus)), "not an image index")
    assert (corpus / "b.png").is_file()


def test_search_is_cosine_with_ties_to_the_earlier_file():
    class Fixed:  # an embedder whose query vector is known: cosines are then analytic
        def spec(self):
            return {"kind": "minilm"}

        def embed_texts(self, texts):
            return torch.tensor([[2.0, 0.0]])

    items = [CorpusItem(f"{i}.png", str(i)) for i in range(4)]
    index = ImageIndex(Path("/corpus"), items, torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 0.0]]),
                       {"kind": "minilm"})
    matches = index.search("anything", k=10, embedder=Fixed())
    assert [m.caption for m in matches] == ["3", "1", "2", "0"]  # 1 and 2 tie exactly: the earlier first
    assert [m.score for m in matches] == pytest.approx([1.0, 2**-0.5, 2**-0.5, 0.0], abs=1e-6)
    assert matches[0].path == Path("/corpus/3.png")
    with pytest.raises(ValueError, match="query is empty"):
        index.search("  ", embedder=Fixed())


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no image index"):
        ImageIndex.load(tmp_path)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"format": "magicdistill-image-index", "version": 99}))
    np.save(tmp_path / EMBEDDINGS_FILE, np.zeros((1, 4), np.float16))
    with pytest.raises(ValueError, match="not a version-1 image index"):
        ImageIndex.load(tmp_path)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"format": "magicdistill-image-index", "version": 1}))
    with pytest.raises(ValueError, match="lacks 'items'"):
        ImageIndex.load(tmp_path)


# --------------------------------------------------------------------------------------------
# CLIP: a tiny random CLIP with a character-level tokenizer built offline


def _char_tokenizer(folder):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,-")
    vocab = {}
    for tok in ["<|startoftext|>", "<|endoftext|>", *chars, *[c + "</w>" for c in chars]]:
        vocab.setdefault(tok, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77), len(vocab)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = tmp_path_factory.mktemp("clip")
    tok, vocab = _char_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(folder)
    return folder


def test_clip_index_scores_equal_clip_logits(tmp_path, tiny_clip):
    """Random weights retrieve nothing meaningful, so check the maths: the index's scores are CLIP's own
    text-image logits divided by its logit scale, and the argmax is the same image."""
    from transformers import CLIPModel, CLIPProcessor

    corpus = _corpus(tmp_path / "corpus")
    index = build_index(corpus, tmp_path / "index", clip=tiny_clip, progress=False)
    assert index.embedder["kind"] == "clip" and index.embeddings.shape == (3, 16)
    matches = index.search("a red portrait", k=3)  # the query is embedded by the CLIP recorded in the index
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip)
    images = [Image.open(corpus / i.file).convert("RGB") for i in index.items]
    with torch.no_grad():
        out = model(**proc(text=["a red portrait"], images=images, return_tensors="pt", padding=True))
    cos = (out.logits_per_text[0] / model.logit_scale.exp()).tolist()
    assert sorted(cos, reverse=True) == pytest.approx([m.score for m in matches], abs=2e-3)  # float16 storage
    assert matches[0].path.name == index.items[int(np.argmax(cos))].file.split("/")[-1]


def test_clip_folder_errors(tmp_path):
    r = _cli("index-images", str(_corpus(tmp_path / "corpus")), "--out", str(tmp_path / "i"), "--clip",
             str(tmp_path / "nope"))
    _one_line_error(r, "no CLIP model")


# --------------------------------------------------------------------------------------------
# text-to-image: a tiny random Stable Diffusion pipeline saved to disk


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("t2i")
    tok, vocab = _char_tokenizer(folder / "tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(4, 4, 4, 4), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=2, sample_size=64)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77))
    sched = DDIMScheduler(steps_offset=1, clip_sample=False)
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(folder / "pipe")
    return folder / "pipe"


def test_t2i_same_seed_same_image_at_the_frame_size(tiny_t2i):
    from magicdistill.prior.t2i import load_t2i, text_to_image

    pipe = load_t2i(tiny_t2i)
    a = text_to_image(pipe, "a red cat", 64, 48, seed=1, steps=3)
    b = text_to_image(pipe, "a red cat", 64, 48, seed=1, steps=3)
    c = text_to_image(pipe, "a red cat", 64, 48, seed=2, steps=3)
    assert a.shape == (64, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.abs(a.astype(int) - c.astype(int)).mean() > 0.5


def test_t2i_folder_errors(tmp_path):
    from magicdistill.prior.t2i import check_t2i_dir, load_t2i

    with pytest.raises(ValueError, match="not found"):
        check_t2i_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="expected model_index.json"):
        check_t2i_dir(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="cannot load a text-to-image pipeline"):
        load_t2i(tmp_path)


# --------------------------------------------------------------------------------------------
# generate without --image


PROMPT = "a cartoon portrait of a person with pale skin, short red hair, a round face. The person is talking."


def test_generate_without_image_retrieves_and_saves_the_prior(tmp_path, shipped):
    out = tmp_path / "v.mp4"
    r = _cli("generate", "--prompt", PROMPT, "--out", str(out), "--frames", "5")
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    assert r.stdout.strip().splitlines()[-1] == str(out)
    png, js = prior_paths(out)
    assert (png.name, js.name) == ("v.prior.png", "v.prior.json")
    rec = json.loads(js.read_text())
    assert rec["source"] == "retrieval" and "red hair" in rec["caption"] and 0.5 < rec["score"] <= 1.0
    retrieved = load_image(rec["image"], 64, 64)
    prior = np.asarray(Image.open(png))
    assert np.array_equal(prior, retrieved)
    frames, _ = read_video(out)
    assert frames.shape == (5, 64, 64, 3)
    assert _psnr(frames[0], prior) > 24.0  # the video starts from the retrieved image (VAE + H.264 round trip)


@pytest.mark.slow  # loads the video model on top of the T2I pipeline; the fast set covers both halves separately
def test_generate_with_t2i_saves_the_generated_prior(tmp_path, tiny_t2i, monkeypatch):
    import functools

    from magicdistill.generate import generate
    from magicdistill.prior import first_frame, t2i

    monkeypatch.setattr(first_frame, "text_to_image", functools.partial(t2i.text_to_image, steps=2))  # tiny & fast
    out = tmp_path / "v.mp4"
    generate(prompt="a red cat", out=out, t2i=tiny_t2i, frames=5, seed=3, progress=False)
    png, js = prior_paths(out)
    rec = json.loads(js.read_text())
    assert rec["source"] == "t2i" and rec["seed"] == 3 and rec["pipeline"] == "StableDiffusionPipeline"
    expected = t2i.text_to_image(t2i.load_t2i(tiny_t2i), "a red cat", 64, 64, seed=3, steps=2)
    assert np.array_equal(np.asarray(Image.open(png)), expected)
    assert _psnr(read_video(out)[0][0], expected) > 20.0


@pytest.mark.parametrize("case,needle", [
    ("missing_index", "no image index"),
    ("image_and_t2i", "not both"),
    ("t2i_and_index", "not both"),
    ("missing_t2i", "text-to-image pipeline not found"),
    ("vanished_image", "1 of the 1 indexed images are missing"),
])
def test_generate_prior_errors_write_nothing(tmp_path, case, needle, minilm):
    out = tmp_path / "v.mp4"
    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    extra = {"missing_index": ["--index", str(tmp_path / "nope")],
             "image_and_t2i": ["--image", str(tmp_path / "face.png"), "--t2i", str(tmp_path)],
             "t2i_and_index": ["--t2i", str(tmp_path), "--index", str(SHIPPED_INDEX)],
             "missing_t2i": ["--t2i", str(tmp_path / "nope")],
             "vanished_image": ["--index", str(tmp_path / "index")]}[case]
    if case == "vanished_image":  # the index is fine, but the retrieved file was deleted since
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        Image.new("RGB", (8, 8)).save(corpus / "only.png")
        build_index(corpus, tmp_path / "index", progress=False, embedder=minilm)
        (corpus / "only.png").unlink()
    _one_line_error(_cli("generate", "--prompt", "a face", "--out", str(out), *extra), needle)
    assert not out.exists() and not any(p.exists() for p in prior_paths(out))
