from django.contrib import admin
from django.urls import include, path

from deployments.metrics import metrics_page

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_page, name="metrics"),
    path("api/v1/deployments/", include("deployments.api.urls")),
    path("api/v1/jobs/", include("deployments.api.job_urls")),
    path("api/", include("templates_catalog.api.urls")),
    # Deployment pages (deploy, my deployments); before the catalog's, which they extend.
    path("", include("deployments.urls")),
    path("", include("templates_catalog.urls")),
]
