"""Catalog cards, each rendered once per content and then read from the cache.

A card's cache key is a digest of everything the card shows (and of the card's template),
so a change (a new version, a renamed publisher, a verified badge) is a new key: nothing
has to be invalidated, and a stale card cannot be served. Rendering 24 cards through the
template engine was two thirds of a list page's rendering time."""

import hashlib
import logging

from django.core.cache import cache
from django.template.loader import get_template, render_to_string
from django.urls import get_script_prefix, reverse
from django.utils.safestring import SafeString, mark_safe

from .models import Template

logger = logging.getLogger(__name__)
CARD_TEMPLATE = "catalog/_card.html"
# Keys are content digests: the timeout only bounds how long unused cards take memory.
CARD_CACHE_SECONDS = 3600


def catalog_cards(templates: list[Template]) -> list[SafeString]:
    """The card of each template (as `selectors.template_catalog` reads them), in order:
    one cache read for the whole list, and one write for the cards it did not hold."""
    context_digest = _context_digest()
    keys = [_card_key(template, context_digest) for template in templates]
    found = _cached(keys)
    rendered = {}
    for key, template in zip(keys, templates, strict=True):
        if key not in found:
            found[key] = rendered[key] = render_to_string(CARD_TEMPLATE, {"t": template, "list_url": reverse("catalog:template_list")})
    if rendered:
        _keep(rendered)
    # Our own rendering, escaped by the template engine when it was rendered.
    return [mark_safe(found[key]) for key in keys]


def _cached(keys: list[str]) -> dict[str, str]:
    # The cache only saves time: a cache server that is down renders every card instead
    # of failing the catalog's pages.
    try:
        return cache.get_many(keys)
    except Exception:
        logger.warning("catalog cards rendered uncached: the cache did not answer", exc_info=True)
        return {}


def _keep(rendered: dict[str, str]) -> None:
    try:
        cache.set_many(rendered, CARD_CACHE_SECONDS)
    except Exception:
        logger.warning("catalog cards not cached: the cache did not answer", exc_info=True)


def _context_digest() -> str:
    """What a card depends on besides its template's fields: the card's own markup (a
    deploy that changes it changes every key) and the prefix its links start with."""
    source = get_template(CARD_TEMPLATE).template.source
    return hashlib.sha256(f"{get_script_prefix()}\0{source}".encode()).hexdigest()


def _card_key(template: Template, context_digest: str) -> str:
    shown = (
        template.name,
        template.title,
        template.summary,
        template.tier,
        template.kind,
        template.needs_gpu,
        template.visibility,
        template.verified_ready_seconds,
        template.latest_version.version,
        template.publisher.slug,
        template.publisher.name,
        [tag.name for tag in template.tags.all()],
    )
    return "catalog-card:" + hashlib.sha256(repr((context_digest, shown)).encode()).hexdigest()
