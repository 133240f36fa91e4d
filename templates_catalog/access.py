"""Who may do what. Views, serializers and services ask here; nothing else queries
memberships to decide a permission."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

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


def may_build(user: AbstractBaseUser | AnonymousUser, version: TemplateVersion) -> bool:
    return is_member(user, version.template.publisher_id)


def may_deploy(user: AbstractBaseUser | AnonymousUser, version: TemplateVersion) -> bool:
    """Any signed-in user may deploy what they may read; yanked versions are refused by the
    deploy service itself, with a reason, not hidden here."""
    return user.is_authenticated and user.is_active and may_read(user, version.template)


def may_manage_deployment(user: AbstractBaseUser | AnonymousUser, owner_id: int) -> bool:
    """A deployment and its endpoint belong to the user who deployed it."""
    return user.is_authenticated and user.is_active and user.pk == owner_id
