"""The hub under uvicorn, as `make run` serves it (`manage.py serve`).

On a loopback address alone, an app's containers on this machine's Docker Engine could not
call their parts: they reach the host as `host.docker.internal`, the default bridge's
gateway, where nothing listens. So when an engine answers here, the hub also listens on that
address, and there answers only the gateway (`/d/`): publisher code in a container reaches
the endpoints it holds tokens for, never the hub's pages, API or admin. The bridge is this
machine's own network; the hub is not exposed to the LAN by it.
"""

import logging
import socket
from collections.abc import Callable
from ipaddress import ip_address

logger = logging.getLogger(__name__)

# As the README's production line: uvloop and httptools, no Server header, and keep-alive
# longer than the gateway's upstream pool keeps its idle connections (deployments/gateway.py).
UVICORN_OPTIONS = {"loop": "uvloop", "http": "httptools", "server_header": False, "timeout_keep_alive": 30}
GATEWAY_ONLY_ANSWER = b"Only the deployment gateway (/d/) answers on this address.\n"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def local_docker_bridge() -> str | None:
    """The address containers of this machine's Docker Engine reach it on, or None when no
    engine answers here."""
    import docker
    from docker.errors import DockerException

    from runners.docker import bridge_gateway_address

    try:
        client = docker.from_env(timeout=3)
        client.ping()
    except DockerException:
        return None
    return bridge_gateway_address(client)


def listen_sockets(host: str, port: int, bridge: Callable[[], str | None] = local_docker_bridge) -> tuple[list[socket.socket], set[str]]:
    """The sockets to serve on, and the addresses among them that answer only the gateway:
    `host`, plus the Docker bridge's address when `host` is loopback and an engine answers.
    A bridge that cannot be bound (a remote engine, a rootless one) is left out, with a warning."""
    sockets = [_bound(host, port)]
    gateway_only = set()
    address = bridge() if is_loopback(host) else None
    if address:
        try:
            sockets.append(_bound(address, port))
            gateway_only.add(address)
        except OSError as exc:
            logger.warning("not listening on the Docker bridge %s:%s (%s): apps on the local Docker node "
                           "cannot call their parts; set GATEWAY_INTERNAL_URL and --host", address, port, exc)
    return sockets, gateway_only


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def gateway_only_on(addresses: set[str], application, prefix: str):
    """`application`, except that a request that came in on one of `addresses` and is not for
    the gateway gets a 404 (scope["server"] is the local address it arrived on)."""
    if not addresses:
        return application

    async def guarded(scope, receive, send) -> None:
        server = scope.get("server") or ("",)
        if scope["type"] == "http" and server[0] in addresses and not scope["path"].startswith(prefix):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": GATEWAY_ONLY_ANSWER})
        elif scope["type"] == "websocket" and server[0] in addresses:
            await send({"type": "websocket.close", "code": 1008})
        else:
            await application(scope, receive, send)

    return guarded


def serve(host: str, port: int) -> None:
    import uvicorn

    from deployments.gateway import PREFIX
    from hub_site.asgi import application

    sockets, gateway_only = listen_sockets(host, port)
    for address in gateway_only:
        logger.warning("the gateway also answers on %s:%s, for containers of the local Docker node", address, port)
    config = uvicorn.Config(gateway_only_on(gateway_only, application, PREFIX), lifespan="on", **UVICORN_OPTIONS)
    try:
        uvicorn.Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        # uvicorn has shut down cleanly and raises Ctrl+C again for the exit status; a
        # traceback here would read as a crash to whoever stopped `make run`.
        pass
