"""The catalog API: public reads, and uploads and yanks by a publisher's tokens."""

import base64

from django.conf import settings
from django.core.files.storage import storages
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from ..access import publish_refusal, publishers_of
from ..filters import CatalogFilterBackend, TemplateFilter
from ..models import ApiToken, BundleProblem, Publisher, Template, TemplateVersion
from ..selectors import template_catalog, template_detail
from ..services import PublishTooLarge, template_version_publish, template_version_yank
from ..stored_bundles import bundle_problem_record
from .pagination import CatalogPagination
from .parsers import BundleStreamParser, OctetStreamBundleParser
from .serializers import (
    PublishErrorSerializer,
    TemplateDetailSerializer,
    TemplateSerializer,
    VersionSerializer,
    YankSerializer,
)
from .throttling import UploadRateThrottle

BUNDLE_CONTENT_TYPES = {"application/gzip", "application/octet-stream"}


class BundleUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "bundle_unavailable"


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"


def _token(request: Request) -> ApiToken | None:
    """The publisher token that scopes the request; a personal token reads as its user."""
    token = request.auth if isinstance(request.auth, ApiToken) else None
    return token if token is not None and token.publisher_id is not None else None


def _refuse_personal_token(request: Request) -> None:
    if isinstance(request.auth, ApiToken) and request.auth.publisher_id is None:
        raise exceptions.PermissionDenied(
            "This is a personal deploy token; publishing needs a publisher token with the publish permission."
        )


def _visible_template(request: Request, name: str) -> Template:
    template = template_detail(request.user, name, _token(request))
    if template is None:
        raise exceptions.NotFound(f"No template named {name!r} (or it is private to another publisher).")
    return template


class TemplateList(generics.ListAPIView):
    """Templates the caller may see, with the web catalog's search and filters."""

    serializer_class = TemplateSerializer
    filter_backends = [CatalogFilterBackend]
    filterset_class = TemplateFilter
    pagination_class = CatalogPagination

    def get_queryset(self):
        return template_catalog(self.request.user, _token(self.request)).order_by("name")


class TemplateDetail(generics.RetrieveAPIView):
    serializer_class = TemplateDetailSerializer
    lookup_field = "name"

    def get_object(self):
        return _visible_template(self.request, self.kwargs["name"])


class VersionList(generics.ListAPIView):
    """GET: the template's versions, newest first. POST: publish a new version."""

    serializer_class = VersionSerializer
    parser_classes = [BundleStreamParser, OctetStreamBundleParser, *api_settings.DEFAULT_PARSER_CLASSES]

    def get_throttles(self):
        return [UploadRateThrottle()] if self.request.method == "POST" else super().get_throttles()

    def get_queryset(self):
        template = _visible_template(self.request, self.kwargs["name"])
        return (
            TemplateVersion.objects.filter(template=template)
            .select_related("template")
            .prefetch_related("requirements__template")
            .order_by("-major", "-minor", "-patch", "-created_at")
        )

    @extend_schema(
        request={"application/gzip": OpenApiTypes.BINARY, "application/octet-stream": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter("visibility", str, enum=["public", "private"], description="for a template's first version"),
            OpenApiParameter("publisher", str, description="publisher slug, when a signed-in user belongs to several"),
        ],
        responses={
            201: VersionSerializer,
            200: OpenApiResponse(VersionSerializer, description="the same bytes were already published: nothing changed"),
            400: PublishErrorSerializer,
            409: PublishErrorSerializer,
            413: PublishErrorSerializer,
        },
    )
    def post(self, request: Request, name: str) -> Response:
        publisher = _publisher_for_upload(request, name)
        stream = _bundle_stream(request)
        visibility = request.query_params.get("visibility", Template.Visibility.PUBLIC)
        if visibility not in Template.Visibility.values:
            raise exceptions.ValidationError({"visibility": "use `public` or `private`."})
        result = template_version_publish(
            publisher=publisher, bundle=stream, published_by=request.user, expected_name=name, visibility=visibility
        )
        body = VersionSerializer(result.version, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class VersionDetail(generics.RetrieveAPIView):
    serializer_class = VersionSerializer

    def get_object(self):
        template = _visible_template(self.request, self.kwargs["name"])
        return get_object_or_404(
            TemplateVersion.objects.prefetch_related("requirements__template"),
            template=template,
            version=self.kwargs["version"],
        )


class VersionYank(APIView):
    """Stop new deploys of a version. Running deployments keep it; it is never deleted."""

    @extend_schema(request=YankSerializer, responses={200: VersionSerializer, 400: PublishErrorSerializer})
    def post(self, request: Request, name: str, version: str) -> Response:
        template = _visible_template(request, name)
        _require_publish_right(request, template.publisher, name)
        found = get_object_or_404(TemplateVersion, template=template, version=version)
        payload = YankSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        yanked = template_version_yank(version=found, reason=payload.validated_data["reason"])
        return Response(VersionSerializer(yanked, context={"request": request}).data)


class VersionBundle(APIView):
    """The bundle's bytes, with their sha256 in `X-Bundle-SHA256` and `Digest`."""

    @extend_schema(
        responses={
            (200, "application/gzip"): OpenApiTypes.BINARY,
            503: OpenApiResponse(description="the stored bundle is missing or damaged: upload the same bundle again"),
        }
    )
    def get(self, request: Request, name: str, version: str) -> FileResponse:
        template = _visible_template(request, name)
        found = get_object_or_404(TemplateVersion, template=template, version=version)
        stored = _open_bundle(found)
        response = FileResponse(
            stored,
            as_attachment=True,
            filename=f"{name}-{version}.tar.gz",
            content_type="application/gzip",
        )
        response["X-Bundle-SHA256"] = found.bundle_sha256
        response["Digest"] = "sha-256=" + base64.b64encode(bytes.fromhex(found.bundle_sha256)).decode()
        response["ETag"] = f'"{found.bundle_sha256}"'
        return response


def _open_bundle(version: TemplateVersion):
    """The stored bytes, unless they are known to be damaged or turn out to be missing."""
    problem = BundleProblem.objects.filter(version=version).first()
    if problem is None:
        try:
            return storages["artifacts"].open(version.bundle_path, "rb")
        except FileNotFoundError:
            problem = bundle_problem_record(version=version, kind=BundleProblem.Kind.MISSING)
    raise BundleUnavailable(
        f"{version.template.name} {version.version} cannot be downloaded: {problem.get_kind_display()}. Uploading "
        "the same bundle again repairs it; the hub's operator lists every such version with `manage.py storage_check`."
    )


def _publisher_for_upload(request: Request, name: str) -> Publisher:
    if not request.user.is_authenticated:
        raise exceptions.NotAuthenticated("Send `Authorization: Bearer <token>` with a publish token.")
    _refuse_personal_token(request)
    owner = Template.objects.filter(name=name).select_related("publisher").first()
    token = _token(request)
    if token is not None:
        publisher = token.publisher
    elif owner is not None:
        publisher = owner.publisher
    else:
        publisher = _session_publisher(request)
    if owner is not None and owner.publisher_id != publisher.pk:
        raise exceptions.PermissionDenied(f"The name {name!r} is taken by another publisher; choose another name.")
    _require_publish_right(request, publisher, name)
    return publisher


def _session_publisher(request: Request) -> Publisher:
    slug = request.query_params.get("publisher")
    choices = [publisher for publisher in publishers_of(request.user) if slug is None or publisher.slug == slug]
    if len(choices) != 1:
        raise exceptions.PermissionDenied(
            "Say which publisher to publish as with `?publisher=<slug>`." if choices else "You belong to no such publisher."
        )
    return choices[0]


def _require_publish_right(request: Request, publisher: Publisher, name: str) -> None:
    if not request.user.is_authenticated:
        raise exceptions.NotAuthenticated("Send `Authorization: Bearer <token>` with a publish token.")
    _refuse_personal_token(request)
    refusal = publish_refusal(request.user, publisher, name, _token(request))
    if refusal is not None:
        raise exceptions.PermissionDenied(refusal)


def _bundle_stream(request: Request):
    content_type = request.content_type.split(";")[0].strip().lower()
    if content_type not in BUNDLE_CONTENT_TYPES:
        raise exceptions.UnsupportedMediaType(
            content_type,
            "Send the .tar.gz as the raw request body: "
            "curl --data-binary @bundle.tar.gz -H 'Content-Type: application/gzip' …",
        )
    length = request.META.get("CONTENT_LENGTH")
    if not length:
        raise LengthRequired("Send a Content-Length header with the bundle.")
    try:
        size = int(length)
    except ValueError:
        raise exceptions.ParseError("Content-Length is not a number.") from None
    if size > settings.BUNDLE_MAX_BYTES:
        # Refused like every other bundle problem, so the answer has the same `errors` list.
        raise PublishTooLarge(f"the bundle is {size} bytes; the limit is {settings.BUNDLE_MAX_BYTES}: make it smaller")
    # Read the WSGI stream directly: never request.body or request.data, which would
    # hold the whole bundle in memory.
    return request._request

