"""Publisher README markdown to HTML that is safe to put in our pages."""

import re
from html import unescape

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").enable("strikethrough")

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "summary",
    "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align"},
    "th": {"align"},
    "code": {"class"},
}


# A picture a page may show inline: an image type a browser draws in an <img> without running
# anything (an SVG in an <img> runs no script and loads nothing), base64, nothing else.
DATA_IMAGE_URL = re.compile(r"^data:image/(?:png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/]+={0,2}\Z")


def _markdown_with_data_images() -> MarkdownIt:
    # markdown-it's own link check drops SVG data URLs (a chart); nh3 below is what decides.
    parser = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").enable("strikethrough")
    default_check = parser.validateLink
    parser.validateLink = lambda url: bool(DATA_IMAGE_URL.match(url)) or default_check(url)
    return parser


_markdown_data_images = _markdown_with_data_images()


def readme_to_html(markdown_text: str, *, data_images: bool = False) -> str:
    """Render, then sanitise with nh3 (ammonia): scripts, styles, event handlers and
    `javascript:`/`data:` URLs are removed whatever the markdown tried. With `data_images`
    (an endpoint's answer, which has nowhere else to keep its chart), an `<img>` may also
    show a base64 `data:` URL of an image type; every other `data:` URL is still removed."""
    rendered = (_markdown_data_images if data_images else _markdown).render(markdown_text)
    return nh3.clean(
        rendered,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "data"} if data_images else {"http", "https", "mailto"},
        attribute_filter=_only_image_data_urls if data_images else None,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def _only_image_data_urls(tag: str, attribute: str, value: str) -> str | None:
    if not value.lstrip().lower().startswith("data:"):
        return value
    return value if tag == "img" and attribute == "src" and DATA_IMAGE_URL.match(value) else None


_FIRST_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>\s*", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def readme_html_for_page(sanitised_html: str, *, title: str | None = None) -> str:
    """Adjust stored, already sanitised README HTML for a page: drop a first heading that
    only repeats the page's `title`, let wide tables scroll inside their own box, and let
    keyboard users reach (and scroll) code blocks and tables."""
    html = sanitised_html
    if title is not None:
        html = _without_repeated_title(html, title)
    html = html.replace("<table>", '<div class="table-scroll" tabindex="0"><table>').replace("</table>", "</table></div>")
    return html.replace("<pre>", '<pre tabindex="0">')


def _without_repeated_title(html: str, title: str) -> str:
    heading = _FIRST_HEADING.search(html)
    if heading is None or _plain(heading.group(2)) != _plain(title):
        return html
    return html[: heading.start()] + html[heading.end() :]


def _plain(text: str) -> str:
    return " ".join(unescape(_TAG.sub("", text)).split()).casefold()
