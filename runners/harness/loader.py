"""Import a template's handler class from `module:Class`, relative to the template folder."""

import importlib
import sys
from pathlib import Path


def load_handler(template_dir: Path, spec: str) -> object:
    module_name, _, class_name = spec.partition(":")
    folder = str(template_dir.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
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
