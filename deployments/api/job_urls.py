from django.urls import path

from . import jobs

app_name = "jobs_api"
urlpatterns = [
    path("", jobs.JobList.as_view(), name="job_list"),
    path("<str:handle>/", jobs.JobDetail.as_view(), name="job_detail"),
]
