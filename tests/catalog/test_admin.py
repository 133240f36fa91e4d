import pytest
from django.urls import reverse


@pytest.mark.parametrize(
    "model", ["publisher", "template", "templateversion", "apitoken", "build", "tag"]
)
def test_staff_can_browse_every_catalog_model(admin_client, publish, model):
    publish(name="demo-embedder")
    assert admin_client.get(reverse(f"admin:templates_catalog_{model}_changelist")).status_code == 200


def test_a_version_cannot_be_edited_in_the_admin(admin_client, publish):
    version = publish(name="demo-embedder")
    url = reverse("admin:templates_catalog_templateversion_change", args=[version.pk])
    response = admin_client.post(url, {"yanked": "on"})
    version.refresh_from_db()
    assert response.status_code == 403 and version.yanked is False


def test_non_staff_are_sent_to_sign_in(client, db):
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
