from django.core.management import call_command

from templates_catalog.models import Template, TemplateVersion, VersionRequirement


def _snapshot():
    return sorted(TemplateVersion.objects.values_list("template__name", "version", "bundle_sha256", "created_at"))


def test_it_publishes_the_six_fixtures_with_their_requirements(db, artifact_root):
    call_command("seed_catalog", stdout=open("/dev/null", "w"))

    assert set(Template.objects.values_list("name", "tier")) == {
        ("minilm-embeddings", "atomic"),
        ("vector-store", "atomic"),
        ("text-generator", "atomic"),
        ("rag-pipeline", "workflow"),
        ("finetune-classifier", "workflow"),
        ("stock-research-agent", "app"),
    }
    rag = Template.objects.get(name="rag-pipeline")
    assert set(rag.latest_version.requirements.values_list("template__name", "alias")) == {
        ("minilm-embeddings", "embeddings"),
        ("vector-store", "vector_store"),
        ("text-generator", "generator"),
    }
    stored = {path.name for path in artifact_root.rglob("*.tar.gz")}
    assert stored == {f"{sha}.tar.gz" for sha in TemplateVersion.objects.values_list("bundle_sha256", flat=True)}


def test_running_it_twice_changes_nothing(db, artifact_root):
    call_command("seed_catalog", stdout=open("/dev/null", "w"))
    before = (_snapshot(), VersionRequirement.objects.count(), sorted(p.name for p in artifact_root.rglob("*")))

    call_command("seed_catalog", stdout=open("/dev/null", "w"))

    after = (_snapshot(), VersionRequirement.objects.count(), sorted(p.name for p in artifact_root.rglob("*")))
    assert after == before
