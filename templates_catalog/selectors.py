"""Reads of the catalog, scoped to what the asking user may see."""

import hashlib
import hmac
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from .models import ApiToken, Build, Membership, Publisher, PublisherInvitation, Template, TemplateVersion
from .versions import SemVer


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
        .defer("latest_version__readme", "latest_version__readme_html", "latest_version__manifest", "search_text")
        .prefetch_related("tags")
        .annotate(verified_ready_seconds=_latest_verified_ready_seconds())
    )


def _latest_verified_ready_seconds() -> Subquery:
    """The time to ready of the latest version's last verified build, None when it has none.
    A subquery in the same SELECT: the badge costs a list page no query of its own."""
    verified = Build.objects.filter(version_id=OuterRef("latest_version_id"), status=Build.Status.SUCCEEDED, verified=True)
    return Subquery(verified.order_by("-finished_at").values("ready_seconds")[:1])


@dataclass
class CatalogPage:
    page: Page
    templates: list[Template]


def template_catalog_page(queryset: QuerySet[Template], number: str | int | None, per_page: int) -> CatalogPage:
    """One page of the catalog, ordered by name. The page's ids come from the template
    table alone (an index walk even on deep pages); only those rows are then joined."""
    ids = Paginator(queryset.order_by("name").values_list("pk", flat=True), per_page).get_page(number)
    templates = list(queryset.filter(pk__in=list(ids.object_list)).order_by("name"))
    return CatalogPage(page=ids, templates=templates)


def template_search(queryset: QuerySet[Template], query: str) -> QuerySet[Template]:
    """Every word of `query` must appear in the name, title, summary or tags."""
    for word in query.lower().split()[:10]:
        queryset = queryset.filter(search_text__contains=word)
    return queryset


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
    versions = TemplateVersion.objects.filter(template=template).defer("readme", "readme_html")
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
