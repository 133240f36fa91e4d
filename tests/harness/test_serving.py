"""The harness as a real process: probes, limits, errors, metrics, batching, extra routes."""

import http.client
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from runners.harness.testing import stop, wait_until_ready
from runners.harness.threads import THREAD_COUNT_VARIABLES, usable_cpus

pytestmark = pytest.mark.templates


def test_ready_is_503_until_setup_returns(launch_fake, tmp_path):
    release = tmp_path / "release-setup"
    server = launch_fake("SlowSetup", env={"RELEASE_FILE": str(release)})
    try:
        _wait_for_health(server)
        assert server.get_json("/ready") == (503, {"ready": False, "reason": "setup() is still running"})
        assert server.post_json("/predict", {"x": 1})[0] == 503

        release.touch()
        wait_until_ready(server, timeout=30)
        assert server.get_json("/ready") == (200, {"ready": True})
        assert server.post_json("/predict", {"x": 1}) == (200, {"doubled": 2, "batch_size": 1})
    finally:
        stop(server)


def test_a_crashing_setup_exits_non_zero_with_its_reason(launch_fake):
    server = launch_fake("CrashingSetup")

    exit_code = server.process.wait(timeout=60)

    assert exit_code != 0
    assert "setup() failed: RuntimeError: model weights missing at /models/doubler.bin" in server.output()


def test_outputs_go_back_to_the_request_that_sent_them(serve_fake):
    with serve_fake("Doubler", max_batch_size=8, max_wait_ms=20) as server:
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda x: server.post_json("/predict", {"x": x}), range(40)))

    assert [body["doubled"] for _, body in results] == [x * 2 for x in range(40)]


def test_concurrent_requests_are_batched_up_to_the_maximum(serve_fake):
    with serve_fake("Doubler", max_batch_size=4, max_wait_ms=50, env={"SECONDS_PER_BATCH": "0.05"}) as server:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda x: server.post_json("/predict", {"x": x}), range(32)))
        metrics = server.get_json("/metrics")[1]

    sizes = [body["batch_size"] for _, body in results]
    assert max(sizes) > 1
    assert max(sizes) <= 4
    assert _metric(metrics, "hub_batch_size_sum") == 32
    assert _metric(metrics, "hub_batch_size_count") < 32


def test_a_request_of_many_items_is_split_over_batches(serve_fake):
    with serve_fake("Doubler", max_batch_size=4, max_wait_ms=5) as server:
        assert server.post_json("/double-many", {"xs": list(range(10))}) == (200, [x * 2 for x in range(10)])
        assert server.post_json("/double-many-sync", {"xs": [5, 6]}) == (200, [10, 12])
        metrics = server.get_json("/metrics")[1]

    assert _metric(metrics, 'hub_batch_size_bucket{le="4.0"}') == _metric(metrics, "hub_batch_size_count")


def test_one_bad_input_fails_alone(serve_fake):
    with serve_fake("Doubler", max_batch_size=8, max_wait_ms=100) as server:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda x: server.post_json("/predict", {"x": x}), [1, -1, 2]))

    assert results[0] == (200, {"doubled": 2, "batch_size": results[0][1]["batch_size"]})
    assert results[1][0] == 422 and results[1][1]["error"]["message"] == "-1 is negative"
    assert results[2][0] == 200


def test_oversized_bodies_get_413(serve_fake):
    with serve_fake("Doubler", extra_args=["--max-body-bytes", "1024"]) as server:
        status, body = server.post_json("/predict", {"x": 1, "padding": "x" * 2000})
        chunked_status = _post_chunked(server.url, "/predict", b'{"x": 1, "pad": "' + b"y" * 4000 + b'"}')
        small = server.post_json("/predict", {"x": 1})

    assert status == 413 and "limit is 1024" in body["error"]["message"]
    assert chunked_status == 413  # no Content-Length to trust: the harness counts the bytes
    assert small[0] == 200


def test_malformed_json_gets_400_with_a_reason(serve_fake):
    with serve_fake("Doubler") as server:
        broken = server.request("POST", "/predict", b'{"x": ', {"Content-Type": "application/json"})
        empty = server.request("POST", "/predict", b"")
        not_utf8 = server.request("POST", "/predict", b"\xff\xfe{")

    assert broken[0] == 400 and "not valid JSON" in json.loads(broken[1])["error"]["message"]
    assert empty[0] == 400 and "empty" in json.loads(empty[1])["error"]["message"]
    assert not_utf8[0] == 400


def test_handler_errors_map_to_statuses(serve_fake):
    with serve_fake("Doubler") as server:
        invalid = server.post_json("/predict", {"y": 1})
        teapot = server.get_json("/teapot")
        boom = server.get_json("/boom")
        upstream = server.get_json("/upstream")
        log = server.output()

    expected = {"error": {"message": 'send {"x": <number>}', "type": "invalid_request_error", "code": 422}}
    assert invalid == (422, expected)
    assert teapot[0] == 418 and teapot[1]["error"]["message"] == "I am a teapot"
    assert boom[0] == 500 and "secret" not in json.dumps(boom[1])
    assert "secret internal detail" in log  # the traceback goes to the log, not to the client
    # A 5xx raised on purpose (with a status_code) is meant for the caller, as documented.
    assert upstream == (502, {"error": {"message": "the embeddings service at EMBEDDINGS_URL did not answer", "type": "server_error", "code": 502}})


def test_a_predict_of_the_wrong_length_is_a_500(serve_fake):
    with serve_fake("WrongLength", max_batch_size=2) as server:
        status, body = server.post_json("/predict", {"x": 1})
        log = server.output()

    assert status == 500
    assert "predict() returned 0 outputs for a batch of 1 inputs" in log


def test_extra_routes_get_path_params_query_and_status(serve_fake):
    with serve_fake("Doubler") as server:
        assert server.get_json("/items/42?color=red") == (200, {"id": "42", "query": {"color": "red"}})
        assert server.post_json("/items", {"name": "pen"}) == (201, {"created": {"name": "pen"}})
        assert server.post_json("/items/42", {})[0] == 405


def test_generators_stream_as_server_sent_events(serve_fake):
    with serve_fake("Doubler") as server:
        parsed = urlsplit(server.url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        connection.request("GET", "/count?to=3")
        response = connection.getresponse()
        content_type, text = response.getheader("content-type"), response.read().decode()

    assert content_type.startswith("text/event-stream")
    assert text == 'data: {"n":0}\n\ndata: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'


def test_inputs_default_from_the_manifest_and_the_device_from_torch(serve_fake, monkeypatch):
    for name in ("OMP_WAIT_POLICY", *THREAD_COUNT_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    inputs = [{"name": "greeting", "label": "Greeting", "default": "hello"},
              {"name": "loud", "label": "Loud", "type": "boolean", "default": False}]
    with serve_fake("Doubler", inputs=inputs, env={"INPUT_LOUD": "true", "HUB_DEVICE": ""}) as server:
        status, body = server.get_json("/environment")

    assert (status, body) == (200, {"greeting": "hello", "loud": "true", "device": "cpu", "omp_wait_policy": "PASSIVE",
                                    "omp_num_threads": str(usable_cpus())})


def test_a_thread_setting_the_runner_passes_wins_over_the_harness_default(serve_fake):
    with serve_fake("Doubler", env={"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}) as server:
        status, body = server.get_json("/environment")

    assert status == 200 and (body["omp_wait_policy"], body["omp_num_threads"]) == ("ACTIVE", "7")


def test_answers_are_compact_utf8_json(serve_fake):
    with serve_fake("Doubler") as server:
        predicted = server.request("POST", "/predict", b'{"x": 1.5}', {"Content-Type": "application/json"})
        plain = server.request("GET", "/json/plain")
        numpy = server.request("GET", "/json/numpy")
        big_integer = server.request("GET", "/json/big-integer")

    assert predicted == (200, b'{"doubled":3.0,"batch_size":1}')
    assert plain == (200, '{"floats":[0.1,-0.0,0.00001,2.5e+20,0.06382855772972107],"text":"naïve ☃ \u2028",'
                          '"nested":{"ok":[true,null,3]},"7":"integer key"}'.encode())
    # float32 arrays in their shortest form: what the model computed, without float64 noise digits
    assert numpy == (200, b'{"vector":[0.1,-2.5,0.00001],"count":3,"score":0.5}')
    assert big_integer == (200, b'{"n":1180591620717411303424}')


def test_values_json_cannot_carry_become_null_or_a_500(serve_fake):
    with serve_fake("Doubler") as server:
        not_a_number = server.request("GET", "/json/not-a-number")
        unencodable = server.get_json("/json/unencodable")
        log = server.output()

    assert not_a_number == (200, b'{"nan":null,"inf":null}')
    assert unencodable == (500, {"error": {"message": "internal error: see the service's log",
                                           "type": "server_error", "code": 500}})
    assert "Object of type set is not JSON serializable" in log


def test_json_that_is_too_deep_or_not_standard_gets_400_not_500(serve_fake):
    with serve_fake("Doubler") as server:
        deep = server.request("POST", "/predict", b"[" * 100_000 + b"]" * 100_000)
        not_a_number = server.request("POST", "/predict", b'{"x": NaN}')
        lone_surrogate = server.request("POST", "/predict", b'{"x": 1, "note": "\\ud800"}')

    for status, raw in (deep, not_a_number, lone_surrogate):
        assert status == 400 and "not valid JSON" in json.loads(raw)["error"]["message"]


def test_metrics_count_requests_errors_and_latency(serve_fake):
    with serve_fake("Doubler") as server:
        for x in range(3):
            server.post_json("/predict", {"x": x})
        server.post_json("/predict", {"y": 0})
        status, text = server.get_json("/metrics")

    assert status == 200
    assert _metric(text, 'hub_requests_total{method="POST",route="/predict",status="200"}') == 3
    assert _metric(text, 'hub_request_errors_total{route="/predict",status="422"}') == 1
    assert _metric(text, 'hub_request_latency_seconds_count{route="/predict"}') == 4
    assert _metric(text, "hub_predict_latency_seconds_count") == 3
    assert _metric(text, "hub_ready") == 1


def _metric(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert match, f"{series} not in /metrics:\n{text}"
    return float(match.group(1))


def _wait_for_health(server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if server.get_json("/health", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"/health never answered:\n{server.output()}")


def _post_chunked(url: str, path: str, body: bytes) -> int:
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request("POST", path, body=iter([body[i:i + 512] for i in range(0, len(body), 512)]),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
        return connection.getresponse().status
    finally:
        connection.close()
