"""Resolving `requires` into a graph of concrete versions, before anything is deployed."""

import pytest

from templates_catalog.models import TemplateVersion
from templates_catalog.resolution import Edge, ResolutionRefused, graph_resolve
from templates_catalog.services import template_version_yank

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployer(user_factory):
    return user_factory("deployer")


@pytest.fixture
def atomic(publish):
    def make(name: str, version: str, **fields) -> TemplateVersion:
        return publish(name=name, version=version, tier="atomic", **fields)

    return make


@pytest.fixture
def composed(publish):
    def make(name: str, version: str, requires: list[tuple[str, str, str]], *, tier: str = "workflow", **fields) -> TemplateVersion:
        return publish(
            name=name, version=version, tier=tier,
            requires=[{"template": template, "version": version_range, "alias": alias} for template, version_range, alias in requires],
            **fields,
        )

    return make


def versions_of(graph) -> dict[str, str]:
    return {part.template: part.version for part in graph.parts}


def test_it_picks_the_newest_version_in_range(atomic, composed, deployer):
    for version in ("1.0.0", "1.4.0", "2.0.0"):
        atomic("embedder", version)
    rag = composed("rag", "1.0.0", [("embedder", ">=1.0.0,<2.0.0", "embeddings")])

    graph = graph_resolve(rag, user=deployer)

    assert versions_of(graph) == {"embedder": "1.4.0", "rag": "1.0.0"}
    assert graph.edges == (Edge(dependant="rag", requirement="embedder", alias="embeddings", version_range=">=1.0.0,<2.0.0"),)
    assert graph.part("embedder").digest == TemplateVersion.objects.get(template__name="embedder", version="1.4.0").bundle_sha256


def test_it_orders_parts_dependencies_first_and_locks_them(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    atomic("store", "1.0.0")
    composed("rag", "1.0.0", [("embedder", "*", "embeddings"), ("store", "*", "vector_store")])
    app = composed("agent", "1.0.0", [("rag", ">=1", "rag")], tier="app")

    graph = graph_resolve(app, user=deployer)

    names = [part.template for part in graph.parts]
    assert names[-1] == "agent" and names.index("rag") > max(names.index("embedder"), names.index("store"))
    lock = graph.as_lock()
    assert lock["root"] == "agent"
    assert {part["template"]: part["requires"] for part in lock["parts"]}["rag"] == {"embeddings": "embedder", "vector_store": "store"}
    assert all(len(part["digest"]) == 64 for part in lock["parts"])


def test_it_skips_pre_releases_unless_the_range_names_one(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    atomic("embedder", "1.1.0-rc.1")
    plain = composed("rag", "1.0.0", [("embedder", ">=1.0.0,<2.0.0", "embeddings")])
    eager = composed("rag-next", "1.0.0", [("embedder", ">=1.1.0-rc.1,<2.0.0", "embeddings")])

    assert versions_of(graph_resolve(plain, user=deployer))["embedder"] == "1.0.0"
    assert versions_of(graph_resolve(eager, user=deployer))["embedder"] == "1.1.0-rc.1"


def test_it_never_picks_a_yanked_version(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    newest = atomic("embedder", "1.1.0")
    rag = composed("rag", "1.0.0", [("embedder", "~=1.0", "embeddings")])
    template_version_yank(version=newest, reason="broken weights")

    assert versions_of(graph_resolve(rag, user=deployer))["embedder"] == "1.0.0"


def test_it_refuses_an_unsatisfiable_range_with_the_chain(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    composed("rag-pipeline", "1.0.0", [("embedder", "*", "embeddings")])
    second = composed("rag-pipeline", "2.0.0", [("embedder", "*", "embeddings")])
    app = composed("stock-research-agent", "1.0.0", [("rag-pipeline", ">=2", "rag")], tier="app")
    template_version_yank(version=second, reason="wrong answers")

    with pytest.raises(ResolutionRefused) as refused:
        graph_resolve(app, user=deployer)

    assert str(refused.value) == "stock-research-agent → rag-pipeline >=2 → none published; newest is 1.0.0"
    assert refused.value.chain == ("stock-research-agent", "rag-pipeline >=2")


def test_it_refuses_when_every_version_is_yanked(atomic, composed, deployer):
    only = atomic("embedder", "1.0.0")
    rag = composed("rag", "1.0.0", [("embedder", "*", "embeddings")])
    template_version_yank(version=only, reason="licence withdrawn")

    with pytest.raises(ResolutionRefused, match=r"^rag → embedder \* → every version of embedder is yanked$"):
        graph_resolve(rag, user=deployer)


def test_a_diamond_on_one_version_is_shared(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    atomic("embedder", "1.2.0")
    composed("rag", "1.0.0", [("embedder", ">=1.0.0", "embeddings")])
    app = composed("agent", "1.0.0", [("rag", "*", "rag"), ("embedder", "~=1.0", "embeddings")], tier="app")

    graph = graph_resolve(app, user=deployer)

    assert [part.template for part in graph.parts].count("embedder") == 1
    assert versions_of(graph)["embedder"] == "1.2.0"
    assert {(edge.dependant, edge.requirement) for edge in graph.edges} == {
        ("agent", "rag"), ("agent", "embedder"), ("rag", "embedder"),
    }


def test_a_diamond_resolves_again_to_the_one_version_every_range_accepts(atomic, composed, deployer):
    # The app alone would take 2.0.0; the pipeline under it needs 1.x: 1.5.0 serves both.
    atomic("embedder", "1.5.0")
    atomic("embedder", "2.0.0")
    composed("rag", "1.0.0", [("embedder", "<2.0.0", "embeddings")])
    app = composed("agent", "1.0.0", [("rag", "*", "rag"), ("embedder", ">=1.0.0", "embeddings")], tier="app")

    assert versions_of(graph_resolve(app, user=deployer))["embedder"] == "1.5.0"


def test_a_diamond_that_needs_two_versions_is_refused(atomic, composed, deployer):
    atomic("embedder", "1.0.0")
    atomic("embedder", "2.0.0")
    composed("rag", "1.0.0", [("embedder", "<2.0.0", "embeddings")])
    app = composed("agent", "1.0.0", [("rag", "*", "rag"), ("embedder", ">=2.0.0", "embeddings")], tier="app")

    with pytest.raises(ResolutionRefused) as refused:
        graph_resolve(app, user=deployer)

    message = str(refused.value)
    assert message.startswith("agent → ") and "two versions" in message
    assert "<2.0.0" in message and ">=2.0.0" in message


def test_a_cycle_is_refused_with_its_loop(atomic, composed, deployer):
    # Publishing refuses cycles (a template only requires lower tiers); a catalog written
    # before that rule, or by hand, must still never loop the resolver.
    atomic("embedder", "1.0.0")
    rag = composed("rag", "1.0.0", [("embedder", "*", "embeddings")])
    app = composed("agent", "1.0.0", [("rag", "*", "rag")], tier="app")
    looped = {**rag.manifest, "requires": [{"template": "agent", "version": "*", "alias": "agent"}]}
    TemplateVersion.objects.filter(pk=rag.pk).update(manifest=looped)
    app.refresh_from_db()

    with pytest.raises(ResolutionRefused, match=r"^agent → rag → agent \* → a cycle: agent → rag → agent$"):
        graph_resolve(app, user=deployer)


def test_a_private_requirement_of_another_publisher_is_not_resolved(atomic, composed, publish, other_publisher, user_factory):
    outsider = user_factory("outsider")
    hidden = publish(name="secret-store", version="1.0.0", tier="atomic", visibility="private", owner=other_publisher)
    composed_by_owner = publish(
        name="rag", version="1.0.0", tier="workflow", visibility="private", owner=other_publisher,
        requires=[{"template": "secret-store", "version": "*", "alias": "store"}],
    )
    member = other_publisher.memberships.get().user

    assert versions_of(graph_resolve(composed_by_owner, user=member)) == {"secret-store": "1.0.0", "rag": "1.0.0"}
    with pytest.raises(ResolutionRefused, match=r"^rag → secret-store \* → no template secret-store that you may deploy$"):
        graph_resolve(composed_by_owner, user=outsider)
    assert hidden.template.visibility == "private"


def test_it_reads_one_query_per_level(atomic, composed, deployer, django_assert_num_queries):
    for name in ("embedder", "store", "generator"):
        atomic(name, "1.0.0")
        atomic(name, "1.1.0")
    composed("rag", "1.0.0", [("embedder", "*", "embeddings"), ("store", "*", "vector_store"), ("generator", "*", "generator")])
    app = composed("agent", "1.0.0", [("rag", "*", "rag")], tier="app")
    app = TemplateVersion.objects.select_related("template").get(pk=app.pk)

    # The user's publishers, then one per level: rag, then its three requirements.
    with django_assert_num_queries(3):
        graph = graph_resolve(app, user=deployer)

    assert len(graph.parts) == 5
