"""The tokens page in a real browser: it fits a 390-pixel phone screen."""

import pytest

from templates_catalog.services import api_token_create

PASSWORD = "a long enough password 42"


@pytest.fixture
def member_with_tokens(publisher):
    # Written before `browser` starts its event loop, on the test's own connection.
    member = publisher.members.get()
    member.set_password(PASSWORD)
    member.save()
    for index in range(3):
        api_token_create(publisher=publisher, created_by=member, name=f"a rather long token name {index}",
                         template_names=["first-model", "second-model", "third-model"])
    return member


@pytest.mark.django_db(transaction=True)
def test_the_tokens_page_fits_a_390_pixel_screen(live_server, member_with_tokens, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server.url}/account/tokens/")
    page.locator("#id_username").fill(member_with_tokens.get_username())
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("table.tokens")

    assert page.locator("table.tokens tbody tr").count() == 3
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.get_by_role("link", name="Revoke").first.click()
    page.wait_for_selector("#confirm-revoke")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
