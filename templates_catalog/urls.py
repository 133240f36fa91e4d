from django.contrib.auth import views as auth_views
from django.urls import path

from . import token_views, views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("templates/", views.template_list, name="template_list"),
    path("templates/<slug:name>/", views.template_page, name="template_page"),
    path("templates/<slug:name>/versions/<str:version>/", views.version_page, name="version_page"),
    path("templates/<slug:name>/versions/<str:version>/build/", views.version_build, name="version_build"),
    path("templates/<slug:name>/versions/<str:version>/build/status/", views.version_build_status, name="version_build_status"),
    path("account/tokens/", token_views.token_list, name="token_list"),
    path("account/tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token_revoke"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="catalog/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
