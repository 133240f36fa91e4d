"""Reads of the catalog, scoped to what the asking user may see."""

import hashlib
import hmac
import operator
import re
from dataclasses import dataclass
from functools import reduce

from django.contrib.auth.models import AnonymousUser, User
from django.contrib.postgres.lookups import TrigramSimilar
from django.contrib.postgres.search import SearchQuery, SearchRank, TrigramSimilarity
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import Combinable
from django.utils import timezone
from django.utils.functional import cached_property

from .models import ApiToken, Build, Membership, Publisher, PublisherInvitation, SearchWord, Tag, Template, TemplateVersion
from .search import SEARCH_CONFIG, TYPO_MIN_WORD
from .versions import SemVer

SORTS = {"relevance": "Relevance", "name": "Name", "newest": "Newest"}
MAX_QUERY_WORDS = 10
# pg_trgm's own default for `%`: similarity("vectr", "vector") is 0.44, ("spech", "speech") 0.63.
TYPO_MIN_SIMILARITY = 0.3
TYPO_ALTERNATIVES = 3
TAG_FACETS = 12
FACET_MAX_RESULTS = 1000
# Past this many results a list says "1000+": counting every match of a common word
# would cost more than the page, and nobody pages that far instead of narrowing.
COUNT_CAP = 1000


def _visibility_filter(user: User | AnonymousUser, token: ApiToken | None = None) -> Q:
    """The read scope of a queryset. It mirrors `access.may_read` as a filter (one query
    for a whole list); yes/no permission questions go to `access`, not here."""
    public = Q(visibility=Template.Visibility.PUBLIC)
    if token is not None:
        # A token sees its own publisher's templates (those in its scope), never more.
        own = Q(publisher_id=token.publisher_id)
        if token.template_names:
            own &= Q(name__in=token.template_names)
        return public | own
    if not user.is_authenticated:
        return public
    # A subquery, not a join: one row per template and no extra round trip.
    mine = Membership.objects.filter(user_id=user.pk).values("publisher_id")
    return public | Q(publisher_id__in=mine)


def templates_visible_to(user: User | AnonymousUser, token: ApiToken | None = None) -> QuerySet[Template]:
    """Templates with at least one version that `user` (or `token`) may see. Private
    templates exist only for members of their publisher and its tokens."""
    return Template.objects.filter(_visibility_filter(user, token), latest_version__isnull=False)


def template_catalog(user: User | AnonymousUser, token: ApiToken | None = None) -> QuerySet[Template]:
    """The visible templates with everything a catalog card shows, in a fixed number of queries."""
    return (
        templates_visible_to(user, token)
        .select_related("publisher", "latest_version")
        .defer(
            "latest_version__readme",
            "latest_version__readme_html",
            "latest_version__changelog",
            "latest_version__changelog_html",
            "latest_version__files",
            "latest_version__manifest",
            "search_text",
        )
        .prefetch_related("tags")
        .annotate(verified_ready_seconds=_latest_verified_ready_seconds())
    )


def _latest_verified_ready_seconds() -> Subquery:
    """The time to ready of the latest version's last verified build, None when it has none.
    A subquery in the same SELECT: the badge costs a list page no query of its own."""
    verified = Build.objects.filter(version_id=OuterRef("latest_version_id"), status=Build.Status.SUCCEEDED, verified=True)
    return Subquery(verified.order_by("-finished_at").values("ready_seconds")[:1])


class CappedPaginator(Paginator):
    """A paginator that counts at most COUNT_CAP rows (`capped` says there are more), in
    one `SELECT count(*) FROM (… LIMIT cap + 1)` without the queryset's ordering: a
    ranked search's count ranks nothing. Pages stop at the cap."""

    @cached_property
    def _bounded_count(self) -> int:
        return self.object_list.order_by()[: COUNT_CAP + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._bounded_count, COUNT_CAP)

    @property
    def capped(self) -> bool:
        return self._bounded_count > COUNT_CAP


@dataclass
class CatalogPage:
    page: Page
    templates: list[Template]

    @property
    def result_count(self) -> int | None:
        """How many templates match, None when more than COUNT_CAP."""
        return None if self.page.paginator.capped else self.page.paginator.count


def template_catalog_page(queryset: QuerySet[Template], number: str | int | None, per_page: int) -> CatalogPage:
    """One page of the catalog in the queryset's order. The page's ids come from the
    template table alone (an index walk even on deep pages of the name sort; the ranked
    ids of a search); only those rows are then joined."""
    ids = CappedPaginator(queryset.values_list("pk", flat=True), per_page).get_page(number)
    page_ids = list(ids.object_list)
    by_pk = {template.pk: template for template in queryset.filter(pk__in=page_ids).order_by()}
    return CatalogPage(page=ids, templates=[by_pk[pk] for pk in page_ids])


def template_search(queryset: QuerySet[Template], query: str) -> QuerySet[Template]:
    """The templates matching `query`, annotated with `relevance` and ordered by it (an
    exact name first, then name > title > tags > summary > README). On PostgreSQL by
    full text, or, when no template matches so, by every word being close to a word of
    the template (typos, prefixes); on SQLite every word must appear somewhere."""
    words = query.lower().split()[:MAX_QUERY_WORDS]
    if not words:
        return queryset
    if connections[queryset.db].vendor == "postgresql":
        queryset = _matching_postgresql(queryset, " ".join(words), words)
    else:
        queryset = _matching_simple(queryset, words)
    return queryset.order_by("-relevance", "name")


def _exact_name(text: str) -> Case:
    return Case(When(name=text, then=Value(10.0)), default=Value(0.0), output_field=FloatField())


def _matching_postgresql(queryset: QuerySet[Template], text: str, words: list[str]) -> QuerySet[Template]:
    full_text = _typos_widened(text, words)
    return queryset.filter(search__vector=full_text).annotate(
        relevance=_exact_name(text) + SearchRank(F("search__vector"), full_text)
    )


def _typos_widened(text: str, words: list[str]) -> SearchQuery:
    """The query as typed when the vocabulary knows every word; otherwise each unknown
    word may also be one of the catalog's words closest to it (typos). One query on the
    small vocabulary's trigram index, instead of probing the templates' vectors first
    (which a word in no template turned into a scan of them all)."""
    pieces = {word: _vocabulary_pieces(word) for word in words}
    closeness = {f"close_{index}": TrigramSimilarity("word", word) for index, word in enumerate(words)}
    # `word % typo`: answered by the vocabulary's trigram index (migration 0013).
    near = Q(*(TrigramSimilar(F("word"), Value(word)) for word in words), _connector=Q.OR)
    exact = Q(word__in=[piece for word in words for piece in pieces[word]])
    rows = list(SearchWord.objects.filter(near | exact).annotate(**closeness).values_list("word", *closeness))
    known = {row[0] for row in rows}
    unknown = [word for word in words if not known.issuperset(pieces[word])]
    # Operators ("quoted", -excluded, or) keep the query as typed: a spelling can't carry them.
    if not unknown or any(word.startswith("-") or '"' in word or word == "or" for word in words):
        return SearchQuery(text, search_type="websearch", config=SEARCH_CONFIG)
    widened = None
    for index, word in enumerate(words, start=1):
        spellings = [word]  # kept: the vocabulary holds whole words, the vectors stems and the README
        if word in unknown:
            close = sorted((row for row in rows if row[index] >= TYPO_MIN_SIMILARITY), key=lambda row: -row[index])
            spellings += [row[0] for row in close[:TYPO_ALTERNATIVES]]
        either = reduce(operator.or_, (SearchQuery(spelling, config=SEARCH_CONFIG) for spelling in spellings))
        widened = either if widened is None else widened & either
    return widened


def _vocabulary_pieces(word: str) -> list[str]:
    """The parts of `word` the vocabulary would hold (templates_catalog.search fills it alike)."""
    return [piece for piece in re.findall(r"[^\W_]+", word) if len(piece) >= TYPO_MIN_WORD and not piece.isdigit()]


def _matching_simple(queryset: QuerySet[Template], words: list[str]) -> QuerySet[Template]:
    relevance: Combinable = Value(0)
    for word in words:
        tagged = Tag.objects.filter(templates=OuterRef("pk"), name__contains=word)
        relevance += Case(
            When(name=word, then=Value(100)),
            When(name__startswith=word, then=Value(50)),
            When(name__contains=word, then=Value(30)),
            When(title__icontains=word, then=Value(20)),
            When(Exists(tagged), then=Value(10)),
            When(summary__icontains=word, then=Value(5)),
            default=Value(0),
            output_field=IntegerField(),
        )
    every_word = Q(*(Q(search_text__contains=word) for word in words))
    return queryset.filter(every_word).annotate(relevance=relevance)


def template_sorted(queryset: QuerySet[Template], *, sort: str, searched: bool) -> QuerySet[Template]:
    """`relevance` keeps a search's ranking (name order without a search)."""
    if sort == "newest":
        return queryset.order_by("-created_at", "-id")
    if sort == "relevance" and searched:
        return queryset
    return queryset.order_by("name")


def template_tag_facets(queryset: QuerySet[Template], *, result_count: int | None) -> list[Tag]:
    """The most used tags among `queryset`, each with `count`: one aggregate query, and
    none for more than FACET_MAX_RESULTS results (or an uncounted number, None), where
    counting every tag of every result would cost more than the page (tags narrow a
    search, not the whole catalog)."""
    if not result_count or result_count > FACET_MAX_RESULTS:
        return []
    matching = queryset.order_by().values("pk")
    tags = Tag.objects.filter(templates__in=matching).annotate(count=Count("templates")).order_by("-count", "name")
    return list(tags[:TAG_FACETS])


def template_detail(user: User | AnonymousUser, name: str, token: ApiToken | None = None) -> Template | None:
    return (
        templates_visible_to(user, token)
        .select_related("publisher", "latest_version")
        .annotate(verified_ready_seconds=_latest_verified_ready_seconds())
        .filter(name=name)
        .first()
    )


def _with_creator_membership(tokens: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
    """`creator_is_member` on each token: a token works only while its creator belongs to its publisher."""
    creator_membership = Membership.objects.filter(publisher_id=OuterRef("publisher_id"), user_id=OuterRef("created_by_id"))
    # A personal token has no publisher: its creator is all it needs.
    belongs = Case(When(publisher__isnull=True, then=Value(True)), default=Exists(creator_membership), output_field=BooleanField())
    return tokens.select_related("publisher", "created_by").annotate(creator_is_member=belongs)


def api_token_by_secret(secret: str) -> ApiToken | None:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    token = _with_creator_membership(ApiToken.objects.filter(token_sha256=digest)).first()
    # The lookup is by a digest of a high-entropy secret; compare again in constant time anyway.
    if token is None or not hmac.compare_digest(token.token_sha256, digest):
        return None
    return token


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    # A read scope (the tokens of the user's publishers, and their own personal ones);
    # revoking still asks `access`.
    mine = Q(publisher__memberships__user=user) | Q(publisher__isnull=True, created_by=user)
    return _with_creator_membership(ApiToken.objects.filter(mine)).order_by("publisher__name", "publisher_id", "-created_at")


def template_versions_sorted(template: Template) -> list[TemplateVersion]:
    """Newest first by semantic version (a release after its pre-releases)."""
    versions = TemplateVersion.objects.filter(template=template).defer(
        "readme", "readme_html", "changelog", "changelog_html", "files"
    )
    return sorted(versions, key=lambda v: SemVer.parse(v.version), reverse=True)


def template_versions_with_build_status(template: Template) -> list[TemplateVersion]:
    """Newest first, each with `latest_build_status` (the status of its most recent build,
    None if never built) read in the same query as the versions."""
    latest_build = Build.objects.filter(version=OuterRef("pk")).order_by("-created_at", "-pk").values("status")[:1]
    versions = (
        TemplateVersion.objects.filter(template=template)
        .defer("readme", "readme_html", "changelog", "changelog_html", "files")
        .annotate(latest_build_status=Subquery(latest_build))
    )
    return sorted(versions, key=lambda v: SemVer.parse(v.version), reverse=True)


def publisher_templates(user: User | AnonymousUser, publisher: Publisher) -> QuerySet[Template]:
    """A publisher's catalog cards: public ones for everybody, private ones for its members."""
    return template_catalog(user).filter(publisher=publisher)


def memberships_of(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("publisher").order_by("publisher__name")


def publisher_members(publisher: Publisher) -> QuerySet[Membership]:
    return Membership.objects.filter(publisher=publisher).select_related("user").order_by("-role", "user__username")


def publisher_pending_invitations(publisher: Publisher) -> QuerySet[PublisherInvitation]:
    return PublisherInvitation.objects.filter(
        publisher=publisher, accepted_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("invited_by")
