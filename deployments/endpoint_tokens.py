"""Endpoint tokens: create, revoke, rotate. The keys to a deployment's endpoint through the
gateway; only the deployment's owner holds them."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from templates_catalog.access import may_manage_deployment

from .models import Deployment, DeploymentEdge, EndpointToken
from .services import DeploymentConflict, DeploymentNotFound, DeploymentRejected

# Tells endpoint tokens apart from the hub's API tokens (`hub_…`) in a config file or a leak scan.
SECRET_PREFIX = "hubep_"
VISIBLE_CHARS = len(SECRET_PREFIX) + 6


@dataclass(frozen=True)
class CreatedEndpointToken:
    token: EndpointToken
    secret: str


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def endpoint_token_create(
    *, deployment: Deployment, created_by: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> CreatedEndpointToken:
    """Mint a token for `deployment`'s endpoint. The secret is returned once; only its
    sha256 is stored."""
    _check_owner(deployment, created_by)
    if deployment.deleted_at is not None:
        raise DeploymentNotFound(f"{deployment.handle} was deleted")
    name = name.strip()
    if not name:
        raise DeploymentRejected("the token needs a name", [("name", "say what the token is for, e.g. “staging app”")])
    if expires_at is not None and expires_at <= timezone.now():
        raise DeploymentRejected("the expiry must be in the future", [("expires_at", "choose a time in the future")])
    return _mint(deployment=deployment, name=name, expires_at=expires_at)


def endpoint_token_revoke(*, token: EndpointToken, revoked_by: AbstractBaseUser) -> EndpointToken:
    """The token stops working at once (gateways that kept its lookup hear of it at commit).
    Revoking twice is fine."""
    _check_owner(token.deployment, revoked_by)
    EndpointToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


def endpoint_token_rotate(*, token: EndpointToken, rotated_by: AbstractBaseUser) -> CreatedEndpointToken:
    """A new secret under the same name and expiry; the old one stops working in the same
    transaction, so there is never a moment with both or neither."""
    _check_owner(token.deployment, rotated_by)
    with transaction.atomic():
        # Locked: two rotations at once must not both mint a successor.
        current = EndpointToken.objects.select_for_update().get(pk=token.pk)
        if current.revoked_at is not None:
            raise DeploymentConflict(f"token “{current.name}” ({current.prefix}…) is revoked; create a new one instead")
        if current.expires_at is not None and current.expires_at <= timezone.now():
            raise DeploymentConflict(f"token “{current.name}” ({current.prefix}…) has expired; create a new one instead")
        current.revoked_at = timezone.now()
        current.save(update_fields=["revoked_at"])
        return _mint(deployment=token.deployment, name=current.name, expires_at=current.expires_at)


def endpoint_token_mint_for_edge(*, edge: DeploymentEdge, dependant: Deployment) -> str:
    """A fresh token for `edge.dependant` to call `edge.requirement`, made at each launch of
    the dependant (the secret lives only in that run's environment); the token its previous
    launch had is deleted in the same transaction: every wake is a launch, and revoked rows
    would pile up by the thousand on the requirement's tokens list. Returns the secret."""
    with transaction.atomic():
        if edge.token_id is not None:
            EndpointToken.objects.filter(pk=edge.token_id).delete()
        created = _mint(deployment=edge.requirement, name=f"{dependant.handle} as {edge.alias}"[:64], expires_at=None)
        DeploymentEdge.objects.filter(pk=edge.pk).update(token=created.token)
        edge.token = created.token
    return created.secret


def _mint(*, deployment: Deployment, name: str, expires_at: datetime | None) -> CreatedEndpointToken:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = EndpointToken.objects.create(
        deployment=deployment, name=name, prefix=secret[:VISIBLE_CHARS], token_sha256=token_digest(secret),
        expires_at=expires_at,
    )
    return CreatedEndpointToken(token=token, secret=secret)


def _check_owner(deployment: Deployment, user: AbstractBaseUser) -> None:
    if not may_manage_deployment(user, deployment.owner_id):
        raise PermissionDenied("only the deployment's owner manages its endpoint tokens")
