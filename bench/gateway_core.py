"""The gateway's forwarding core alone, for bench/serve.py: every request to this server goes
to one upstream through `runners.gateway.Gateway`, served as the hub serves it (uvicorn,
uvloop, httptools, no access log). What the hub adds before it (the endpoint token's lookup,
a dict hit once kept; usage counters and metrics, ~12 µs a request) is left out: the
bench needs no database.

    python bench/gateway_core.py PORT UPSTREAM_URL UPSTREAM_TOKEN
"""

import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runners.gateway import Gateway, serve_lifespan  # noqa: E402

# The most a MiniLM request body may be, as the harness's default.
MAX_BODY_BYTES = 1024 * 1024


class ForwardAll:
    def __init__(self, upstream: str, upstream_token: str):
        self.upstream, self.upstream_token = upstream, upstream_token
        self.core = Gateway()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, on_shutdown=self.core.aclose)
            return
        await self.core.forward(scope, receive, send, upstream=self.upstream, path=scope["raw_path"].decode("latin-1"),
                                upstream_token=self.upstream_token, max_body_bytes=MAX_BODY_BYTES)


if __name__ == "__main__":
    port, upstream, upstream_token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(ForwardAll(upstream, upstream_token), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, server_header=False, log_level="warning")
