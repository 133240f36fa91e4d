from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from . import account_views, publisher_views, token_views, views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("templates/", views.template_list, name="template_list"),
    path("templates/<slug:name>/", views.template_page, name="template_page"),
    path("templates/<slug:name>/versions/<str:version>/", views.version_page, name="version_page"),
    path("templates/<slug:name>/versions/<str:version>/build/", views.version_build, name="version_build"),
    path("templates/<slug:name>/versions/<str:version>/build/status/", views.version_build_status, name="version_build_status"),
    path("templates/<slug:name>/versions/<str:version>/yank/", views.version_yank, name="version_yank"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("account/tokens/", token_views.token_list, name="token_list"),
    path("account/tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token_revoke"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="catalog/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", account_views.signup, name="signup"),
    path("invitations/<str:secret>/", account_views.invitation, name="invitation"),
    path("publishers/", publisher_views.publisher_list, name="publisher_list"),
    path("publishers/new/", publisher_views.publisher_new, name="publisher_new"),
    path("publishers/<slug:slug>/", publisher_views.publisher_page, name="publisher_page"),
    path("publishers/<slug:slug>/settings/", publisher_views.publisher_settings, name="publisher_settings"),
    path("publishers/<slug:slug>/members/<int:membership_id>/role/", publisher_views.membership_role, name="membership_role"),
    path("publishers/<slug:slug>/members/<int:membership_id>/remove/", publisher_views.membership_remove_view, name="membership_remove"),
    path("publishers/<slug:slug>/invitations/<int:invitation_id>/cancel/", publisher_views.invitation_cancel_view, name="invitation_cancel"),
]
# Django's password reset flow, in the site's layout and under this app's namespace.
urlpatterns += [
    path(
        "accounts/password_reset/",
        auth_views.PasswordResetView.as_view(
            template_name="catalog/accounts/password_reset_form.html",
            email_template_name="catalog/accounts/password_reset_email.txt",
            subject_template_name="catalog/accounts/password_reset_subject.txt",
            success_url=reverse_lazy("catalog:password_reset_done"),
        ),
        name="password_reset",
    ),
    path(
        "accounts/password_reset/done/",
        auth_views.PasswordResetDoneView.as_view(template_name="catalog/accounts/password_reset_done.html"),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="catalog/accounts/password_reset_confirm.html",
            success_url=reverse_lazy("catalog:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(template_name="catalog/accounts/password_reset_complete.html"),
        name="password_reset_complete",
    ),
]
