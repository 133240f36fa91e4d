import subprocess
import sys

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
