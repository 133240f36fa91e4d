from rest_framework import exceptions, permissions

from templates_catalog.models import ApiToken


class MayDeploy(permissions.BasePermission):
    """A signed-in session, or a personal API token with the deploy permission."""

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated(
                "Send `Authorization: Bearer <token>` with a personal token that has the deploy permission."
            )
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is not None and not token.can_deploy:
            raise exceptions.PermissionDenied(
                "this token cannot deploy: create a personal token with the deploy permission"
            )
        return True
