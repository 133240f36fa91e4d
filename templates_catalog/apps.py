from django.apps import AppConfig


class TemplatesCatalogConfig(AppConfig):
    name = "templates_catalog"
    verbose_name = "Template catalog"

    def ready(self) -> None:
        from .api import schema  # noqa: F401 - registers the OpenAPI description of token auth
