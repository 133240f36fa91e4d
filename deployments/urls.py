from django.urls import path

from . import job_views, views

app_name = "deployments"
urlpatterns = [
    path("templates/<slug:name>/deploy/", views.deploy_latest, name="deploy"),
    path("templates/<slug:name>/versions/<str:version>/deploy/", views.deploy_version, name="deploy_version"),
    path("deployments/", views.deployment_list, name="list"),
    path("deployments/<str:handle>/", views.deployment_page, name="detail"),
    path("deployments/<str:handle>/state/", views.deployment_state, name="state"),
    path("deployments/<str:handle>/logs/", views.deployment_logs, name="logs"),
    path("deployments/<str:handle>/stop/", views.deployment_stop_view, name="stop"),
    path("deployments/<str:handle>/restart/", views.deployment_restart_view, name="restart"),
    path("deployments/<str:handle>/delete/", views.deployment_delete_view, name="delete"),
    path("deployments/<str:handle>/try/", views.deployment_try_view, name="try"),
    path("deployments/<str:handle>/tokens/", views.endpoint_token_create_view, name="token_create"),
    path("deployments/<str:handle>/tokens/<int:token_id>/revoke/", views.endpoint_token_revoke_view, name="token_revoke"),
    path("deployments/<str:handle>/tokens/<int:token_id>/rotate/", views.endpoint_token_rotate_view, name="token_rotate"),
    path("jobs/", job_views.job_list, name="job_list"),
    path("jobs/<str:handle>/", job_views.job_page, name="job"),
    path("jobs/<str:handle>/live/", job_views.job_live, name="job_live"),
    path("jobs/<str:handle>/promote/", job_views.job_promote_view, name="job_promote"),
    path("jobs/<str:handle>/delete/", job_views.job_delete_view, name="job_delete"),
]
