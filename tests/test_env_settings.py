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


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "hub_site.settings", "DEBUG": "0", "HUB_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr
