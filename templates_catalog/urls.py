from django.urls import path

from . import views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("templates/", views.template_list, name="template_list"),
    path("templates/<slug:name>/", views.template_page, name="template_page"),
]
