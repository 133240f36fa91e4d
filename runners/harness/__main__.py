"""`python -m runners.harness --template-dir DIR [--host H] [--port N]` (or `python -m harness` in an image)."""

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from .app import build_app
from .device import device
from .loader import load_handler
from .manifest import export_input_defaults, max_body_bytes, read_serve_config
from .threads import export_thread_defaults
from .upstream import upstream_token_from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness", description="Serve one AI Hub template over HTTP.")
    parser.add_argument("--template-dir", required=True, type=Path, help="folder holding hub.yaml and the handler")
    parser.add_argument("--host", default=os.environ.get("HUB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=None, help="default: serve.port from hub.yaml, or $PORT")
    parser.add_argument(
        "--max-body-bytes", type=int, default=None,
        help="larger request bodies get 413 (default: $HUB_MAX_BODY_BYTES, else serve.max_body_bytes, else 1 MiB)",
    )
    parser.add_argument("--log-level", default=os.environ.get("HUB_LOG_LEVEL", "info"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before the handler is imported: it never sees the token.
    upstream_token = upstream_token_from(os.environ)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = read_serve_config(args.template_dir)
    export_input_defaults(config.input_defaults)
    threads = export_thread_defaults()
    handler = load_handler(args.template_dir, config.handler)
    if not hasattr(handler, "device"):
        handler.device = device()
    server: uvicorn.Server | None = None

    def stop_server() -> None:
        server.should_exit = True

    app, state = build_app(handler, config, max_body_bytes=max_body_bytes(args.max_body_bytes, config),
                           on_setup_failed=stop_server, upstream_token=upstream_token)
    port = args.port if args.port is not None else int(os.environ.get("PORT", config.port))
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=port, log_level=args.log_level.lower(), access_log=False)
    )
    logging.getLogger("harness").info("serving %s on %s:%s (device %s, %s CPU threads)", config.handler, args.host, port,
                                      device(), threads)
    server.run()
    if not state.ready:
        # setup() may still be running on the model thread (stopped during a long load, or
        # failed): leave without waiting for it, which a normal interpreter exit would do.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if state.setup_error is not None or not server.started else 0)
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
