"""Turn a text-to-video diffusers pipeline folder into an image-to-video one (``magicdistill convert-i2v``).

The paper's recipe (Magic 1-For-1, after Emu Video): the first frame's latent, zero-padded over
time, and a binary mask marking the first frame are concatenated to the noisy latent along the
channel axis; the patch embedding is widened to the new channel count, its first C input channels
copied from the T2V model and the new ones set to zero. At that point the converted model ignores
the image entirely and equals the T2V model on its noise input; fine-tuning (``train``) teaches it
to use the image.

The output is a standard diffusers pipeline folder of the family's own I2V class:

- **Wan** (``WanPipeline`` -> ``WanImageToVideoPipeline``): Wan's own I2V layout, 16 noise +
  4 mask + 16 image-latent channels = 36 (the 4 mask channels are Wan's temporal VAE factor). By
  default no CLIP image tokens (the Wan 2.2 I2V layout, ``image_dim`` unset). With
  ``image_encoder_from`` (a Wan 2.1 I2V folder) its CLIP vision encoder is taken too and the
  transformer gains Wan 2.1's image-token path: the image embedder starts from a fresh default
  init, each block's image key projection from a copy of its text key projection, and its image
  *value* projection at zero, so the image tokens add exactly nothing until trained.
  A14B-style folders (``transformer_2``) have both experts widened.
- **HunyuanVideo** (``HunyuanVideoPipeline`` -> ``HunyuanVideoImageToVideoPipeline``):
  diffusers' ``image_condition_type="latent_concat"``, in_channels 2C + 1 = 33. The I2V pipeline
  reads the first frame a second way, through the vision branch of a Llava text encoder, which a
  T2V folder lacks: ``text_encoder_from`` (a HunyuanVideo-I2V folder) supplies its
  ``text_encoder``, ``tokenizer`` and ``image_processor``. The guidance embedding is kept.

Weights are edited file by file without building the model: only the safetensors file holding the
patch embedding is rewritten; other weight files and unchanged components are hard-linked (copied
across filesystems), so converting a 14B folder costs the size of one shard.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = WEIGHTS + ".index.json"
NEW_SHARD = "diffusion_pytorch_model-i2v-new.safetensors"
INDEX = "model_index.json"
WAN_MASK_CHANNELS = 4  # the Wan VAE's temporal compression: one mask channel per packed frame

# the key of each family's patch embedding (a Conv3d [inner, C, t, h, w])
PATCH_KEY = {"wan": "patch_embedding.weight", "hunyuan": "x_embedder.proj.weight"}


def _read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copy2(src, dst)
    return dst


def _copy_component(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        raise ValueError(f"component folder {src} is missing; the pipeline folder is incomplete")


def _family(index: dict, src: Path) -> str:
    cls = index.get("_class_name")
    if cls == "WanPipeline":
        if index.get("expand_timesteps"):
            raise ValueError(f"{src} is a Wan 2.2 TI2V folder: it already conditions on a first frame (by replacing "
                             "that frame's latent) and needs no conversion")
        return "wan"
    if cls == "HunyuanVideoPipeline":
        return "hunyuan"
    if cls in ("WanImageToVideoPipeline", "HunyuanVideoImageToVideoPipeline"):
        raise ValueError(f"{src} is already an image-to-video pipeline ({cls}); convert-i2v takes a text-to-video one")
    raise ValueError(f"{src}: convert-i2v supports WanPipeline and HunyuanVideoPipeline folders, not {cls!r}")


class _Weights:
    """A diffusers component's safetensors weights, single-file or sharded, read lazily by key."""

    def __init__(self, folder: Path):
        self.folder = folder
        index = folder / WEIGHTS_INDEX
        if index.exists():
            self.weight_map: dict[str, str] = _read_json(index)["weight_map"]
        elif (folder / WEIGHTS).exists():
            from safetensors import safe_open

            with safe_open(folder / WEIGHTS, "pt") as f:
                self.weight_map = {key: WEIGHTS for key in f.keys()}
        else:
            raise ValueError(f"{folder} holds no {WEIGHTS} (nor a sharded index); convert-i2v reads safetensors "
                             "weights only")
        self.sharded = index.exists()

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        if key not in self.weight_map:
            raise ValueError(f"{self.folder}: weight {key!r} is missing; is this the family's transformer?")
        with safe_open(self.folder / self.weight_map[key], "pt") as f:
            return f.get_tensor(key)

    def files(self) -> list[str]:
        return sorted(set(self.weight_map.values()))


def _widened(weight: torch.Tensor, new_in: int) -> torch.Tensor:
    """A Conv3d weight with its input channels extended to ``new_in``; the new ones are zero."""
    out = torch.zeros(weight.shape[0], new_in, *weight.shape[2:], dtype=weight.dtype)
    out[:, : weight.shape[1]] = weight
    return out


def _wan_image_path(weights: _Weights, config: dict, image_dim: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors Wan 2.1's image-token path adds, initialised so that it contributes exactly zero."""
    from diffusers.models.transformers.transformer_wan import WanImageEmbedding

    inner = config["num_attention_heads"] * config["attention_head_dim"]
    new: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a reproducible default init of the (fresh) image embedder
        embedder = WanImageEmbedding(image_dim, inner)
    for name, tensor in embedder.state_dict().items():
        new[f"condition_embedder.image_embedder.{name}"] = tensor.to(dtype)
    for layer in range(config["num_layers"]):
        attn = f"blocks.{layer}.attn2"
        new[f"{attn}.add_k_proj.weight"] = weights.get(f"{attn}.to_k.weight").clone()
        new[f"{attn}.add_k_proj.bias"] = weights.get(f"{attn}.to_k.bias").clone()
        new[f"{attn}.norm_added_k.weight"] = weights.get(f"{attn}.norm_k.weight").clone()
        # zero value projection: attention to the image tokens returns exactly 0
        new[f"{attn}.add_v_proj.weight"] = torch.zeros(inner, inner, dtype=dtype)
        new[f"{attn}.add_v_proj.bias"] = torch.zeros(inner, dtype=dtype)
    return new


def _convert_transformer(src: Path, dst: Path, family: str, image_dim: int | None) -> None:
    from safetensors.torch import load_file, save_file

    config = _read_json(src / "config.json")
    weights = _Weights(src)
    patch = weights.get(PATCH_KEY[family])
    channels = config["in_channels"]
    if patch.shape[1] != channels:
        raise ValueError(f"{src}: patch embedding has {patch.shape[1]} input channels but config.json says {channels}")
    if family == "wan":
        new_in = 2 * channels + WAN_MASK_CHANNELS
        config.update(in_channels=new_in, out_channels=config.get("out_channels") or channels)
        if image_dim is not None:
            config.update(image_dim=image_dim, added_kv_proj_dim=config["num_attention_heads"] * config["attention_head_dim"])
    else:
        new_in = 2 * channels + 1
        config.update(in_channels=new_in, out_channels=config.get("out_channels") or channels,
                      image_condition_type="latent_concat")
    new = _wan_image_path(weights, config, image_dim, patch.dtype) if image_dim is not None else {}
    clash = sorted(set(new) & set(weights.weight_map))
    if clash:
        raise ValueError(f"{src} already has image-token weights ({clash[0]}, ...); is it an I2V transformer?")

    dst.mkdir(parents=True)
    patch_file = weights.weight_map[PATCH_KEY[family]]
    for name in weights.files():
        if name != patch_file:
            _link_or_copy(str(src / name), str(dst / name))
            continue
        tensors = load_file(src / name)
        tensors[PATCH_KEY[family]] = _widened(patch, new_in)
        if not weights.sharded:
            tensors.update(new)
        save_file(tensors, dst / name, metadata={"format": "pt"})
    if weights.sharded:
        index = _read_json(src / WEIGHTS_INDEX)
        if new:
            save_file(new, dst / NEW_SHARD, metadata={"format": "pt"})
            index["weight_map"].update({key: NEW_SHARD for key in new})
        (dst / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def _donor(folder: Path, needs: tuple[str, ...], flag: str) -> dict:
    index = _read_json(folder / INDEX) if (folder / INDEX).exists() else None
    if index is None:
        raise ValueError(f"{flag} {folder}: not a diffusers pipeline folder (no {INDEX})")
    missing = [name for name in needs if not (isinstance(index.get(name), list) and index[name][0])]
    if missing:
        raise ValueError(f"{flag} {folder}: the pipeline has no {missing[0]!r} component")
    return index


def read_pipeline_index(src: Path, out: Path) -> dict:
    """``src``'s model_index.json, once ``src`` is a pipeline folder and the new folder ``out`` is free."""
    if not (src / INDEX).is_file():
        raise ValueError(f"{src} is not a diffusers pipeline folder (no {INDEX})")
    if out.exists():
        raise ValueError(f"{out} already exists; choose a new output folder")
    return _read_json(src / INDEX)


def convert_to_i2v(src: str | Path, out: str | Path, *, image_encoder_from: str | Path | None = None,
                   text_encoder_from: str | Path | None = None) -> Path:
    """Write the I2V pipeline folder converted from the T2V folder ``src`` to ``out`` (a new path)."""
    from ..atomic import atomic_folder

    src, out = Path(src), Path(out)
    index = read_pipeline_index(src, out)
    family = _family(index, src)
    transformers = [name for name in ("transformer", "transformer_2") if (index.get(name) or [None])[0]]
    sources = {name: src for name, spec in index.items() if isinstance(spec, list) and spec[0]}
    new_index = {key: value for key, value in index.items() if not isinstance(value, list)}
    new_index.update({name: index[name] for name in sources})
    image_dim = None

    if family == "wan":
        if text_encoder_from is not None:
            raise ValueError("--text-encoder-from is for HunyuanVideo; Wan keeps its own text encoder "
                             "(use --image-encoder-from for CLIP image tokens)")
        new_index["_class_name"] = "WanImageToVideoPipeline"
        new_index.setdefault("boundary_ratio", None)
        new_index.setdefault("expand_timesteps", False)
        new_index.update(image_encoder=[None, None], image_processor=[None, None])
        if image_encoder_from is not None:
            if len(transformers) > 1:
                raise ValueError("--image-encoder-from: Wan's two-expert (A14B) I2V takes no CLIP image tokens; "
                                 "leave the flag out")
            donor_dir = Path(image_encoder_from)
            donor = _donor(donor_dir, ("image_encoder", "image_processor"), "--image-encoder-from")
            image_dim = _read_json(donor_dir / "image_encoder" / "config.json").get("hidden_size")
            if not isinstance(image_dim, int):
                raise ValueError(f"--image-encoder-from {donor_dir}: image_encoder/config.json has no hidden_size")
            for name in ("image_encoder", "image_processor"):
                new_index[name], sources[name] = donor[name], donor_dir
    else:
        if image_encoder_from is not None:
            raise ValueError("--image-encoder-from is for Wan; HunyuanVideo reads the image through its Llava text "
                             "encoder (use --text-encoder-from)")
        if text_encoder_from is None:
            raise ValueError("HunyuanVideo I2V reads the first frame through the vision branch of a Llava text "
                             "encoder, which a T2V folder lacks: pass --text-encoder-from DIR (a HunyuanVideo-I2V "
                             "pipeline folder; its text_encoder, tokenizer and image_processor are used)")
        donor_dir = Path(text_encoder_from)
        donor = _donor(donor_dir, ("text_encoder", "tokenizer", "image_processor"), "--text-encoder-from")
        if donor["text_encoder"][1] != "LlavaForConditionalGeneration":
            raise ValueError(f"--text-encoder-from {donor_dir}: its text_encoder is {donor['text_encoder'][1]}, "
                             "not the LlavaForConditionalGeneration HunyuanVideo I2V needs")
        hidden = _read_json(donor_dir / "text_encoder" / "config.json").get("text_config", {}).get("hidden_size")
        embed = _read_json(src / "transformer" / "config.json").get("text_embed_dim")
        if hidden != embed:
            raise ValueError(f"--text-encoder-from {donor_dir}: its text encoder gives {hidden}-d states but the "
                             f"transformer of {src} reads {embed}-d ones")
        new_index["_class_name"] = "HunyuanVideoImageToVideoPipeline"
        for name in ("text_encoder", "tokenizer", "image_processor"):
            new_index[name], sources[name] = donor[name], donor_dir

    with atomic_folder(out) as tmp:
        for name, folder in sources.items():
            if name in transformers:
                _convert_transformer(folder / name, tmp / name, family, image_dim)
            else:
                _copy_component(folder / name, tmp / name)
        (tmp / INDEX).write_text(json.dumps(new_index, indent=2, sort_keys=True))
    return out
