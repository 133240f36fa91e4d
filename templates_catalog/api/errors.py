from rest_framework.response import Response
from rest_framework.views import exception_handler

from ..services import PublishRejected


def hub_exception_handler(exc, context):
    """Service rejections become 4xx answers with one entry per problem."""
    if isinstance(exc, PublishRejected):
        errors = [{"field": error.field, "message": error.message} for error in exc.errors]
        return Response({"detail": str(exc), "errors": errors}, status=exc.status)
    return exception_handler(exc, context)
