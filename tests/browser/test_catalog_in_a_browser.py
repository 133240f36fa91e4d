"""The catalog in a real browser (Debian's Chromium driven by Playwright): htmx live
search, and the pages used with the keyboard alone."""

import re

import pytest


@pytest.fixture
def catalog(publish):
    # Requested before `browser` in each test: written while no Playwright event loop runs,
    # so these queries use the test's own connection.
    publish(name="minilm", title="MiniLM embeddings", summary="Sentence vectors for search.", tags=["nlp"], readme="# MiniLM")
    publish(name="vector-db", title="Vector database", summary="Nearest neighbours with filters.", tags=["vectors"])
    publish(name="stock-agent", tier="app", title="Stock research", summary="Ticker in, report out.", tags=["finance"])


@pytest.mark.django_db(transaction=True)
def test_typing_in_the_search_updates_the_results_in_place(live_server, catalog, browser):
    page = browser.new_page()
    page.goto(f"{live_server.url}/templates/")
    assert page.locator(".result-count").inner_text() == "3 templates"
    page.evaluate("window.loadedOnce = true")  # survives only if the page is not reloaded

    page.locator("#id_q").fill("")
    page.locator("#id_q").press_sequentially("database", delay=30)

    # A selector, not wait_for_function: the page's policy forbids the eval that a predicate needs.
    page.wait_for_selector(".result-count:text-is('1 template')")
    assert page.locator(".card-title").all_inner_texts() == ["Vector database"]
    assert page.evaluate("window.loadedOnce") is True  # htmx swapped the results, no navigation
    assert re.search(r"\?q=database", page.url)  # and the address can be shared


@pytest.mark.django_db(transaction=True)
def test_the_catalog_works_with_the_keyboard_alone(live_server, catalog, browser):
    page = browser.new_page()
    page.goto(f"{live_server.url}/")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Stock research":
            break
    else:
        pytest.fail("the template card link is not reachable with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r"/templates/stock-agent/$"))
    assert page.locator("h1").first.inner_text() == "Stock research"
    assert outline != "none"  # the focused link is visibly marked


@pytest.mark.django_db(transaction=True)
def test_no_page_breaks_the_content_security_policy(live_server, catalog, browser):
    page = browser.new_page()
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)

    for path in ["/", "/templates/", "/templates/minilm/", "/templates/minilm/versions/1.0.0/"]:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("load")
    page.goto(f"{live_server.url}/templates/")
    page.locator("#id_q").press_sequentially("database", delay=30)
    # A selector, not wait_for_function: the page's policy forbids the eval that a predicate needs.
    page.wait_for_selector(".result-count:text-is('1 template')")

    assert refused == []


@pytest.mark.django_db(transaction=True)
def test_swagger_ui_works_under_its_policy(live_server, db, browser):
    page = browser.new_page()
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)

    page.goto(f"{live_server.url}/api/docs/")

    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "AI Hub API" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock").count() > 0  # the operations came from /api/schema/
    assert refused == []
