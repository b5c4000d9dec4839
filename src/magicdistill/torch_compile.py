"""``generate --compile``: torch.compile the DiT's transformer (the only module run once per step).

On CPU, inductor needs a working C++ compiler and the first forward pays the compilation (tens of
seconds); docs/BENCHMARKS.md has what it buys here. Where it cannot work, a user gets a one-line
``ValueError`` before any model is loaded instead of a compiler traceback mid-sampling.
"""

from __future__ import annotations

import torch


def check_compile_available() -> None:
    """Compile and run a two-op function: the cheapest proof that dynamo + inductor work here."""
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            raise RuntimeError("dynamo does not support this Python")
        fn = torch.compile(lambda x: x * 2 + 1, dynamic=False)
        ok = bool((fn(torch.ones(4)) == 3).all())
    except Exception as e:  # any failure means: not usable here
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"torch.compile is unavailable here ({type(e).__name__}: {first_line}): "
                         "run without --compile") from None
    if not ok:
        raise ValueError("torch.compile gives wrong results here: run without --compile")


def compile_transformer(dit) -> None:
    """In place (``nn.Module.compile``): the module keeps its type and attributes (``config``)."""
    dit.transformer.compile(dynamic=False)
