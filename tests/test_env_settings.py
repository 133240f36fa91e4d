import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hub_site.env import env_bool, env_int, env_list, env_str


def test_it_reads_typed_values(monkeypatch):
    monkeypatch.setenv("HUB_FLAG", "yes")
    monkeypatch.setenv("HUB_COUNT", " 42 ")
    monkeypatch.setenv("HUB_HOSTS", "a.example, b.example,,")
    assert env_bool("HUB_FLAG", False) is True
    assert env_int("HUB_COUNT", 1) == 42
    assert env_list("HUB_HOSTS", []) == ["a.example", "b.example"]
    assert env_str("HUB_MISSING", "fallback") == "fallback"


@pytest.mark.parametrize(
    ("name", "value", "read", "message"),
    [
        ("HUB_FLAG", "maybe", lambda: env_bool("HUB_FLAG", False), "HUB_FLAG='maybe' is not a boolean"),
        ("HUB_COUNT", "ten", lambda: env_int("HUB_COUNT", 1), "HUB_COUNT='ten' is not a whole number"),
        ("HUB_COUNT", "0", lambda: env_int("HUB_COUNT", 1, minimum=1), "HUB_COUNT=0 is too small"),
    ],
)
def test_it_fails_fast_on_bad_values(monkeypatch, name, value, read, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        read()


def test_a_required_value_must_be_set(monkeypatch):
    monkeypatch.delenv("HUB_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="Set the environment variable HUB_REQUIRED"):
        env_str("HUB_REQUIRED")


def test_secrets_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("HUB_TOKEN_FILE", str(secret))
    assert env_str("HUB_TOKEN") == "s3cr3t"
    monkeypatch.setenv("HUB_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="HUB_TOKEN_FILE=.* cannot be read"):
        env_str("HUB_TOKEN")


def _setting_in_a_fresh_process(var_dir, name: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings; print(settings.{name})"],
        env={
            "DJANGO_SETTINGS_MODULE": "hub_site.settings",
            "HUB_VAR_DIR": str(var_dir),
            "HUB_ENV_FILE": str(var_dir / ".env"),
            "PATH": "/usr/bin:/bin",
            **extra,
        },
        capture_output=True,
        text=True,
    )


def test_without_a_secret_key_one_is_generated_once_and_kept_private(tmp_path):
    first = _setting_in_a_fresh_process(tmp_path, "SECRET_KEY")
    second = _setting_in_a_fresh_process(tmp_path, "SECRET_KEY")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50
    assert second.stdout.strip() == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_a_set_secret_key_wins_over_the_kept_one(tmp_path):
    _setting_in_a_fresh_process(tmp_path, "SECRET_KEY")
    result = _setting_in_a_fresh_process(tmp_path, "SECRET_KEY", SECRET_KEY="x" * 60)
    assert result.stdout.strip() == "x" * 60


def test_settings_read_a_dotenv_file_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("# production values\nCATALOG_PAGE_SIZE=7\n")
    assert _setting_in_a_fresh_process(tmp_path, "CATALOG_PAGE_SIZE").stdout.strip() == "7"
    overridden = _setting_in_a_fresh_process(tmp_path, "CATALOG_PAGE_SIZE", CATALOG_PAGE_SIZE="9")
    assert overridden.stdout.strip() == "9"


def test_the_gateway_url_endpoints_call_follows_the_port_make_run_serves_on(tmp_path):
    # `make run PORT=8010`: an app's parts must call the hub on 8010, not on the default 8000.
    assert _setting_in_a_fresh_process(tmp_path, "GATEWAY_INTERNAL_URL", PORT="8010").stdout.strip() == "http://127.0.0.1:8010"
    assert _setting_in_a_fresh_process(tmp_path, "GATEWAY_INTERNAL_URL").stdout.strip() == "http://127.0.0.1:8000"
    chosen = _setting_in_a_fresh_process(tmp_path, "GATEWAY_INTERNAL_URL", PORT="8010", GATEWAY_INTERNAL_URL="http://hub.lan:80")
    assert chosen.stdout.strip() == "http://hub.lan:80"


ROOT = Path(__file__).resolve().parents[1]


def _example_environment(tmp_path) -> dict[str, str]:
    """.env.example's values, with what differs on every machine: a real secret, and var/ here."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {
        **values,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "HUB_VAR_DIR": str(tmp_path / "var"),
        "ARTIFACT_ROOT": str(tmp_path / "var" / "artifacts"),
        "PATH": "/usr/bin:/bin",
        # Not the developer's own .env: only the example's values.
        "HUB_ENV_FILE": str(tmp_path / "no.env"),
    }


def _manage(arguments: list[str], env: dict[str, str]):
    return subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, capture_output=True, text=True)


def test_check_deploy_passes_without_a_warning_with_the_production_values_of_env_example(tmp_path):
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], _example_environment(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_once_https_is_left_off(tmp_path):
    # The test above must be able to fail: the same values without HSTS and the redirect.
    env = {**_example_environment(tmp_path), "SECURE_HSTS_SECONDS": "0", "SECURE_SSL_REDIRECT": "0"}

    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


def test_the_placeholder_secret_key_of_env_example_never_starts_a_production_hub(tmp_path):
    env = {**_example_environment(tmp_path), "SECRET_KEY": "change-me-to-a-long-random-string"}

    result = _manage(["check"], env)

    assert result.returncode != 0
    assert "SECRET_KEY is still the placeholder from .env.example" in result.stderr


def test_the_proxy_header_is_read_as_the_header_django_sees(tmp_path):
    env = {**_example_environment(tmp_path), "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}

    result = _manage(["shell", "--verbosity", "0", "-c", "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"], env)

    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')", result.stderr


POSTGRES_URL = "postgres://hub@127.0.0.1:5432/hub?options=-c%20statement_timeout%3D5000"


def test_postgresql_connections_start_no_parallel_workers_unless_told_to(tmp_path):
    options = "DATABASES['default'].get('OPTIONS', {}).get('options')"
    assert _setting_in_a_fresh_process(tmp_path, options, DATABASE_URL=POSTGRES_URL).stdout.strip() == (
        "-c max_parallel_workers_per_gather=0 -c statement_timeout=5000")  # the URL's own options are kept
    told = _setting_in_a_fresh_process(tmp_path, options, DATABASE_URL=POSTGRES_URL, DATABASE_PARALLEL_WORKERS="2")
    assert told.stdout.strip().startswith("-c max_parallel_workers_per_gather=2 ")
    assert _setting_in_a_fresh_process(tmp_path, options).stdout.strip() == "None"  # SQLite has no such option


@pytest.mark.django_db
def test_the_test_databases_connection_runs_with_the_setting():
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW max_parallel_workers_per_gather")
            assert cursor.fetchone() == ("0",)
        else:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone() == ("wal",)  # the embedded default's own connection options


def test_a_hub_id_that_cannot_be_a_label_is_refused_with_what_to_use(tmp_path):
    refused = _setting_in_a_fresh_process(tmp_path, "HUB_ID", HUB_ID="Prod Hub!")
    assert refused.returncode != 0 and "HUB_ID='Prod Hub!': use 1 to 40 lower-case letters" in refused.stderr
    assert _setting_in_a_fresh_process(tmp_path, "HUB_ID", HUB_ID="staging-2").stdout.strip() == "staging-2"


def test_the_hub_id_names_the_runs_of_this_hub_on_its_engines(settings):
    from deployments.models import Node
    from hub_site.backends import runner_for

    settings.HUB_ID = "staging-2"
    for kind in ("docker", "swarm", "kubernetes"):
        node = Node(name="n", runner=kind, engine_url="tcp://127.0.0.1:1", labels={"swarm_node_id": "abc123"})
        assert runner_for(node).hub_id == "staging-2", kind
