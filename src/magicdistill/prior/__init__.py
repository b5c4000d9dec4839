"""The text->image prior (method.md Stage 0): where the first frame comes from when the user gives none.

retrieval.py        image index over a local corpus (MiniLM over captions, or CLIP over pixels) + cosine search
synthetic_index.py  the embedded default's index over synthetic identities (shipped in checkpoints/tiny/prior)
t2i.py              a local diffusers text-to-image pipeline
first_frame.py      what ``generate`` calls: resolve --image/--t2i/--index, pick the frame, save OUT.prior.*
"""
