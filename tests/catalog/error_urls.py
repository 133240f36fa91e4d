"""The site's URLs plus one view that fails, to see the 500 page through the whole stack."""

from django.urls import path

from hub_site.urls import urlpatterns as site_urlpatterns


def broken_view(request):
    raise RuntimeError("a bug")


urlpatterns = [path("broken/", broken_view), *site_urlpatterns]
