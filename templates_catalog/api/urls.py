from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

# The split view serves Swagger UI's start-up script as a file, not inline; its page
# still carries a <style> block and Swagger UI draws icons from data: URLs.
_swagger_ui = csp_update({"style-src": [SELF, UNSAFE_INLINE], "img-src": ["data:"]})(
    SpectacularSwaggerSplitView.as_view(url_name="api:schema")
)

app_name = "api"
VERSION = "<str:version>"
urlpatterns = [
    path("v1/templates/", views.TemplateList.as_view(), name="template_list"),
    path("v1/templates/<slug:name>/", views.TemplateDetail.as_view(), name="template_detail"),
    path("v1/templates/<slug:name>/versions/", views.VersionList.as_view(), name="version_list"),
    path(f"v1/templates/<slug:name>/versions/{VERSION}/", views.VersionDetail.as_view(), name="version_detail"),
    path(f"v1/templates/<slug:name>/versions/{VERSION}/yank/", views.VersionYank.as_view(), name="version_yank"),
    path(f"v1/templates/<slug:name>/versions/{VERSION}/bundle/", views.VersionBundle.as_view(), name="version_bundle"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", _swagger_ui, name="docs"),
]
