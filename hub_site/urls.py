from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("templates_catalog.api.urls")),
    path("", include("templates_catalog.urls")),
]
