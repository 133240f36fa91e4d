from rest_framework.throttling import SimpleRateThrottle

from ..models import ApiToken


class UploadRateThrottle(SimpleRateThrottle):
    """Uploads per token (or per signed-in user, or per address): each is expensive to check."""

    scope = "uploads"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
