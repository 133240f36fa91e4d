from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/deployments/", include("deployments.api.urls")),
    path("api/", include("templates_catalog.api.urls")),
    # Deployment pages (deploy, my deployments); before the catalog's, which they extend.
    path("", include("deployments.urls")),
    path("", include("templates_catalog.urls")),
]
