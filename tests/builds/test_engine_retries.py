"""Transient engine errors (the engine restarting, a broken connection) are tried again
with backoff; a failure the template caused is not."""

import pytest
import requests
from docker.errors import APIError

from builders.backends import DockerBackend
from builders.errors import BuildFailed, HubFailure
from builders.retry import engine_retrying

from .conftest import BASE_IMAGE


class Flaky:
    """Fails `failures` times with `error`, then answers `value`."""

    def __init__(self, failures: int, error: Exception, value="done"):
        self.failures, self.error, self.value, self.calls = failures, error, value, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.value


def test_a_call_that_fails_twice_with_a_broken_connection_succeeds_the_third_time():
    flaky, slept, lines = Flaky(2, requests.exceptions.ConnectionError("Connection aborted")), [], []

    assert engine_retrying(flaky, action="building x", log=lines.append, sleep=slept.append) == "done"

    assert flaky.calls == 3 and slept == [1.0, 2.0]
    assert "trying again in 1 s" in lines[0]


def test_an_engine_that_stays_away_fails_the_build_as_the_hubs_fault():
    flaky = Flaky(99, requests.exceptions.ConnectionError("No such file or directory"))

    with pytest.raises(HubFailure, match="the Docker Engine did not answer after 4 attempts") as failure:
        engine_retrying(flaky, action="building x", log=lambda line: None, sleep=lambda seconds: None)

    assert flaky.calls == 4 and failure.value.failure_kind == "hub"


def test_a_restarting_engines_503_is_retried_but_its_verdict_is_not():
    restarting = Flaky(1, APIError("restarting", response=_response(503)))
    assert engine_retrying(restarting, action="x", log=lambda line: None, sleep=lambda s: None) == "done"

    refused = Flaky(1, APIError("OCI runtime create failed", response=_response(500)))
    with pytest.raises(APIError):
        engine_retrying(refused, action="x", log=lambda line: None, sleep=lambda s: None)
    assert refused.calls == 1


def test_the_docker_backend_retries_its_engine_calls():
    # Built without __init__: constructing a docker client asks a real engine for its API version.
    backend = object.__new__(DockerBackend)
    backend.retry_delays = (0, 0, 0)
    image = type("Image", (), {"id": "sha256:abc"})
    images = type("Images", (), {"get": staticmethod(Flaky(2, requests.exceptions.ConnectionError("Connection reset"), value=image))})
    backend.client = type("Client", (), {"images": images})

    assert backend.base_image_id("base") == "sha256:abc"
    assert images.get.calls == 3


def test_a_genuine_build_error_is_not_retried(docker_client, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN exit 3\n")
    backend = DockerBackend()
    calls = []
    real_build = backend.client.api.build
    backend.client.api.build = lambda **kwargs: calls.append(kwargs) or real_build(**kwargs)

    with pytest.raises(BuildFailed, match="a build step failed") as failure:
        backend._build(tmp_path, "aihub/test-retry:fails", {}, log=lambda line: None)

    assert len(calls) == 1 and failure.value.failure_kind == "template"


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response
