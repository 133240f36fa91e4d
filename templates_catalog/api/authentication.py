from django.utils import timezone
from rest_framework import authentication, exceptions

from ..models import ApiToken
from ..selectors import api_token_by_secret


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer hub_…`. request.user is the token's creator and
    request.auth the token, whose publisher and scope bound what it may do."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: send `Authorization: Bearer <token>`.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token contains characters a hub token never has.") from None
        token = api_token_by_secret(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown token: check it, or create a new one on your tokens page.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(f"Token {token.prefix}… was revoked; create a new one.")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(f"Token {token.prefix}… expired; create a new one.")
        if not token.created_by.is_active:
            raise exceptions.AuthenticationFailed(f"Token {token.prefix}… stopped working: the user who created it is deactivated.")
        if not token.creator_is_member:
            raise exceptions.AuthenticationFailed(
                f"Token {token.prefix}… stopped working: {token.created_by.get_username()}, who created it, is no longer "
                f"a member of {token.publisher.name}; a member creates a new one."
            )
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.created_by, token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
