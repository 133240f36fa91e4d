from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from ..services import PublishRejected


def hub_exception_handler(exc, context):
    """Service rejections and invalid input become 4xx answers with one entry per problem."""
    if isinstance(exc, PublishRejected):
        errors = [{"field": error.field, "message": error.message} for error in exc.errors]
        return Response({"detail": str(exc), "errors": errors}, status=exc.status)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        errors = list(_field_errors(exc.detail))
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        response.data = {"detail": detail, "errors": errors}
    return response


def _field_errors(detail, field: str = ""):
    """DRF's nested error detail, flattened into `field`/`message` pairs (`items.0.name`)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            yield from _field_errors(value, f"{field}.{name}".strip(".") if name else field)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            for item in detail:
                yield {"field": field, "message": str(item)}
        else:
            for index, item in enumerate(detail):
                yield from _field_errors(item, f"{field}.{index}".strip("."))
    else:
        yield {"field": field, "message": str(detail)}
