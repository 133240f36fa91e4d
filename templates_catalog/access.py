"""Who may do what. Views, serializers and services ask here; nothing else queries
memberships to decide a permission."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from .models import ApiToken, Membership, Publisher, Template, TemplateVersion


def is_member(user: AbstractBaseUser | AnonymousUser, publisher: Publisher | int) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    publisher_id = publisher if isinstance(publisher, int) else publisher.pk
    return Membership.objects.filter(user_id=user.pk, publisher_id=publisher_id).exists()


def may_manage_members(user: AbstractBaseUser | AnonymousUser, publisher: Publisher) -> bool:
    """Only owners invite, remove and change the roles of a publisher's members."""
    if not user.is_authenticated or not user.is_active:
        return False
    return Membership.objects.filter(user_id=user.pk, publisher_id=publisher.pk, role=Membership.Role.OWNER).exists()


def may_read(user: AbstractBaseUser | AnonymousUser, template: Template, token: ApiToken | None = None) -> bool:
    if template.visibility == Template.Visibility.PUBLIC:
        return True
    if token is not None:
        return token.publisher_id == template.publisher_id and token.covers(template.name)
    return is_member(user, template.publisher_id)


def may_publish(user: AbstractBaseUser | AnonymousUser, publisher: Publisher) -> bool:
    return is_member(user, publisher)


def publish_refusal(
    user: AbstractBaseUser | AnonymousUser, publisher: Publisher, template_name: str, token: ApiToken | None = None
) -> str | None:
    """Why `user` (or `token`) may not publish `template_name` as `publisher`; None when they may."""
    if token is not None:
        if not token.can_publish:
            return "This token is read-only; create one with the publish permission."
        if token.publisher_id != publisher.pk:
            return f"This token belongs to another publisher than {template_name!r}'s."
        if not token.covers(template_name):
            return f"This token is limited to {', '.join(token.template_names)}; {template_name!r} is not one of them."
        return None
    if not may_publish(user, publisher):
        return f"You are not a member of the publisher of {template_name!r}."
    return None


def publishers_of(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Publisher]:
    """The publishers `user` may publish as."""
    if not user.is_authenticated or not user.is_active:
        return Publisher.objects.none()
    return Publisher.objects.filter(memberships__user_id=user.pk).order_by("slug")


def may_build(user: AbstractBaseUser | AnonymousUser, version: TemplateVersion) -> bool:
    return is_member(user, version.template.publisher_id)


def may_yank(user: AbstractBaseUser | AnonymousUser, version: TemplateVersion) -> bool:
    return is_member(user, version.template.publisher_id)


def may_deploy(user: AbstractBaseUser | AnonymousUser, version: TemplateVersion) -> bool:
    """Any signed-in user may deploy what they may read; yanked versions are refused by the
    deploy service itself, with a reason, not hidden here."""
    return user.is_authenticated and user.is_active and may_read(user, version.template)


def may_manage_deployment(user: AbstractBaseUser | AnonymousUser, owner_id: int) -> bool:
    """A deployment and its endpoint belong to the user who deployed it."""
    return user.is_authenticated and user.is_active and user.pk == owner_id
