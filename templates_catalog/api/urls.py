from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

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
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
