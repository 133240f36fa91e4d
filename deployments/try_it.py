"""The "Try it" panel: the manifest's `serve.try` form, sent to the deployment through the
gateway's own path (a sleeping deployment wakes, the call counts as usage), and its answer
made safe to show in the hub's page. An answer is publisher content: markdown is sanitised
as READMEs are, JSON and text are escaped by the template, an image is only ever a `data:`
URL of an image type. Every failure is a sentence, never an exception."""

import base64
import json
from dataclasses import dataclass
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.conf import settings

from templates_catalog.manifest.schema import TryAnswer, TryIt, TryShow
from templates_catalog.readme import DATA_IMAGE_URL, readme_to_html
from templates_catalog.specs import manifest_of

from .gateway import CallAnswer, deployment_call, target_for
from .models import Deployment

MAX_ERROR_CHARS = 500
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")


@dataclass(frozen=True)
class TryResult:
    """What the panel shows: one of `html` (sanitised), `text` (to escape), `image_url`, or `error`."""

    show: str = ""
    html: str = ""
    text: str = ""
    image_url: str = ""
    error: str = ""


class Unshowable(Exception):
    """The answer cannot be shown as the manifest says; the message says why."""


def try_spec_of(deployment: Deployment) -> TryIt | None:
    serve = manifest_of(deployment.version).serve
    return serve.try_ if serve else None


def deployment_try(*, deployment: Deployment, spec: TryIt, values: dict, host: str) -> TryResult:
    """Call the deployment as its `serve.try` says, with the form's `values`."""
    body = b"" if spec.method == "GET" else json.dumps(values).encode()
    answer = async_to_sync(deployment_call)(
        target=target_for(deployment), method=spec.method, path=spec.path,
        query=urlencode(_query_values(values)) if spec.method == "GET" else "", body=body,
        content_type="" if spec.method == "GET" else "application/json", host=host,
        max_answer_bytes=settings.TRY_IT_MAX_ANSWER_BYTES, timeout=settings.TRY_IT_TIMEOUT_SECONDS,
    )
    if answer.too_large:
        return TryResult(error=f"The answer is larger than {settings.TRY_IT_MAX_ANSWER_BYTES} bytes, more than this page "
                               "shows: call the endpoint with a token to get all of it.")
    if not 200 <= answer.status < 300:
        return TryResult(error=f"The call failed with status {answer.status}: {_error_message(answer)}")
    try:
        return _shown(spec.answer, answer)
    except Unshowable as exc:
        return TryResult(error=f"The endpoint answered, but its answer cannot be shown: {exc}")


def _query_values(values: dict) -> dict:
    return {name: ("true" if value else "false") if isinstance(value, bool) else value for name, value in values.items()}


def _shown(spec: TryAnswer, answer: CallAnswer) -> TryResult:
    if spec.show is TryShow.IMAGE and spec.field is None:
        return TryResult(show=spec.show, image_url=_image_url_of_body(answer))
    value = _part(_decoded(answer, needs_json=spec.field is not None), spec.field)
    if spec.show is TryShow.JSON:
        return TryResult(show=spec.show, text=json.dumps(value, indent=2, ensure_ascii=False))
    if spec.show is TryShow.IMAGE:
        if not isinstance(value, str) or not DATA_IMAGE_URL.match(value):
            raise Unshowable(f"`{spec.field}` is not a base64 `data:` URL of a PNG, JPEG, GIF, WebP or SVG image")
        return TryResult(show=spec.show, image_url=value)
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    if spec.show is TryShow.MARKDOWN:
        return TryResult(show=spec.show, html=readme_to_html(text, data_images=True))
    return TryResult(show=spec.show, text=text)


def _decoded(answer: CallAnswer, *, needs_json: bool) -> object:
    """The answer's JSON value, or its text when it is not JSON and no field is asked for."""
    text = answer.body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        if needs_json:
            raise Unshowable(f"it is not JSON (Content-Type {answer.content_type or 'none'})") from None
        return text


def _part(value: object, field: str | None) -> object:
    if field is None:
        return value
    for key in field.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise Unshowable(f"it has no `{field}` (no `{key}` there)")
    return value


def _image_url_of_body(answer: CallAnswer) -> str:
    content_type = answer.content_type.split(";")[0].strip().lower()
    if content_type not in IMAGE_TYPES:
        raise Unshowable(f"its Content-Type is {content_type or 'missing'}, not one of {', '.join(IMAGE_TYPES)}")
    return f"data:{content_type};base64,{base64.b64encode(answer.body).decode()}"


def _error_message(answer: CallAnswer) -> str:
    """The error's own words when it is OpenAI-style or FastAPI-style JSON, else its text."""
    text = answer.body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
    text = " ".join(text.split())
    if not text:
        return "the endpoint gave no reason"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
