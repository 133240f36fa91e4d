"""The version page: build status, the live log, the digests; publishers start builds."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from templates_catalog import builds
from templates_catalog.builds import build_request, builds_reap_stale
from templates_catalog.models import Build, Membership

from ..factories import bundle_bytes


@pytest.fixture
def version(publish):
    return publish(name="demo-embedder")


@pytest.fixture
def queued(monkeypatch):
    """Builds that would be sent to a worker, recorded instead (no broker in these tests)."""
    sent = []
    monkeypatch.setattr(builds, "_enqueue", sent.append)
    return sent


def page(version) -> str:
    return reverse("catalog:version_page", args=[version.template.name, version.version])


def test_a_member_starts_a_build_that_is_sent_after_commit(client, version, queued, django_capture_on_commit_callbacks):
    client.force_login(version.template.publisher.members.get())
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("catalog:version_build", args=["demo-embedder", "1.0.0"]))

    build = Build.objects.get()
    assert response.status_code == 302
    assert build.status == "queued" and build.version == version
    assert queued == [build.pk]


def test_pressing_build_twice_makes_one_build(client, version, queued, django_capture_on_commit_callbacks):
    client.force_login(version.template.publisher.members.get())
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("catalog:version_build", args=["demo-embedder", "1.0.0"]))
        client.post(reverse("catalog:version_build", args=["demo-embedder", "1.0.0"]))
    assert Build.objects.count() == 1 and len(queued) == 1


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_only_members_can_build(client, version, queued, other_publisher, who):
    if who == "outsider":
        client.force_login(other_publisher.members.get())
    response = client.post(reverse("catalog:version_build", args=["demo-embedder", "1.0.0"]))
    assert response.status_code in (302, 403) and not Build.objects.exists()
    if who == "outsider":
        assert response.status_code == 403
    assert "Build image" not in client.get(page(version)).content.decode()


def test_the_page_shows_a_running_build_live_and_a_finished_one_with_its_digests(client, version):
    build = Build.objects.create(
        version=version, backend="docker", base_image="hub-base:bookworm", status="running",
        log="Step 1/5 : FROM hub-base:bookworm\nStep 2/5 : RUN pip install <script>x</script>\n",
    )
    running = client.get(page(version)).content.decode()
    partial = client.get(reverse("catalog:version_build_status", args=["demo-embedder", "1.0.0"])).content.decode()

    assert 'hx-trigger="every 1s"' in running and "Step 2/5" in running
    assert "&lt;script&gt;x&lt;/script&gt;" in running  # the log is text, never markup
    assert "<html" not in partial and "Running" in partial

    Build.objects.filter(pk=build.pk).update(
        status="succeeded", image_reference="aihub/demo-embedder:abc", image_digest="sha256:" + "d" * 64, cache_key="c" * 64
    )
    done = client.get(page(version)).content.decode()
    assert "every 1s" not in done
    assert "sha256:" + "d" * 64 in done and f"sha256:{version.bundle_sha256}" in done


def test_a_failed_build_shows_its_reason_and_last_lines(client, version):
    Build.objects.create(
        version=version, backend="docker", base_image="b", status="failed",
        error="no wheel of six==0.0.999 exists for this Python and platform", log="resolving 1 pinned packages\n",
    )
    body = client.get(page(version)).content.decode()
    assert "no wheel of six==0.0.999 exists" in body and "resolving 1 pinned packages" in body


def test_publishing_can_prebuild(settings, publisher, tmp_path, queued, django_capture_on_commit_callbacks):
    import io

    from templates_catalog.services import template_version_publish

    settings.BUILD_ON_PUBLISH = True
    with django_capture_on_commit_callbacks(execute=True):
        version = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path))).version
    assert Build.objects.get().version == version and len(queued) == 1


def test_a_yanked_version_is_not_built(version, queued):
    from builders.errors import BuildFailed
    from templates_catalog.services import template_version_yank

    template_version_yank(version=version, reason="bad")
    version.refresh_from_db()
    with pytest.raises(BuildFailed, match="yanked"):
        build_request(version=version)


def test_stale_builds_are_failed_so_none_stays_running_forever(version, settings):
    settings.BUILD_TIMEOUT_SECONDS = 60
    stale = Build.objects.create(version=version, backend="docker", base_image="b", status="running")
    Build.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    fresh = Build.objects.create(version=version, backend="venv", base_image="b", status="queued")

    assert builds_reap_stale() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "failed" and "did not finish within 60 seconds" in stale.error
    assert fresh.status == "queued"


def test_a_build_interrupted_too_often_fails_instead_of_looping(version):
    build = Build.objects.create(version=version, backend="docker", base_image="b", status="running", attempts=3)
    finished = builds.build_run(build_id=build.pk)
    assert finished.status == "failed" and "interrupted 3 times" in finished.error


def test_members_see_builds_of_their_private_templates_and_others_get_404(client, publish, user_factory):
    private = publish(name="secret-model", visibility="private")
    assert client.get(page(private)).status_code == 404
    member = user_factory("member")
    Membership.objects.create(publisher=private.template.publisher, user=member)
    client.force_login(member)
    assert client.get(page(private)).status_code == 200
