"""The text-generator template: trained by its own train.py, served through the harness."""

import hashlib
import json
import math
import shutil
import subprocess

import pytest

from runners.harness.testing import TemplateFailedToStart
from tests.harness.support import template_python
from tests.templates.agent_helpers import GENERATOR_DIR, server_sent_events, trained_generator

pytestmark = pytest.mark.templates

PROMPT = "CYNIC, n.  "


@pytest.fixture(scope="module")
def trained():
    return trained_generator()


@pytest.fixture(scope="module")
def generator(run_template, trained):
    with run_template("text-generator", env={"MODEL_PATH": str(trained.checkpoint)}) as server:
        yield server


def complete(server, **payload) -> dict:
    status, body = server.post_json("/v1/completions", payload)
    assert status == 200, body
    return body


def test_it_writes_a_content_addressed_checkpoint(trained):
    content = trained.checkpoint.read_bytes()
    assert trained.checkpoint.name == f"{hashlib.sha256(content).hexdigest()}.pt" == f"{trained.summary['sha256']}.pt"


def test_training_twice_gives_the_same_digest(tmp_path):
    """Seeded, step-counted training: the digest identifies the model, so a rebuild cannot drift."""
    digests = []
    for run in ("first", "second"):
        result = subprocess.run(
            [str(template_python()), "train.py", "--steps", "15", "--output-dir", str(tmp_path / run)],
            cwd=GENERATOR_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        digests.append(json.loads(result.stdout.splitlines()[-1])["sha256"])
    assert digests[0] == digests[1]
    assert [path.name for path in (tmp_path / "first").iterdir()] == [f"{digests[0]}.pt"]


def test_it_learns_the_corpus_far_better_than_chance(trained):
    # A model that learned nothing scores log2(alphabet size): about 6.4 bits per character here.
    alphabet_size = len(set((GENERATOR_DIR / "corpus" / "devils-dictionary.txt").read_text()))
    assert math.log2(alphabet_size) > 6
    assert trained.summary["validation_bits_per_char"] < 3.6


def test_it_completes_a_prompt_in_openai_shape(generator):
    body = complete(generator, prompt=PROMPT, max_tokens=40, temperature=0)
    choice = body["choices"][0]
    assert body["object"] == "text_completion"
    assert len(choice["text"]) == 40 and choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 40, "total_tokens": len(PROMPT) + 40}


def test_it_is_deterministic_at_temperature_zero_and_with_a_seed(generator):
    greedy = [complete(generator, prompt=PROMPT, max_tokens=30, temperature=0)["choices"][0]["text"] for _ in range(2)]
    seeded = [complete(generator, prompt=PROMPT, max_tokens=30, seed=5)["choices"][0]["text"] for _ in range(2)]
    assert greedy[0] == greedy[1] and seeded[0] == seeded[1]


def test_it_streams_characters_as_server_sent_events(generator):
    content_type, events = server_sent_events(
        f"{generator.url}/v1/completions", {"prompt": PROMPT, "max_tokens": 25, "temperature": 0, "stream": True}
    )
    assert content_type.startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    pieces = [chunk["choices"][0]["text"] for chunk in chunks]
    assert len(chunks) >= 20, "one event per character, not the whole text at once"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    # Streaming decodes exactly like the non-streamed path: the same greedy text.
    assert "".join(pieces) == complete(generator, prompt=PROMPT, max_tokens=25, temperature=0)["choices"][0]["text"]


def test_it_stops_before_a_stop_sequence(generator):
    text = complete(generator, prompt=PROMPT, max_tokens=60, temperature=0)["choices"][0]["text"]
    stop = text[20:23]
    stopped = complete(generator, prompt=PROMPT, max_tokens=60, temperature=0, stop=[stop])["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == text[: text.index(stop)]


def test_it_batches_concurrent_requests_with_their_own_settings(generator):
    status, body = generator.post_json("/predict", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0})
    assert status == 200
    assert (
        body["choices"][0]["text"]
        == complete(generator, prompt=PROMPT, max_tokens=12, temperature=0)["choices"][0]["text"]
    )


def test_it_answers_chat_completions_and_streams_them(generator):
    messages = [{"role": "system", "content": "Define words."}, {"role": "user", "content": "What is a cynic?"}]
    status, body = generator.post_json("/v1/chat/completions", {"messages": messages, "max_tokens": 20})
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert len(body["choices"][0]["message"]["content"]) == 20

    _, events = server_sent_events(
        f"{generator.url}/v1/chat/completions", {"messages": messages, "max_tokens": 10, "stream": True}
    )
    chunks = [json.loads(event) for event in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[0]["object"] == "chat.completion.chunk"
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) != ""


def test_it_describes_its_model(generator, trained):
    status, body = generator.get_json("/v1/models")
    assert status == 200
    assert body["data"][0]["sha256"] == trained.summary["sha256"]
    assert body["data"][0]["training"]["corpus"] == "devils-dictionary.txt"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"prompt": PROMPT, "max_tokens": 5000}, "max_tokens"),
        ({"prompt": PROMPT, "temperature": 9}, "temperature"),
        ({"prompt": "x" * 20_000}, "limit"),
        ({"prompt": PROMPT, "stop": ["a"] * 9}, "stop"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": PROMPT, "n": 3}, "n: 1"),
    ],
)
def test_it_rejects_requests_out_of_bounds(generator, payload, message):
    status, body = generator.post_json("/v1/completions", payload)
    assert status == 400
    assert message in body["error"]["message"]


def test_it_refuses_a_checkpoint_whose_content_does_not_match_its_name(run_template, trained, tmp_path):
    tampered = tmp_path / ("0" * 64 + ".pt")
    shutil.copyfile(trained.checkpoint, tampered)
    with pytest.raises(TemplateFailedToStart, match="refusing to load"):
        with run_template("text-generator", env={"MODEL_PATH": str(tampered)}, ready_timeout=60):
            pass


def test_it_will_not_start_without_a_model_path_or_a_built_checkpoint(run_template):
    with pytest.raises(TemplateFailedToStart, match="MODEL_PATH is not set and .*build-output holds no checkpoint"):
        with run_template("text-generator", env={"MODEL_PATH": ""}, ready_timeout=60):
            pass


def test_without_a_model_path_it_serves_the_checkpoint_its_build_trained(run_template, trained, tmp_path):
    # What the image build leaves behind: train.py's checkpoint in build-output/ beside the handler.
    built = shutil.copytree(GENERATOR_DIR, tmp_path / "text-generator")
    (built / "build-output").mkdir()
    shutil.copy2(trained.checkpoint, built / "build-output" / trained.checkpoint.name)
    with run_template(built, env={"MODEL_PATH": ""}, ready_timeout=120) as server:
        status, body = server.get_json("/v1/models")
    assert status == 200 and body["data"][0]["sha256"] == trained.summary["sha256"]


def test_the_build_trains_the_checkpoint_as_its_build_command_says():
    from templates_catalog.manifest import manifest_from_dir

    command = manifest_from_dir(GENERATOR_DIR).runtime.build_command
    assert command[:4] == ["python", "train.py", "--output-dir", "build-output"]
    assert 1 <= int(command[command.index("--steps") + 1]) <= 800
