"""How a model's CPU threads wait between batches, set before the handler loads its libraries."""

import os
from collections.abc import MutableMapping

# Serving leaves the model idle between batches (answers going out, the batching wait), and
# OpenMP's threads spin through such gaps by default: CPU a container's quota counts, and on a
# busy node the spinners wait at each barrier for a peer that lost its CPU. MiniLM on a shared
# 2-CPU machine encoded 3 to 4 times more sentences per CPU-second with passive waiting, bare
# and behind the harness alike (bench/serve.py). A runner or operator that sets it wins.
THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def export_thread_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Before torch or any other OpenMP library is imported: they read these once, when loaded."""
    for name, value in THREAD_DEFAULTS.items():
        environ.setdefault(name, value)
