import pytest

from templates_catalog.models import Template, TemplateVersion
from templates_catalog.services import template_version_yank

from ..factories import bundle_bytes
from .conftest import catalog_state


def test_it_publishes_a_new_version(upload, owner_token, tmp_path, artifact_root):
    raw = bundle_bytes(tmp_path, readme="# Demo\n\n<script>alert(1)</script>Safe text.")

    response = upload("demo-embedder", raw, owner_token)

    assert response.status_code == 201, response.content
    body = response.json()
    version = TemplateVersion.objects.get()
    assert body["version"] == "1.0.0"
    assert body["bundle_sha256"] == version.bundle_sha256
    assert (artifact_root / version.bundle_path).read_bytes() == raw
    assert "<script>" not in version.readme_html and "Safe text." in version.readme_html


def test_the_same_bytes_again_answer_200_and_change_nothing(upload, owner_token, tmp_path, artifact_root):
    raw = bundle_bytes(tmp_path)
    upload("demo-embedder", raw, owner_token)
    before = catalog_state(artifact_root)

    response = upload("demo-embedder", raw, owner_token)

    assert response.status_code == 200
    assert catalog_state(artifact_root) == before


def test_the_same_version_with_other_bytes_is_a_conflict(upload, owner_token, tmp_path, artifact_root):
    upload("demo-embedder", bundle_bytes(tmp_path, readme="# One"), owner_token)
    before = catalog_state(artifact_root)

    response = upload("demo-embedder", bundle_bytes(tmp_path, readme="# Two"), owner_token)

    assert response.status_code == 409
    assert "already published with other contents" in response.json()["detail"]
    assert "bump the version" in response.json()["detail"]
    assert catalog_state(artifact_root) == before


def test_the_manifest_name_must_match_the_url(upload, owner_token, tmp_path):
    response = upload("another-name", bundle_bytes(tmp_path), owner_token)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "hub.yaml name", "message": "is 'demo-embedder' but this upload is for 'another-name'"}
    ]


def test_manifest_errors_come_back_field_by_field(upload, owner_token, tmp_path):
    response = upload("demo-embedder", bundle_bytes(tmp_path, version="1.0", serve={"handler": "x", "port": 22}), owner_token)

    assert response.status_code == 400
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"hub.yaml version", "hub.yaml serve.handler", "hub.yaml serve.port"}


def test_requirements_must_resolve_to_a_published_unyanked_version(upload, owner_token, tmp_path, publish):
    rag = dict(name="rag", tier="workflow", requires=[{"template": "store", "version": ">=2.0.0", "alias": "store"}])
    missing = upload("rag", bundle_bytes(tmp_path, **rag), owner_token)
    publish(name="store", version="1.0.0")
    too_old = upload("rag", bundle_bytes(tmp_path, **rag), owner_token)
    template_version_yank(version=publish(name="store", version="2.0.0"), reason="broken")
    yanked = upload("rag", bundle_bytes(tmp_path, **rag), owner_token)
    publish(name="store", version="2.1.0")
    fine = upload("rag", bundle_bytes(tmp_path, **rag), owner_token)

    assert "no published template named 'store'" in missing.json()["detail"]
    assert "no published version of store matches '>=2.0.0' (available: 1.0.0)" in too_old.json()["detail"]
    assert "(available: 1.0.0)" in yanked.json()["detail"]
    assert fine.status_code == 201
    assert fine.json()["requires"] == [{"template": "store", "version_range": ">=2.0.0", "alias": "store", "env_var": "STORE_URL"}]


def test_a_requirement_must_be_of_a_lower_tier(upload, owner_token, tmp_path, publish):
    publish(name="other-flow", tier="workflow")
    response = upload(
        "rag", bundle_bytes(tmp_path, name="rag", tier="workflow", requires=[{"template": "other-flow", "alias": "flow"}]), owner_token
    )
    assert response.status_code == 400
    assert "may only require lower tiers" in response.json()["detail"]


def test_private_templates_of_others_cannot_be_required(upload, owner_token, tmp_path, publish, other_publisher):
    publish(name="hidden-store", owner=other_publisher, visibility="private")
    response = upload(
        "rag", bundle_bytes(tmp_path, name="rag", tier="workflow", requires=[{"template": "hidden-store", "alias": "s"}]), owner_token
    )
    assert response.status_code == 400
    assert "no published template named 'hidden-store'" in response.json()["detail"]


def test_a_version_cannot_change_the_tier(upload, owner_token, tmp_path):
    upload("demo-embedder", bundle_bytes(tmp_path), owner_token)
    response = upload("demo-embedder", bundle_bytes(tmp_path, version="1.1.0", tier="workflow"), owner_token)
    assert response.status_code == 400
    assert "is a atomic template; a version cannot change it" in response.json()["detail"]


def test_the_first_version_may_make_the_template_private(upload, owner_token, tmp_path, client):
    response = upload("demo-embedder", bundle_bytes(tmp_path), owner_token, visibility="private")

    assert response.status_code == 201
    assert Template.objects.get().visibility == "private"
    assert client.get("/api/v1/templates/demo-embedder/").status_code == 404


def test_other_content_types_are_refused_with_the_right_command(client, owner_token, tmp_path):
    response = client.post(
        "/api/v1/templates/demo-embedder/versions/",
        data={"bundle": "x"},
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    assert response.status_code == 415
    assert "--data-binary @bundle.tar.gz" in response.json()["detail"]


@pytest.mark.parametrize("reason", ["", "x" * 301])
def test_a_yank_needs_a_short_reason(client, owner_token, publish, reason):
    publish(name="demo-embedder")
    response = client.post(
        "/api/v1/templates/demo-embedder/versions/1.0.0/yank/",
        data={"reason": reason},
        content_type="application/json",
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    assert response.status_code == 400
    assert TemplateVersion.objects.get().yanked is False


def test_a_yank_stops_the_version_being_latest_and_keeps_it(client, owner_token, publish):
    publish(name="demo-embedder", version="1.0.0")
    publish(name="demo-embedder", version="1.1.0")

    response = client.post(
        "/api/v1/templates/demo-embedder/versions/1.1.0/yank/",
        data={"reason": "wrong weights"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {owner_token}"},
    )

    assert response.status_code == 200
    assert response.json()["yanked"] is True and response.json()["yanked_reason"] == "wrong weights"
    assert Template.objects.get().latest_version.version == "1.0.0"
    assert TemplateVersion.objects.count() == 2


def test_uploads_are_throttled_per_token(upload, owner_token, other_token, tmp_path, monkeypatch):
    from templates_catalog.api.throttling import UploadRateThrottle

    monkeypatch.setattr(UploadRateThrottle, "THROTTLE_RATES", {"uploads": "2/minute"})
    raw = bundle_bytes(tmp_path)

    statuses = [upload("demo-embedder", raw, owner_token).status_code for _ in range(3)]
    another_token = upload("demo-embedder", raw, other_token).status_code

    assert statuses == [201, 200, 429]
    assert another_token == 403  # not throttled: its own budget, then refused for not owning the name


@pytest.mark.parametrize(
    "reason",
    ["bad\rweights", "bad weights\r", "\x1b[31mred alert\x1b[0m", "line\u2028break", "next\x85line", "abc\u202eevil", "mark\u200fed"],
)
def test_a_yank_reason_must_be_one_line_as_a_person_reads_it(client, owner_token, publish, reason):
    publish(name="demo-embedder")
    response = client.post(
        "/api/v1/templates/demo-embedder/versions/1.0.0/yank/",
        data={"reason": reason},
        content_type="application/json",
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "reason", "message": "must be one line of text without control characters, line separators or bidirectional overrides"}
    ]
    assert TemplateVersion.objects.get().yanked is False


def test_the_yank_service_holds_the_same_one_line_rule(publish):
    from templates_catalog.services import PublishRejected

    version = publish(name="demo-embedder")
    with pytest.raises(PublishRejected, match="must be one line"):
        template_version_yank(version=version, reason="bad\rweights")
    version.refresh_from_db()
    assert version.yanked is False


def test_a_public_template_cannot_require_a_private_one(upload, owner_token, tmp_path, publish, artifact_root):
    publish(name="own-store", visibility="private")
    rag = dict(name="rag", tier="workflow", requires=[{"template": "own-store", "alias": "store"}])
    before = catalog_state(artifact_root)

    public = upload("rag", bundle_bytes(tmp_path, **rag), owner_token)

    assert public.status_code == 400
    assert public.json()["errors"] == [
        {
            "field": "hub.yaml requires.0.template",
            "message": "own-store is private and a public template may only require public ones; "
            "make own-store public or publish rag as private",
        }
    ]
    assert catalog_state(artifact_root) == before
    private = upload("rag", bundle_bytes(tmp_path, **rag), owner_token, visibility="private")
    assert private.status_code == 201, private.content


def test_another_publishers_private_template_looks_exactly_like_a_missing_one(upload, owner_token, tmp_path, publish, other_publisher):
    publish(name="hidden-store", owner=other_publisher, visibility="private")

    def refusal(required: str, visibility: str) -> list[dict]:
        rag = dict(name="rag", tier="workflow", requires=[{"template": required, "alias": "s"}])
        response = upload("rag", bundle_bytes(tmp_path, **rag), owner_token, visibility=visibility)
        assert response.status_code == 400
        return [{**e, "message": e["message"].replace(required, "NAME")} for e in response.json()["errors"]]

    for visibility in ("public", "private"):
        assert refusal("hidden-store", visibility) == refusal("never-published", visibility)
