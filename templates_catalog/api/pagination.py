from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from ..selectors import COUNT_CAP, CappedPaginator


class CatalogPagination(PageNumberPagination):
    """Pages of the catalog counted like the web pages: at most COUNT_CAP templates
    (`count_capped` says more match), never a COUNT over every match of a common word."""

    django_paginator_class = CappedPaginator

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.page.paginator.count,
                "count_capped": self.page.paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"].append("count_capped")
        paginated["properties"]["count_capped"] = {
            "type": "boolean",
            "description": f"True when more than `count` templates match: counting stops at {COUNT_CAP}, and so do the pages.",
        }
        return paginated
