"""Which accelerator a handler should use: a GPU when torch sees one, else the CPU."""

import functools
import importlib.util
import os


@functools.cache
def device() -> str:
    """`"cuda"` when torch is installed and sees a GPU, otherwise `"cpu"`.

    `HUB_DEVICE` overrides the choice (e.g. `cpu` to keep a GPU free). Templates without
    torch (a vector store) get `"cpu"` without torch being imported.
    """
    forced = os.environ.get("HUB_DEVICE", "").strip()
    if forced:
        return forced
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
