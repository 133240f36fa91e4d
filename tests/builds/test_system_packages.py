"""runtime.system_packages: each name installs the package of exactly that name (apt
would read `zlib1g-de.+` as a pattern), and what one build resolves is capped."""

import json
import re

import pytest

from builders.debs import RESOLVER_VERSION, DebCache
from builders.errors import BuildFailed
from builders.store import key_of
from templates_catalog.builds import build_request, build_run

from .conftest import BASE_IMAGE

# Nine megabytes on its own, with every dependency already in the base image.
LARGE_PACKAGE = "libicu72"


def _resolve(cache: DebCache, packages: list[str], client) -> list:
    base_image_id = client.images.get(BASE_IMAGE).id
    return cache.resolve(packages, client=client, base_image=BASE_IMAGE, base_image_id=base_image_id, log=lambda line: None)


def _kept_files(root) -> list[str]:
    return sorted(path.name for path in (root / "files").rglob("*.deb")) if (root / "files").exists() else []


def test_a_name_that_apt_would_read_as_a_pattern_fails_and_downloads_nothing(docker_client, tmp_path):
    # Syntactically a Debian name, and as a pattern it matches zlib1g-dev and its friends.
    cache = DebCache(tmp_path)

    with pytest.raises(BuildFailed) as failure:
        _resolve(cache, ["zlib1g-de.+"], docker_client)

    assert str(failure.value).startswith("no Debian package named zlib1g-de.+ exists for the base image")
    assert _kept_files(tmp_path) == []


def test_a_real_name_with_plus_and_dots_installs_that_package_and_its_dependencies_only(docker_client, tmp_path):
    lock = _resolve(DebCache(tmp_path), ["libsigc++-2.0-0v5"], docker_client)

    assert [deb.filename.split("_")[0] for deb in lock] == ["libsigc++-2.0-0v5"]
    assert _kept_files(tmp_path) == [deb.filename for deb in lock]


def test_packages_over_the_cap_fail_with_the_figure_and_the_cap_before_downloading(docker_client, tmp_path):
    with pytest.raises(BuildFailed) as failure:
        _resolve(DebCache(tmp_path, max_megabytes=1), [LARGE_PACKAGE], docker_client)

    assert re.fullmatch(
        r"the system packages resolve to \d\.\d MB of Debian packages; this hub's limit is 1 MB "
        r"\(BUILD_SYSTEM_PACKAGES_MAX_MB\): ask for fewer packages in runtime.system_packages",
        str(failure.value),
    )
    assert _kept_files(tmp_path) == []


def test_a_build_over_the_cap_fails_with_the_figure_and_the_cap(db, docker_client, build_settings, echo_template, tmp_path):
    build_settings.BUILD_SYSTEM_PACKAGES_MAX_MB = 1
    build_settings.DEB_CACHE_DIR = tmp_path / "debs"

    build = build_run(build_id=build_request(version=echo_template(name="big-debs", runtime_system_packages=[LARGE_PACKAGE])).pk)

    assert build.status == "failed"
    assert re.match(r"the system packages resolve to \d\.\d MB of Debian packages; this hub's limit is 1 MB \(", build.error)
    assert not (tmp_path / "debs" / "files").exists()


def test_a_saved_lock_over_a_lowered_cap_is_refused_without_any_engine(tmp_path):
    cache = DebCache(tmp_path, max_megabytes=1)
    deb = tmp_path / "big_1.0_amd64.deb"
    deb.write_bytes(b"\0" * (2 * 1024 * 1024))
    sha256 = cache.store.keep(deb)
    key = key_of({"base_image": "sha256:base", "packages": ["big"], "resolver": RESOLVER_VERSION})
    cache.store.save_lock(key, [{"filename": "big_1.0_amd64.deb", "sha256": sha256}])

    with pytest.raises(BuildFailed, match=r"resolve to 2\.0 MB of Debian packages; this hub's limit is 1 MB"):
        cache.resolve(["big"], client=None, base_image="base", base_image_id="sha256:base", log=print)
    assert json.loads((tmp_path / "locks" / f"{key}.json").read_text())[0]["sha256"] == sha256


@pytest.mark.parametrize("name", ["jq;reboot", "-o=Dir::Etc=/tmp", "JQ", "jq jq", "?name(jq)", "j"])
def test_a_string_that_is_not_a_debian_name_never_reaches_apt(tmp_path, name):
    with pytest.raises(BuildFailed, match="is not a Debian package name"):
        DebCache(tmp_path).resolve([name], client=None, base_image="base", base_image_id="sha256:base", log=print)
