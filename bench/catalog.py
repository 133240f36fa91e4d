"""Catalog latency with 10,000 (or, with --templates, 100,000) templates.

Fills a throw-away test database (created and dropped by Django's test machinery, on
whatever DATABASE_URL points at: SQLite by default, PostgreSQL in production) with
templates, versions, tags and requirement edges (in batches; PostgreSQL's search vectors
and typo vocabulary in one statement each), then requests the list, filter, ranked search
(typos too), sorted search and template pages through Django's full request stack and
prints p50/p99 latency and the number of SQL queries of each. Target: p99 under 50 ms.

    python bench/catalog.py [--templates 10000] [--requests 200] [--keep] [--profile URL]

With --keep the filled test database is kept, and the next --keep run with the same
--templates reuses it (migrating it first) instead of filling it again. With --profile,
--requests requests of URL are profiled instead (pyinstrument, from requirements-dev.txt):
where their Python time goes, then one request's SQL queries, each with its time and the
server's own (EXPLAIN ANALYZE), which a busy machine skews less than wall-clock percentiles.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
# Production settings: no DEBUG, and no test-environment instrumentation of template rendering.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production")
os.environ["ALLOWED_HOSTS"] = "testserver"

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from hub_site.celery import freeze_startup_objects  # noqa: E402
from templates_catalog.models import Publisher, Tag, Template, TemplateVersion, VersionRequirement  # noqa: E402
from templates_catalog.search import template_search_vector_refresh  # noqa: E402

WORDS = "vector embed rag llm vision speech audio finance legal medical search chat agent summarise translate".split()
TIERS = ["atomic", "workflow", "app"]
BATCH = 5000


def _readme(title: str, i: int) -> str:
    # About 700 characters, like a short real README: the search vector holds its start.
    words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 12))
    return f"# {title}\n\n" + "\n\n".join(f"Section {n}: {words} and some plain prose about usage." for n in range(8))


def fill(count: int) -> None:
    publisher = Publisher.objects.create(slug="bench", name="Bench")
    tags = Tag.objects.bulk_create([Tag(name=word) for word in WORDS])
    templates = Template.objects.bulk_create((
        Template(
            publisher=publisher,
            name=f"template-{i:05d}",
            tier=TIERS[i % 3],
            kind="job" if i % 7 == 0 else "service",
            title=f"{WORDS[i % len(WORDS)].title()} model {i}",
            summary=f"A {WORDS[(i * 7) % len(WORDS)]} template for {WORDS[(i * 3) % len(WORDS)]} work, number {i}.",
            visibility="private" if i % 10 == 0 else "public",
            needs_gpu=i % 4 == 0,
        )
        for i in range(count)
    ), batch_size=BATCH)
    versions = TemplateVersion.objects.bulk_create((
        TemplateVersion(
            template=template,
            version=f"1.{minor}.0",
            major=1,
            minor=minor,
            patch=0,
            manifest=_manifest(template, minor),
            bundle_sha256=f"{template.pk:032x}{minor:032x}",
            bundle_size=1234,
            bundle_path=f"bundles/{template.pk}-{minor}.tar.gz",
            readme=_readme(template.title, index) if minor == 2 else "",
            readme_html=f"<h1>{template.title}</h1>",
        )
        for index, template in enumerate(templates)
        for minor in range(3)
    ), batch_size=BATCH)
    latest = {version.template_id: version for version in versions if version.minor == 2}
    for index, template in enumerate(templates):
        template.latest_version = latest[template.pk]
        tag_names = [WORDS[index % len(WORDS)], WORDS[(index * 7) % len(WORDS)]]
        template.search_text = " ".join([template.name, template.title, template.summary, *tag_names]).lower()
    Template.objects.bulk_update(templates, ["latest_version", "search_text"], batch_size=1000)
    through = Template.tags.through
    through.objects.bulk_create(
        [through(template_id=t.pk, tag_id=tags[i % len(WORDS)].pk) for i, t in enumerate(templates)]
        + [through(template_id=t.pk, tag_id=tags[(i * 7) % len(WORDS)].pk) for i, t in enumerate(templates) if (i * 7) % len(WORDS) != i % len(WORDS)],
        batch_size=BATCH,
    )
    VersionRequirement.objects.bulk_create((
        VersionRequirement(version=latest[t.pk], template=templates[i - 1], version_range=">=1.0.0", alias="dep")
        for i, t in enumerate(templates)
        if t.tier != "atomic" and templates[i - 1].tier == "atomic"
    ), batch_size=BATCH)
    template_search_vector_refresh(templates=Template.objects.all())


def _manifest(template: Template, minor: int) -> dict:
    return {
        "schema": "hub/v1", "name": template.name, "version": f"1.{minor}.0", "tier": template.tier,
        "kind": template.kind, "title": template.title, "summary": template.summary, "license": "MIT",
        "runtime": {"python": "3.11", "packages": [], "system_packages": []},
        "resources": {"gpus": 1 if template.needs_gpu else 0, "gpu_memory_gb": "0", "cpu": "1", "memory_gb": "1"},
        "inputs": [], "requires": [],
    }


def measure(client: Client, urls: list[str], rounds: int) -> tuple[list[float], list[float], int]:
    """Each request's wall-clock and CPU time (of this process: Django, the templates and
    the driver, not the database server) in ms, and the most queries a request made."""
    timings = []
    cpu_times = []
    queries = 0
    for round_ in range(rounds):
        url = urls[round_ % len(urls)]
        with CaptureQueriesContext(connection) as captured:
            start, cpu_start = time.perf_counter(), time.process_time()
            response = client.get(url)
            timings.append((time.perf_counter() - start) * 1000)
            cpu_times.append((time.process_time() - cpu_start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = max(queries, len(captured))
    return timings, cpu_times, queries


def profile(client: Client, url: str, rounds: int) -> None:
    """Where `rounds` requests of `url` spend their Python time (process CPU time is
    steadier than wall-clock on a busy machine), then one request's queries."""
    from pyinstrument import Profiler

    measure(client, [url], 5)  # warm caches and connections
    profiler = Profiler(interval=0.0005)
    cpu = time.process_time()
    profiler.start()
    timings, _, _ = measure(client, [url], rounds)
    profiler.stop()
    cpu = (time.process_time() - cpu) * 1000 / rounds
    print(profiler.output_text(unicode=True, color=False, short_mode=True))
    print(profiler.output_text(unicode=True, color=False, flat=True)[:6000])
    print(f"{url}: {rounds} requests, p50 {statistics.median(timings):.1f} ms wall, {cpu:.1f} ms CPU of this process each")
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    for query in captured.captured_queries:
        print(f"{float(query['time']) * 1000:7.1f} ms  server {_server_ms(query['sql']):7.2f} ms  {query['sql'][:200]}")


def _server_ms(sql: str) -> float:
    """The query's planning and execution time on the server alone (no round trip, no driver)."""
    # EXPLAIN ANALYZE runs the statement again: only reads.
    if connection.vendor != "postgresql" or not sql.lstrip("(").upper().startswith("SELECT"):
        return float("nan")
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    plan = plan[0] if isinstance(plan, list) else plan
    return plan["Planning Time"] + plan["Execution Time"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the filled database, and reuse one kept before")
    parser.add_argument("--profile", metavar="URL", help="profile requests of URL instead of measuring every page")
    args = parser.parse_args()

    _use_own_database(keep=args.keep)
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False, keepdb=args.keep)
    try:
        start = time.perf_counter()
        _filled(args.templates)
        with connection.cursor() as cursor:
            # What autovacuum does after a bulk load: fresh planner statistics, and no dead
            # rows left by the UPDATEs that filled latest_version and the search vectors.
            cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
        print(f"database: {connection.vendor} ({test_db}); {args.templates} templates, "
              f"{TemplateVersion.objects.count()} versions ready in {time.perf_counter() - start:.1f} s")
        client = Client()
        freeze_startup_objects()  # as hub_site.asgi does when the server starts
        if args.profile:
            profile(client, args.profile, args.requests)
            return
        pages = {
            "list": [f"/templates/?page={page}" for page in (1, 2, 50, 200)],
            "filters": ["/templates/?tier=app&gpu=yes&tag=rag", "/templates/?kind=job&tier=atomic&page=20"],
            "ranked search": [
                "/templates/?q=vector", "/templates/?q=finance+agent", "/templates/?q=model+42",
                f"/templates/?q=template-{args.templates // 2 + 1:05d}", "/templates/?q=vector&page=30",
            ],
            "typo search": ["/templates/?q=vectr", "/templates/?q=finanse+agnet", "/templates/?q=spech"],
            "sorted search": ["/templates/?q=vector&sort=newest", "/templates/?q=legal&sort=name&page=10"],
            "template page": [f"/templates/template-{i:05d}/" for i in range(1, args.templates, max(1, args.templates // 50)) if i % 10],
        }
        for urls in pages.values():
            measure(client, urls, 5)  # warm caches and connections
        # cpu: this process's CPU time, steadier than wall-clock where other work shares the machine.
        # queries: the most any request of the row made.
        print(f"{'page':<15}{'p50 ms':>9}{'p99 ms':>9}{'cpu p50':>9}{'queries':>9}")
        worst = 0.0
        for name, urls in pages.items():
            timings, cpu_times, queries = measure(client, urls, args.requests)
            p99 = percentile(timings, 0.99)
            worst = max(worst, p99)
            print(f"{name:<15}{statistics.median(timings):>9.1f}{p99:>9.1f}{statistics.median(cpu_times):>9.1f}{queries:>9}")
        print(f"worst p99: {worst:.1f} ms (target < 50 ms): {'OK' if worst < 50 else 'OVER TARGET'}")
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0, keepdb=args.keep)


def _use_own_database(*, keep: bool) -> None:
    """A database of the bench's own: a test run beside it, or a bench run without --keep,
    never drops the one it is using or a kept one."""
    settings_dict = connection.settings_dict
    name = "bench" if keep else "bench_tmp"
    if connection.vendor == "postgresql":
        settings_dict["TEST"]["NAME"] = f"{name}_{settings_dict['NAME']}"
    else:
        settings_dict["TEST"]["NAME"] = str(Path(settings_dict["NAME"]).with_name(f"{name}.sqlite3"))


def _filled(count: int) -> None:
    """Fill the database, unless a kept one already holds exactly `count` templates."""
    present = Template.objects.count()
    if present == count:
        print(f"reusing the kept database's {count} templates")
        return
    if present:
        sys.exit(f"the kept database holds {present} templates, not {count}: run once without --keep to drop it")
    with transaction.atomic():  # an interrupted fill leaves nothing for the next run to trip on
        fill(count)


if __name__ == "__main__":
    main()
