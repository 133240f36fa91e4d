"""`.env.example` lists every setting the hub reads, and its values are accepted."""

import re
import secrets
import subprocess
import sys

from django.conf import settings

ENV_EXAMPLE = settings.BASE_DIR / ".env.example"
# env_str("NAME", ...), env_bool(...), ..., and os.environ.get("NAME") / os.getenv("NAME").
READ = re.compile(r"""(?:\benv_[a-z]+|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']""")
READERS = [
    settings.BASE_DIR / "hub_site" / "settings.py",
    # The publish command is a client: its HUB_URL and HUB_TOKEN may come from .env too.
    *sorted(settings.BASE_DIR.glob("*/management/commands/*.py")),
]


def names_read() -> set[str]:
    return {name for path in READERS for name in READ.findall(path.read_text())}


def names_listed() -> set[str]:
    # `NAME=value`, or `# NAME=value` for one that cannot live in the file itself (HUB_ENV_FILE).
    return set(re.findall(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_the_scan_finds_the_settings_it_should():
    read = names_read()
    assert {"DATABASE_URL", "SECRET_KEY", "BUILD_BASE_IMAGE", "HUB_ENV_FILE", "HUB_TOKEN", "HUB_URL"} <= read
    assert len(read) > 40


def test_every_setting_read_is_listed_in_env_example():
    missing = sorted(names_read() - names_listed())
    assert not missing, f"add these to .env.example with a comment saying what they do: {', '.join(missing)}"


def test_env_example_lists_nothing_the_hub_does_not_read():
    unknown = sorted(names_listed() - names_read())
    assert not unknown, f"remove these from .env.example or read them in the settings: {', '.join(unknown)}"


def test_a_copy_of_env_example_gives_valid_settings(tmp_path):
    # Paths point into the test's folder so nothing is created under /srv, and the secret is
    # a real one: the example's placeholder is refused on purpose (tests/test_env_settings.py).
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DEBUG, settings.DATABASES['default']['ENGINE'], settings.BUILD_BACKEND)"],
        env={
            "DJANGO_SETTINGS_MODULE": "hub_site.settings",
            "HUB_ENV_FILE": str(ENV_EXAMPLE),
            "HUB_VAR_DIR": str(tmp_path / "var"),
            "ARTIFACT_ROOT": str(tmp_path / "artifacts"),
            "WHEELHOUSE_DIR": str(tmp_path / "wheelhouse"),
            "DEB_CACHE_DIR": str(tmp_path / "debs"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "PATH": "/usr/bin:/bin",
        },
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "django.db.backends.postgresql", "auto"]
