"""Ready-to-run calls of a deployment through the gateway, for its page: a curl line and a
Python snippet (the OpenAI client for OpenAI-compatible templates).

The route comes from the manifest (its `openai-compatible` and `embeddings` tags) or else
from the first `` `METHOD /path` `` the template's README names. Both are publisher content
that ends up in a shell: only a path of plain characters is ever used, and every other part
of the command is the hub's own text."""

import json
import re
from dataclasses import dataclass

from templates_catalog.manifest import Manifest

# Where a token goes when none was just created: the reader exports it once.
TOKEN_VARIABLE = "HUB_ENDPOINT_TOKEN"
OPENAI_TAG = "openai-compatible"
README_ROUTE = re.compile(r"`(GET|POST) (/[A-Za-z0-9_./-]{0,100})`")
# The harness's own paths: not what a reader wants to call first.
HARNESS_PATHS = frozenset({"/health", "/ready", "/metrics"})
FALLBACK_ROUTE = ("POST", "/predict")


@dataclass(frozen=True)
class Examples:
    url: str
    curl: str
    python: str
    openai: bool


def endpoint_examples(*, gateway_url: str, manifest: Manifest, readme: str, secret: str | None) -> Examples:
    """`gateway_url` is the deployment's `/d/<handle>` URL as clients reach it."""
    base = gateway_url.rstrip("/")
    if OPENAI_TAG in manifest.tags:
        return _openai(base, manifest, secret)
    method, path = first_route(readme)
    token = secret or f"${TOKEN_VARIABLE}"
    body = " -H \"Content-Type: application/json\" -d '{}'" if method == "POST" else ""
    curl = f'curl -s -X {method} "{base}{path}" -H "Authorization: Bearer {token}"{body}'
    json_body = ", json={}" if method == "POST" else ""
    python = "\n".join([
        *(["import os"] if secret is None else []),
        "import httpx",
        "",
        f"token = {_python_token(secret)}",
        f'answer = httpx.{method.lower()}("{base}{path}", headers={{"Authorization": f"Bearer {{token}}"}}{json_body})',
        "print(answer.status_code, answer.json())",
    ])
    return Examples(url=f"{base}{path}", curl=curl, python=python, openai=False)


def _openai(base: str, manifest: Manifest, secret: str | None) -> Examples:
    token = secret or f"${TOKEN_VARIABLE}"
    if "embeddings" in manifest.tags:
        path, payload = "/v1/embeddings", {"input": ["A cat is sleeping on the mat."]}
        call = 'client.embeddings.create(model="{model}", input=["A cat is sleeping on the mat."])\nprint(len(answer.data[0].embedding))'
    else:
        path, payload = "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 40}
        call = 'client.completions.create(model="{model}", prompt="Once upon a time", max_tokens=40)\nprint(answer.choices[0].text)'
    curl = (
        f'curl -s "{base}{path}" -H "Authorization: Bearer {token}" -H "Content-Type: application/json" '
        f"-d '{json.dumps(payload)}'"
    )
    python = "\n".join([
        *(["import os"] if secret is None else []),
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{base}/v1", api_key={_python_token(secret)})',
        "answer = " + call.format(model=manifest.name),
    ])
    return Examples(url=f"{base}{path}", curl=curl, python=python, openai=True)


def first_route(readme: str) -> tuple[str, str]:
    for method, path in README_ROUTE.findall(readme):
        if path not in HARNESS_PATHS and path != "/":
            return method, path
    return FALLBACK_ROUTE


def _python_token(secret: str | None) -> str:
    return f'os.environ["{TOKEN_VARIABLE}"]' if secret is None else f'"{secret}"'
