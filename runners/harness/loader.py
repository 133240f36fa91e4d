"""Import a template's handler class from `module:Class`, relative to the template folder."""

import importlib
import sys
from pathlib import Path

# The folder holding this harness package ("harness" in an image, "runners.harness" here).
HARNESS_ROOT = Path(__file__).resolve().parents[__package__.count(".") + 1]


def load_handler(template_dir: Path, spec: str) -> object:
    module_name, _, class_name = spec.partition(":")
    template_path_add(template_dir.resolve())
    module = importlib.import_module(module_name)
    try:
        handler_class = getattr(module, class_name)
    except AttributeError:
        raise SystemExit(f"serve.handler {spec!r}: module {module_name!r} has no class {class_name!r}") from None
    handler = handler_class()
    for method in ("setup", "predict"):
        if not callable(getattr(handler, method, None)):
            raise SystemExit(f"serve.handler {spec!r}: {class_name} has no {method}() method")
    return handler


def template_path_add(folder: Path) -> None:
    """Put the template's folder on the import path right after the harness's own folder:
    its modules still come before installed packages (as they always have), but a
    top-level package of the template never stands in for the harness."""
    entries = [Path(entry or ".").resolve() for entry in sys.path]
    if folder in entries:
        sys.path.pop(entries.index(folder))
        entries.remove(folder)
    position = entries.index(HARNESS_ROOT) + 1 if HARNESS_ROOT in entries else 0
    sys.path.insert(position, str(folder))
