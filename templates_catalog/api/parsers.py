from rest_framework.parsers import BaseParser, DataAndFiles


class BundleStreamParser(BaseParser):
    """Accepts a bundle's content type without reading it: the upload view streams the
    body itself, so a bundle never sits in memory (DRF parses on any `request.POST`
    access, the CSRF check of session authentication included)."""

    media_type = "application/gzip"

    def parse(self, stream, media_type=None, parser_context=None):
        return DataAndFiles({}, {})



class OctetStreamBundleParser(BundleStreamParser):
    media_type = "application/octet-stream"
