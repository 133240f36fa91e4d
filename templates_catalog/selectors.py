"""Reads of the catalog, scoped to what the asking user may see."""

import hashlib
import hmac
import operator
import re
from dataclasses import dataclass
from functools import reduce

from django.contrib.auth.models import AnonymousUser, User
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.lookups import TrigramSimilar
from django.contrib.postgres.search import SearchQuery, SearchRank, TrigramSimilarity
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import Combinable, Expression
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.functional import cached_property

from .models import (
    ApiToken,
    Build,
    Membership,
    Publisher,
    PublisherInvitation,
    SearchWord,
    Tag,
    Template,
    TemplateSearch,
    TemplateVersion,
)
from .search import FIELD_TIERS, SEARCH_CONFIG, TYPO_MIN_WORD, head_up_to
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
# Enough to tell "more than COUNT_CAP"; one more as the exact name may come twice.
RANKED_CANDIDATES = COUNT_CAP + 2


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
    return _as_cards(templates_visible_to(user, token))


def _as_cards(templates: QuerySet[Template]) -> QuerySet[Template]:
    return (
        templates.select_related("publisher", "latest_version")
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
        if isinstance(self.object_list, QuerySet):
            return self.object_list.order_by()[: COUNT_CAP + 1].count()
        return min(len(self.object_list), COUNT_CAP + 1)

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


def template_catalog_page(results: "QuerySet[Template] | RankedTemplates", number: str | int | None, per_page: int) -> CatalogPage:
    """One page of the catalog in the results' order. The page's ids come from the
    template table alone (an index walk even on deep pages of the name sort), or from a
    ranked search's ids, already read; only those rows are then read as cards, by id
    alone: the ids were chosen by the queryset's scope and filters (and a second list of
    ids beside the page's would have PostgreSQL scan every template)."""
    ranked = isinstance(results, RankedTemplates)
    ids = CappedPaginator(results.ids if ranked else results.values_list("pk", flat=True), per_page).get_page(number)
    page_ids = list(ids.object_list)
    by_pk = {template.pk: template for template in _as_cards(Template.objects.filter(pk__in=page_ids))}
    return CatalogPage(page=ids, templates=[by_pk[pk] for pk in page_ids])


class RankedTemplates:
    """A ranked search's results: the ids of its matches in rank order (up to
    RANKED_CANDIDATES, read in one query), and `queryset`'s rows read by id only for the
    slice a page shows. A Paginator's object_list: it counts the ids, never the rows."""

    ordered = True

    def __init__(self, queryset: QuerySet[Template], ids: list[int]) -> None:
        self.queryset = queryset
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def count(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: slice) -> list[Template]:
        if not isinstance(index, slice):
            raise TypeError("ranked results are read a page (a slice) at a time")
        ids = self.ids[index]
        # Filtered again by `queryset`: a row it does not hold is left out, never shown.
        by_pk = {template.pk: template for template in self.queryset.order_by().filter(pk__in=ids)} if ids else {}
        return [by_pk[pk] for pk in ids if pk in by_pk]

    def __iter__(self):
        return iter(self[:])

    def matching(self) -> QuerySet[Template]:
        """Every result as a queryset (one array parameter for the ids, not one each)."""
        return self.queryset.filter(PkInArray(Cast(Value(self.ids), ArrayField(BigIntegerField()))))


def template_search(queryset: QuerySet[Template], query: str, *, sort: str = "relevance") -> "QuerySet[Template] | RankedTemplates":
    """The templates matching `query` in `sort` order: by relevance (an exact name
    first, then name > title > tags > summary > README), by name or newest. On
    PostgreSQL by full text, each word widened to the catalog's words closest to it when
    it is not one of them (typos); on SQLite every word must appear somewhere."""
    words = query.lower().split()[:MAX_QUERY_WORDS]
    if not words:
        return template_sorted(queryset, sort=sort)
    text = " ".join(words)
    if connections[queryset.db].vendor == "postgresql":
        full_text = _typos_widened(text, words)
        if sort == "relevance":
            return _ranked_postgresql(queryset, text, words, full_text)
        return template_sorted(queryset.filter(search__vector=full_text), sort=sort)
    matching = _matching_simple(queryset, words)
    return matching.order_by("-relevance", "name") if sort == "relevance" else template_sorted(matching, sort=sort)


def _ranked_postgresql(queryset: QuerySet[Template], text: str, words: list[str], full_text: SearchQuery) -> RankedTemplates:
    """`queryset`'s best matches (`_ranked_candidates`, read once here) by tier, then
    ts_rank, then name: the page's count and ids come from them, and only the page's
    rows are read, by key; no match is ranked or counted twice."""
    candidates = _ranked_candidates(queryset, text, words, full_text)
    ranked = sorted(candidates.items(), key=lambda item: (item[1][0], -item[1][1], item[1][2]))
    return RankedTemplates(queryset, [template_id for template_id, _ in ranked])


class PkInArray(Func):
    """`pk = ANY(ids)`: a thousand ids as one array parameter, where an IN list would
    bind (and have the driver parse) one parameter each."""

    output_field = BooleanField()

    def __init__(self, ids: Expression) -> None:
        super().__init__(F("pk"), ids)

    def as_sql(self, compiler, connection, **extra_context):
        (pk, pk_params), (ids, ids_params) = (compiler.compile(expression) for expression in self.get_source_expressions())
        return f"{pk} = ANY({ids})", [*pk_params, *ids_params]


def _ranked_candidates(
    queryset: QuerySet[Template], text: str, words: list[str], full_text: SearchQuery
) -> dict[int, tuple[int, float, str]]:
    """The tier, ts_rank (over all the fields, weighted) and name of up to RANKED_CANDIDATES of
    `queryset`'s matches, by id. The tiers: the exact name (0), then the first of
    FIELD_TIERS to hold every word, then the README. Never every match of a common word:
    the tiers are read in turn under one LIMIT (UNION ALL: the tiers after it is reached
    are not read), so every match of the tiers before the COUNT_CAP-th is a candidate and
    only the last tier reached is sampled."""
    # A scalar subquery looks each candidate's template up by key (None: not in `queryset`);
    # the planner would turn an EXISTS into a join that hashes every visible template first.
    # Its name is the last tie-break: read here, the page needs no query to order its ids.
    visible_name = queryset.filter(pk=OuterRef("template_id")).order_by().values("name")[:1]
    tier_vectors = {f"tier_{index}": head_up_to(weights) for index, weights in enumerate(FIELD_TIERS)}
    matches = TemplateSearch.objects.annotate(name=Subquery(visible_name)).alias(**tier_vectors).filter(name__isnull=False).order_by()
    # Without an excluded word, a match in a tier is a match of the whole vector; checking
    # it anyway would have the planner AND in the whole vector's index, every row of a common word.
    in_tiers = matches.filter(vector=full_text) if any(word.startswith("-") for word in words) else matches
    exact = Template.objects.filter(name=text).values("pk")[:1]
    tiers = [matches.filter(vector=full_text, template_id=Subquery(exact))]
    for index in range(len(FIELD_TIERS)):
        tier = in_tiers.filter(**{f"tier_{index}": full_text})
        tiers.append(tier.exclude(**{f"tier_{index - 1}": full_text}) if index else tier)
    tiers.append(matches.filter(vector=full_text).exclude(**{f"tier_{len(FIELD_TIERS) - 1}": full_text}))
    ts_rank = SearchRank(F("vector"), full_text)
    rows = [
        tier.annotate(tier=Value(index), rank=ts_rank).values_list("template_id", "tier", "rank", "name") for index, tier in enumerate(tiers)
    ]
    candidates: dict[int, tuple[int, float, str]] = {}
    for template_id, tier, rank, name in rows[0].union(*rows[1:], all=True)[:RANKED_CANDIDATES]:
        # The exact name comes twice: as itself and in its field's tier.
        candidates[template_id] = min(candidates.get(template_id, (tier, rank, name)), (tier, rank, name))
    return candidates


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


def template_sorted(queryset: QuerySet[Template], *, sort: str) -> QuerySet[Template]:
    """Newest first, or by name (also for "relevance" without a search)."""
    if sort == "newest":
        return queryset.order_by("-created_at", "-id")
    return queryset.order_by("name")


def template_tag_facets(results: "QuerySet[Template] | RankedTemplates", *, result_count: int | None) -> list[Tag]:
    """The most used tags among `results`, each with `count`: one aggregate query, and
    none for more than FACET_MAX_RESULTS results (or an uncounted number, None), where
    counting every tag of every result would cost more than the page (tags narrow a
    search, not the whole catalog)."""
    if not result_count or result_count > FACET_MAX_RESULTS:
        return []
    queryset = results.matching() if isinstance(results, RankedTemplates) else results
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
