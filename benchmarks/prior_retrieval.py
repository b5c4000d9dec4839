"""How well the default retrieval prior finds an attribute: one query per attribute value over the shipped
synthetic index ("a person with red hair", "a person wearing glasses", ...), scored by whether the
retrieved identity has that value. Prints top-1 accuracy, top-5 precision and the chance rate (the
share of the index with the value) per attribute. Then full descriptions of held-out (test-split)
identities as queries: how many of the 7 identity attributes the retrieved image shares with the
described identity, against the best any indexed image shares and the index average (chance).
Deterministic: no timing involved.

    python benchmarks/prior_retrieval.py [--index DIR]
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from magicdistill.data.synthetic import IDENTITY_FIELDS, SyntheticVideos, all_identities  # noqa: E402
from magicdistill.prior.synthetic_index import identity_caption  # noqa: E402
from magicdistill.prior.first_frame import SHIPPED_INDEX  # noqa: E402
from magicdistill.prior.retrieval import ImageIndex, make_embedder  # noqa: E402

ACCESSORY_WORDS = {"glasses": "wearing glasses", "hat": "wearing a hat", "earrings": "wearing earrings"}
# field -> (query template, the caption text that proves a match)
FIELDS = {
    "hair": ("a person with {v} hair", " {v} hair"),
    "skin": ("a person with {v} skin", "with {v} skin"),
    "background": ("a person against a {v} background", " {v} background"),
    "face_shape": ("a person with a {v} face", " {v} face"),
    "eye_spacing": ("a person with {v} eyes", " {v} eyes"),
    "hair_style": ("a person with {v} hair", "{v} "),  # "short red hair": the style word precedes the colour
    "accessory": ("a person {w}", "{w}"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(SHIPPED_INDEX))
    ap.add_argument("--queries", type=int, default=50, help="held-out identity descriptions to query")
    args = ap.parse_args()
    index = ImageIndex.load(args.index)
    embedder = make_embedder(index.embedder)
    print(f"index: {args.index} ({len(index)} images, {index.embedder['kind']})")
    print("| attribute | values | top-1 accuracy | top-5 precision | chance |")
    print("|---|---|---|---|---|")
    tot1 = tot5 = totc = n_all = 0
    for field, (template, proof) in FIELDS.items():
        values = [v for v in IDENTITY_FIELDS[field] if not (field == "accessory" and v == "none")]
        hit1 = hit5 = chance = 0.0
        for v in values:
            w = ACCESSORY_WORDS.get(v, "")
            query, needle = template.format(v=v, w=w), proof.format(v=v, w=w)
            # the style word must sit in the hair phrase ("short red hair"), not elsewhere ("a long face")
            def has(caption: str, needle: str = needle) -> bool:
                return needle in (caption.split(" hair")[0] if field == "hair_style" else caption)
            top = index.search(query, k=5, embedder=embedder)
            hit1 += has(top[0].caption)
            hit5 += sum(has(m.caption) for m in top) / 5
            chance += sum(has(i.caption) for i in index.items) / len(index)
        n = len(values)
        print(f"| {field} | {n} | {hit1 / n:.2f} | {hit5 / n:.2f} | {chance / n:.2f} |")
        tot1, tot5, totc, n_all = tot1 + hit1, tot5 + hit5, totc + chance, n_all + n
    print(f"| all | {n_all} | {tot1 / n_all:.2f} | {tot5 / n_all:.2f} | {totc / n_all:.2f} |")
    full_descriptions(index, embedder, args.queries)


def full_descriptions(index: ImageIndex, embedder, n: int) -> None:
    """Only for the synthetic index: its file names carry the identity id (NNNN-identityXXXXX.png)."""
    ids = all_identities()
    indexed = np.array([ids[int(i.file.split("identity")[1].split(".")[0])] for i in index.items])
    test = SyntheticVideos(split="test", seed=0)
    got, best, chance = [], [], []
    for k in range(n):
        clip = test.clip(k, portrait_only=True)
        want = np.array(ids[clip.identity])
        shared = (indexed == want).sum(1)  # attributes each indexed identity shares with the query's
        top = index.search(identity_caption(clip.caption), k=1, embedder=embedder)[0]
        got.append(shared[[i.file for i in index.items].index(top.path.name)])
        best.append(shared.max())
        chance.append(shared.mean())
    print(f"\nfull held-out descriptions ({n} queries): attributes shared with the retrieved image "
          f"{np.mean(got):.2f} / 7 (best in index {np.mean(best):.2f}, index average {np.mean(chance):.2f})")


if __name__ == "__main__":
    main()
