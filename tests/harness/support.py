"""Finding the interpreter that templates (and the harness) run in, for tests."""

import os
from pathlib import Path

from ..environment import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE_PYTHON = ROOT / "var" / "template-env" / "bin" / "python"


def template_python() -> Path:
    """`$HUB_TEMPLATE_PYTHON`, else var/template-env/bin/python; skips when missing, fails under CI."""
    python = Path(os.environ.get("HUB_TEMPLATE_PYTHON") or DEFAULT_TEMPLATE_PYTHON)
    if python.exists():
        return python
    reason = (
        f"no template environment at {python}: create it with `python tests/template_env.py` "
        "or point HUB_TEMPLATE_PYTHON at an interpreter that has the templates' packages"
    )
    unavailable(reason)
