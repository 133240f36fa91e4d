"""Ranked search, sorting, tag facets and the messages for filter values the catalog
does not know. PostgreSQL-only cases (typos, the README) need pg_trgm and full-text
search: run this file with DATABASE_URL pointing at PostgreSQL too."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from templates_catalog.models import SearchWord, Template

LIST = reverse("catalog:template_list")
API = "/api/v1/templates/"
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="typo tolerance and README search are PostgreSQL features (pg_trgm, full text)"
)


def _names(response) -> list[str]:
    return [t.name for t in response.context["templates"]]


@pytest.fixture
def vectors(publish):
    """'vector' in a different field of each template, and once nowhere."""
    publish(name="in-summary", title="Nearest neighbours", summary="Stores vector data on disk.", tags=["storage"])
    publish(name="in-tags", title="Similarity index", summary="Finds close items.", tags=["vector"])
    publish(name="in-title", title="Vector database", summary="Finds close items.", tags=["storage"])
    publish(name="vector-store", title="Store", summary="Finds close items.", tags=["storage"])
    publish(name="unrelated", title="Speech to text", summary="Transcribes audio.", tags=["audio"])


def test_a_name_match_beats_title_beats_tags_beats_summary(client, vectors):
    response = client.get(f"{LIST}?q=vector")
    assert _names(response) == ["vector-store", "in-title", "in-tags", "in-summary"]


def test_a_template_comes_first_for_its_own_name(client, publish):
    # The other two mention "minilm" more often and in more places; the exact name still wins.
    publish(name="minilm-large", title="MiniLM large", summary="A larger minilm.", tags=["minilm"])
    publish(name="minilm", title="Embeddings", summary="Small and fast.", tags=["nlp"])
    publish(name="minilm-tuner", title="Fine-tunes MiniLM", summary="Trains minilm on your data.", tags=["minilm"])

    assert _names(client.get(f"{LIST}?q=minilm"))[0] == "minilm"
    assert _names(client.get(f"{LIST}?q=minilm-large"))[0] == "minilm-large"
    assert _names(client.get(f"{LIST}?q=MiniLM-Tuner"))[0] == "minilm-tuner"


def test_relevance_is_the_default_with_a_search_and_name_without(client, vectors):
    assert _names(client.get(f"{LIST}?q=vector&sort=relevance")) == _names(client.get(f"{LIST}?q=vector"))
    assert _names(client.get(LIST)) == ["in-summary", "in-tags", "in-title", "unrelated", "vector-store"]
    assert _names(client.get(f"{LIST}?sort=relevance")) == _names(client.get(LIST))


def test_it_sorts_a_search_by_name_or_newest(client, vectors):
    assert _names(client.get(f"{LIST}?q=vector&sort=name")) == ["in-summary", "in-tags", "in-title", "vector-store"]
    assert _names(client.get(f"{LIST}?q=vector&sort=newest")) == ["vector-store", "in-title", "in-tags", "in-summary"]
    assert _names(client.get(f"{LIST}?sort=newest"))[0] == "unrelated"


def test_ranked_results_are_paginated_in_rank_order(client, vectors, settings):
    settings.CATALOG_PAGE_SIZE = 3
    first = _names(client.get(f"{LIST}?q=vector"))
    second = _names(client.get(f"{LIST}?q=vector&page=2"))
    assert first + second == ["vector-store", "in-title", "in-tags", "in-summary"]


def test_every_word_still_has_to_match(client, vectors):
    assert _names(client.get(f"{LIST}?q=vector+audio")) == []
    assert _names(client.get(f"{LIST}?q=close+vector")) == ["vector-store", "in-title", "in-tags"]


@postgresql_only
@pytest.mark.parametrize(
    ("typo", "expected"),
    [("vectr", "vector-store"), ("embedings", "minilm-embeddings"), ("trnscribes", "unrelated"), ("databse", "in-title")],
)
def test_it_tolerates_typos_on_postgresql(client, vectors, publish, typo, expected):
    publish(name="minilm-embeddings", title="MiniLM", summary="Sentence encoder.", tags=["nlp"])
    assert _names(client.get(f"{LIST}?q={typo}"))[0] == expected


@postgresql_only
def test_a_typo_far_from_every_word_finds_nothing(client, vectors):
    assert _names(client.get(f"{LIST}?q=xylophone")) == []


@postgresql_only
def test_each_word_of_a_search_with_a_typo_must_still_match(client, vectors):
    assert _names(client.get(f"{LIST}?q=speach+transcribes")) == ["unrelated"]
    # Both words are close to words of the catalog, but no template has both.
    assert _names(client.get(f"{LIST}?q=speach+neighbours")) == []
    # One word close to nothing: nothing, not the templates of the other word.
    assert _names(client.get(f"{LIST}?q=vectr+xylophone")) == []


@postgresql_only
def test_a_typo_beside_an_operator_does_not_turn_an_excluded_word_into_a_required_one(client, vectors):
    # Spellings can't carry websearch operators, so such a query is taken as typed.
    assert _names(client.get(f"{LIST}?q=close+-storage")) == ["in-tags"]
    assert _names(client.get(f"{LIST}?q=clse+-storage")) == []


@postgresql_only
def test_a_typo_does_not_find_private_templates_of_others(client, vectors, publish, other_publisher):
    # The private template's words are in the vocabulary; its row must still stay hidden.
    publish(name="zebrafish-tracker", title="Zebrafish tracker", visibility="private", owner=other_publisher)
    assert SearchWord.objects.filter(word="zebrafish").exists()
    assert _names(client.get(f"{LIST}?q=zebrafsh")) == []
    assert client.get(f"{API}?q=zebrafsh").json()["results"] == []
    # Its owner finds it by the same typo.
    client.force_login(other_publisher.members.get())
    assert _names(client.get(f"{LIST}?q=zebrafsh")) == ["zebrafish-tracker"]


@postgresql_only
def test_publishing_adds_the_templates_words_to_the_typo_vocabulary(publish):
    publish(name="minilm-embeddings", title="MiniLM 2024", summary="Sentence encoder, v2.", tags=["nlp"])
    words = set(SearchWord.objects.values_list("word", flat=True))
    assert {"minilm", "embeddings", "sentence", "encoder", "nlp"} <= words
    # Numbers and words too short for trigrams are left out.
    assert not words & {"2024", "v2"}


@postgresql_only
def test_it_finds_words_of_the_readme_on_postgresql_below_the_summary(client, publish):
    publish(name="readme-only", title="Tool", summary="Does work.", tags=["misc"], readme="# Tool\n\nBuilt on quaternions.\n")
    publish(name="in-summary", title="Tool", summary="Rotations with quaternions.", tags=["misc"])
    assert _names(client.get(f"{LIST}?q=quaternion")) == ["in-summary", "readme-only"]


@postgresql_only
def test_a_new_version_refreshes_the_search_vector(client, publish):
    publish(name="shifting", title="Old words", summary="Nothing here.", tags=["misc"])
    assert _names(client.get(f"{LIST}?q=giraffe")) == []
    publish(name="shifting", version="1.1.0", title="Giraffe finder", summary="Nothing here.", tags=["misc"])
    assert _names(client.get(f"{LIST}?q=giraffe")) == ["shifting"]
    vector = Template.objects.values_list("search__vector", flat=True).get(name="shifting")
    assert "'giraff':" in vector and "'old'" not in vector


def test_tag_facets_count_the_current_results(client, vectors):
    facets = {tag.name: tag.count for tag in client.get(LIST).context["facets"]}
    assert facets == {"storage": 3, "vector": 1, "audio": 1}

    searched = {tag.name: tag.count for tag in client.get(f"{LIST}?q=close").context["facets"]}
    assert searched == {"storage": 2, "vector": 1}


def test_facet_links_keep_the_search_and_replace_the_tag(client, vectors):
    body = client.get(f"{LIST}?q=close&tag=vector&page=1").content.decode()
    assert 'href="?q=close&amp;tag=vector"' in body
    assert "tag=vector&amp;tag" not in body


def test_facets_do_not_show_tags_of_private_templates_of_others(client, vectors, publish, other_publisher):
    publish(name="secret", tags=["classified"], visibility="private", owner=other_publisher)
    assert "classified" not in {tag.name for tag in client.get(LIST).context["facets"]}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tier=bogus", "No tier called &#x27;bogus&#x27;: choose atomic, workflow or app."),
        ("kind=bogus", "No kind called &#x27;bogus&#x27;: choose service or job."),
        ("gpu=maybe", "GPU takes yes or no, not &#x27;maybe&#x27;."),
        ("sort=bogus", "No sort called &#x27;bogus&#x27;: choose relevance, name or newest."),
        ("tag=nonesuch", "No template is tagged &#x27;nonesuch&#x27;."),
    ],
)
def test_an_unknown_filter_value_says_what_to_choose(client, vectors, query, message):
    response = client.get(f"{LIST}?{query}")
    body = response.content.decode()
    assert response.status_code == 200
    assert message in body
    assert _names(response) == []
    assert "Nothing matches" not in body


def test_a_tag_only_private_templates_of_others_have_is_unknown(client, vectors, publish, other_publisher):
    publish(name="secret", tags=["classified"], visibility="private", owner=other_publisher)
    assert "No template is tagged &#x27;classified&#x27;." in client.get(f"{LIST}?tag=classified").content.decode()


def test_the_sort_control_keeps_the_chosen_sort(client, vectors):
    body = client.get(f"{LIST}?sort=newest").content.decode()
    assert '<option value="newest" selected>' in body
    assert '<option value="" selected>' in client.get(f"{LIST}?q=vector").content.decode()


@pytest.mark.parametrize(
    ("query", "field"),
    [("tier=bogus", "tier"), ("kind=bogus", "kind"), ("gpu=maybe", "gpu"), ("sort=bogus", "sort"), ("tag=nonesuch", "tag")],
)
def test_the_api_answers_an_unknown_filter_value_with_a_400_errors_list(client, vectors, query, field):
    response = client.get(f"{API}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert [error["field"] for error in body["errors"]] == [field]
    assert "bogus" in body["detail"] or "maybe" in body["detail"] or "nonesuch" in body["detail"]


def test_the_api_ranks_and_sorts_like_the_page(client, vectors):
    ranked = client.get(f"{API}?q=vector").json()["results"]
    assert [t["name"] for t in ranked] == ["vector-store", "in-title", "in-tags", "in-summary"]
    by_name = client.get(f"{API}?q=vector&sort=name").json()["results"]
    assert [t["name"] for t in by_name] == ["in-summary", "in-tags", "in-title", "vector-store"]


def test_a_search_of_only_spaces_is_the_whole_catalog(client, vectors):
    assert len(_names(client.get(f"{LIST}?q=+++"))) == 5


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    "url", [f"{LIST}?q=model", f"{LIST}?q=model&sort=newest", f"{LIST}?q=model&page=2", f"{LIST}?q=modle", f"{API}?q=model"]
)
def test_ranked_search_keeps_a_fixed_number_of_queries(client, publish, settings, url):
    settings.CATALOG_PAGE_SIZE = 2
    for index in range(3):
        publish(name=f"model-{index}", tags=["nlp", f"t{index}"])
    few = _queries(client, url)
    for index in range(3, 15):
        publish(name=f"model-{index}", tags=["nlp", f"t{index}"])
    assert _queries(client, url) == few


def test_a_ranked_search_page_reads_its_matches_once(client, vectors):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{LIST}?q=vector")
    assert _names(response) == ["vector-store", "in-title", "in-tags", "in-summary"]
    assert response.context["page"].paginator.count == 4
    if connection.vendor == "postgresql":
        # The vocabulary (typos), the ranked matches (which are the count and the page's
        # ids too), the page's cards, their tags, the facets: no count, no second ranking.
        assert len(queries) == 5
        statements = [query["sql"] for query in queries]
        assert not [sql for sql in statements if "COUNT(*)" in sql]
        assert len([sql for sql in statements if "ts_rank" in sql]) == 1
    else:
        # The count, the page's ids, the cards, their tags, the facets.
        assert len(queries) == 5


def test_the_api_reads_a_ranked_search_once_too(client, vectors):
    with CaptureQueriesContext(connection) as queries:
        body = client.get(f"{API}?q=vector").json()
    assert [t["name"] for t in body["results"]] == ["vector-store", "in-title", "in-tags", "in-summary"]
    assert (body["count"], body["count_capped"]) == (4, False)
    # PostgreSQL: the vocabulary, the ranked matches, the page's rows, their tags.
    # SQLite: the count, the page's rows, their tags.
    assert len(queries) == (4 if connection.vendor == "postgresql" else 3)


def test_facets_are_left_out_when_the_results_are_too_many_to_count_cheaply(client, vectors, monkeypatch):
    monkeypatch.setattr("templates_catalog.selectors.FACET_MAX_RESULTS", 3)
    assert client.get(f"{LIST}?q=close").context["facets"] != []
    assert client.get(LIST).context["facets"] == []


def test_a_count_past_the_cap_says_so_and_skips_the_facets(client, vectors, monkeypatch, settings):
    monkeypatch.setattr("templates_catalog.selectors.COUNT_CAP", 4)
    settings.CATALOG_PAGE_SIZE = 2
    capped = client.get(LIST)
    body = capped.content.decode()
    assert "4+ templates" in body and "Page 1 of 2+" in body
    assert capped.context["facets"] == []
    # At the cap exactly, the count is exact.
    exact = client.get(f"{LIST}?q=vector").content.decode()
    assert "4 templates" in exact and "4+" not in exact


@pytest.fixture
def few_candidates(monkeypatch, settings):
    """A catalog where a common word has more matches than a ranked search orders."""
    monkeypatch.setattr("templates_catalog.selectors.COUNT_CAP", 4)
    monkeypatch.setattr("templates_catalog.selectors.RANKED_CANDIDATES", 6)
    settings.CATALOG_PAGE_SIZE = 2


@postgresql_only
def test_a_ranked_search_past_its_candidates_still_puts_the_best_fields_first(client, publish, few_candidates):
    for index in range(6):
        publish(name=f"manual-{index}", title="Manual", summary="Plain text.", tags=["docs"], readme="# Manual\n\nUses a zeppelin.\n")
    publish(name="in-summary", title="Airship", summary="A zeppelin in brief.", tags=["docs"])
    publish(name="in-title", title="Zeppelin tools", summary="Plain text.", tags=["docs"])
    publish(name="zeppelin-kit", title="Kit", summary="Plain text.", tags=["docs"])

    response = client.get(f"{LIST}?q=zeppelin")
    assert _names(response) == ["zeppelin-kit", "in-title"]
    assert "4+ templates" in response.content.decode()
    # Then the summary match, before the README matches (only some of which were ranked).
    second = _names(client.get(f"{LIST}?q=zeppelin&page=2"))
    assert second[0] == "in-summary" and second[1].startswith("manual-")


@postgresql_only
def test_the_exact_name_is_first_even_when_its_tier_is_past_the_candidates(client, publish, few_candidates):
    for index in range(6):
        publish(name=f"zeppelin-{index}", title="Zeppelin", summary="Plain text.", tags=["docs"])
    publish(name="zeppelin", title="Zeppelin", summary="Plain text.", tags=["docs"])
    assert _names(client.get(f"{LIST}?q=zeppelin"))[0] == "zeppelin"


@postgresql_only
def test_ranked_candidates_are_taken_among_what_the_other_filters_keep(client, publish, few_candidates):
    for index in range(6):
        publish(name=f"zeppelin-{index}", title="Zeppelin", tags=["docs"])
    publish(name="airship-app", tier="app", title="Airship", summary="Plain text.", tags=["docs"], readme="# Airship\n\nFlies a zeppelin.\n")
    assert _names(client.get(f"{LIST}?q=zeppelin&tier=app")) == ["airship-app"]
    assert [t["name"] for t in client.get(f"{API}?q=zeppelin&tier=app").json()["results"]] == ["airship-app"]


@postgresql_only
def test_a_search_sorted_by_name_or_newest_sorts_every_match_not_only_the_ranked_ones(client, publish, few_candidates):
    for index in range(6):
        publish(name=f"zeppelin-{index}", title="Zeppelin", tags=["docs"])
    publish(name="airship", title="Airship", summary="Plain text.", tags=["docs"], readme="# Airship\n\nFlies a zeppelin.\n")
    assert _names(client.get(f"{LIST}?q=zeppelin&sort=name")) == ["airship", "zeppelin-0"]
    assert _names(client.get(f"{LIST}?q=zeppelin&sort=newest")) == ["airship", "zeppelin-5"]
    assert _names(client.get(f"{LIST}?q=zeppelin")) == ["zeppelin-0", "zeppelin-1"]


def test_the_api_count_stops_at_the_cap_and_says_so(client, vectors, monkeypatch):
    monkeypatch.setattr("templates_catalog.selectors.COUNT_CAP", 4)
    capped = client.get(API).json()
    assert (capped["count"], capped["count_capped"]) == (4, True)
    exact = client.get(f"{API}?q=vector").json()
    assert (exact["count"], exact["count_capped"]) == (4, False)
