from django.urls import path

from . import views

app_name = "deployments_api"
HANDLE = "<str:handle>"
urlpatterns = [
    path("", views.DeploymentList.as_view(), name="deployment_list"),
    path(f"{HANDLE}/", views.DeploymentDetail.as_view(), name="deployment_detail"),
    path(f"{HANDLE}/events/", views.DeploymentEvents.as_view(), name="deployment_events"),
    path(f"{HANDLE}/logs/", views.DeploymentLogs.as_view(), name="deployment_logs"),
    path(f"{HANDLE}/stop/", views.DeploymentStop.as_view(), name="deployment_stop"),
    path(f"{HANDLE}/restart/", views.DeploymentRestart.as_view(), name="deployment_restart"),
    path(f"{HANDLE}/tokens/", views.EndpointTokenList.as_view(), name="endpoint_token_list"),
    path(f"{HANDLE}/tokens/<int:token_id>/revoke/", views.EndpointTokenRevoke.as_view(), name="endpoint_token_revoke"),
    path(f"{HANDLE}/tokens/<int:token_id>/rotate/", views.EndpointTokenRotate.as_view(), name="endpoint_token_rotate"),
]
