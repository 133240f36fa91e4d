"""The gateway's Prometheus metrics and the /metrics page.

Counted in the process that serves the gateway (the activity recorder, the wake waits),
so /metrics of that process shows them. Labelled by deployment id, never by anything a
request chooses, so a client cannot grow the label set."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from rest_framework.exceptions import AuthenticationFailed

from templates_catalog.api.authentication import BearerTokenAuthentication

GATEWAY_REQUESTS = Counter(
    "hub_gateway_requests", "Requests the gateway forwarded, by deployment and status class", ["deployment", "status"]
)
GATEWAY_ERRORS = Counter(
    "hub_gateway_errors", "Requests that ended in a 5xx or no answer from the deployment", ["deployment"]
)
GATEWAY_BYTES = Counter("hub_gateway_bytes", "Body bytes through the gateway", ["deployment", "direction"])
GATEWAY_SECONDS = Histogram(
    "hub_gateway_request_seconds", "Time from a request's arrival to its last byte out",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GATEWAY_IN_FLIGHT = Gauge("hub_gateway_requests_in_flight", "Requests the gateway is forwarding now")
WAKE_SECONDS = Histogram(
    "hub_deployment_wake_seconds", "Time from a wake's start until its deployment answered",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
WAKE_WAITERS = Gauge("hub_gateway_requests_held", "Requests held while their deployment wakes")


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "none"


@require_GET
def metrics_page(request: HttpRequest) -> HttpResponse:
    if not settings.HUB_METRICS_PUBLIC and not _staff(request):
        # 404: whether metrics exist here is itself for operators only.
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def _staff(request: HttpRequest) -> bool:
    """A staff member signed in, or a scraper sending a staff member's API token."""
    if request.user.is_authenticated:
        return request.user.is_active and request.user.is_staff
    try:
        found = BearerTokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return found is not None and found[0].is_active and found[0].is_staff
