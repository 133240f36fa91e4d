"""Every write to accounts, publishers' memberships and invitations.

Owners manage members (`access.may_manage_members`); a publisher always keeps at least one
owner; a removed member's tokens of that publisher are revoked with the removal."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from .access import may_manage_members
from .models import ApiToken, Membership, Publisher, PublisherInvitation


class SignupRefused(PermissionDenied):
    """This hub's SIGNUP_MODE does not allow this sign-up; the message says why."""


class InvitationInvalid(ValidationError):
    """The invitation link is unknown, used or expired; the message says what to do."""


@dataclass(frozen=True)
class CreatedInvitation:
    invitation: PublisherInvitation
    secret: str

    @property
    def path(self) -> str:
        return invitation_path(self.secret)


def invitation_path(secret: str) -> str:
    return reverse("catalog:invitation", args=[secret])


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _require_owner(user: AbstractBaseUser, publisher: Publisher) -> None:
    if not may_manage_members(user, publisher):
        raise PermissionDenied(f"Only owners of {publisher.name} manage its members.")


def _check_role(role: str) -> None:
    if role not in Membership.Role.values:
        raise ValidationError(f"“{role}” is not a role: choose one of {', '.join(Membership.Role.values)}.")


def membership_add(*, publisher: Publisher, user: AbstractBaseUser, role: str, added_by: AbstractBaseUser) -> Membership:
    """Add an existing user straight away (an owner typed their username)."""
    _require_owner(added_by, publisher)
    _check_role(role)
    try:
        with transaction.atomic():
            return Membership.objects.create(publisher=publisher, user=user, role=role)
    except IntegrityError:
        raise ValidationError(f"{user.get_username()} is already a member of {publisher.name}.") from None


def membership_invite(*, publisher: Publisher, email: str, role: str, invited_by: AbstractBaseUser) -> CreatedInvitation:
    """A one-time invitation link, emailed to `email` once the row is committed. The secret
    is returned once; only its sha256 is kept."""
    _require_owner(invited_by, publisher)
    _check_role(role)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = PublisherInvitation.objects.create(
            publisher=publisher,
            email=email,
            role=role,
            token_sha256=_digest(secret),
            invited_by=invited_by,
            expires_at=timezone.now() + timedelta(days=settings.INVITATION_DAYS),
        )
        transaction.on_commit(partial(_send_invitation, invitation, secret))
    return CreatedInvitation(invitation=invitation, secret=secret)


def _send_invitation(invitation: PublisherInvitation, secret: str) -> None:
    link = settings.HUB_PUBLIC_URL.rstrip("/") + invitation_path(secret)
    send_mail(
        subject=f"You are invited to {invitation.publisher.name} on the AI Hub",
        message=(
            f"{invitation.invited_by.get_username()} invites you to join {invitation.publisher.name} "
            f"as {invitation.role}.\n\nOpen this link to accept (it works once, until "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n\n{link}\n"
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_check(*, secret: str) -> PublisherInvitation:
    """The invitation behind a link, or InvitationInvalid saying why it cannot be used."""
    return _usable_invitation(PublisherInvitation.objects.select_related("publisher", "invited_by"), secret)


def _usable_invitation(queryset, secret: str) -> PublisherInvitation:
    invitation = queryset.filter(token_sha256=_digest(secret)).first()
    if invitation is None:
        raise InvitationInvalid(
            "This invitation link is not valid: check that you copied all of it, or ask the publisher's owner for a new one."
        )
    if invitation.accepted_at is not None:
        raise InvitationInvalid("This invitation was already used: each link works once. Ask the publisher's owner for a new one.")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid(
            f"This invitation expired on {invitation.expires_at:%Y-%m-%d}. Ask the publisher's owner for a new one."
        )
    return invitation


def invitation_accept(*, secret: str, user: AbstractBaseUser) -> Membership:
    """Use an invitation once: `user` joins its publisher with its role. A user who is
    already a member keeps their role; the invitation is used up either way."""
    with transaction.atomic():
        # Locked, so two people racing with one link cannot both get in.
        invitation = _usable_invitation(PublisherInvitation.objects.select_for_update(), secret)
        membership, _ = Membership.objects.get_or_create(
            publisher_id=invitation.publisher_id, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership


def invitation_cancel(*, invitation: PublisherInvitation, cancelled_by: AbstractBaseUser) -> None:
    _require_owner(cancelled_by, invitation.publisher)
    invitation.delete()


def membership_change_role(*, membership: Membership, role: str, changed_by: AbstractBaseUser) -> Membership:
    _require_owner(changed_by, membership.publisher)
    _check_role(role)
    with transaction.atomic():
        current = _lock_and_check_owners(membership, leaving_owners=role != Membership.Role.OWNER)
        current.role = role
        current.save(update_fields=["role"])
    return current


def membership_remove(*, membership: Membership, removed_by: AbstractBaseUser) -> int:
    """Remove a member and revoke the tokens they made for this publisher, in one
    transaction. Returns how many tokens were revoked."""
    _require_owner(removed_by, membership.publisher)
    with transaction.atomic():
        current = _lock_and_check_owners(membership, leaving_owners=True)
        current.delete()
        return ApiToken.objects.filter(
            publisher_id=current.publisher_id, created_by_id=current.user_id, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())


def _lock_and_check_owners(membership: Membership, *, leaving_owners: bool) -> Membership:
    # Every membership of the publisher is locked, so two owners demoting each other at
    # once cannot leave it with none.
    locked = {m.pk: m for m in Membership.objects.select_for_update().filter(publisher_id=membership.publisher_id)}
    current = locked.get(membership.pk)
    if current is None:
        raise ValidationError("This person is no longer a member; reload the page.")
    owners = [m for m in locked.values() if m.role == Membership.Role.OWNER]
    if leaving_owners and owners == [current]:
        raise ValidationError(
            f"{membership.user.get_username()} is the last owner of {membership.publisher.name}: "
            "make another member an owner first."
        )
    return current


def user_register(*, username: str, email: str, password: str, invitation_secret: str = "") -> AbstractBaseUser:
    """A new account, allowed by SIGNUP_MODE; with an invitation, it joins that publisher
    in the same transaction (a used-up invitation leaves no account behind)."""
    signup_check(invitation_secret=invitation_secret)
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(username=username, email=email, password=password)
            if invitation_secret:
                invitation_accept(secret=invitation_secret, user=user)
    except IntegrityError:
        raise ValidationError({"username": f"The username “{username}” is taken: choose another one."}) from None
    return user


def signup_check(*, invitation_secret: str) -> None:
    """Raise SignupRefused when this hub's SIGNUP_MODE does not allow a sign-up."""
    if settings.SIGNUP_MODE == "closed":
        raise SignupRefused("Sign-ups are closed on this hub: accounts come from your organisation's sign-in. Ask an administrator.")
    if settings.SIGNUP_MODE == "invite" and not invitation_secret:
        raise SignupRefused("Sign-up on this hub needs an invitation link from the owner of a publisher.")
