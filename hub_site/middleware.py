from django.conf import settings


class PermissionsPolicyMiddleware:
    """Tell browsers the hub's pages never use the camera, microphone, location and the like."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response
