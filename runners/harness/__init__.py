"""The AI Hub serving harness: runs one template's handler behind HTTP.

Plain Python with relative imports only, so the builder can copy this folder into an image
as a top-level package. Importing the package itself pulls in no web stack: `device()` and
`testing` work in any environment; the server lives in `app` and `__main__`.
See README.md for the handler contract.
"""

from .device import device

__all__ = ["device"]
