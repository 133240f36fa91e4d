"""The finetune-classifier template: its job runs as a real subprocess, then its service serves the result."""

import hashlib
import json
import os
import subprocess

import pytest

from templates_catalog.manifest import manifest_from_dir
from tests.harness.support import ROOT, template_python

pytestmark = pytest.mark.templates

TEMPLATE = ROOT / "fixtures" / "templates" / "finetune-classifier"
SHIPPED_DATASET = TEMPLATE / "data" / "topics.csv"
# What the shipped dataset (280 sentences, four topics) must reach on its 20% held-out split.
REQUIRED_ACCURACY = 0.90
UNSEEN_SENTENCES = {
    "The midfielder curled a free kick into the top corner.": "sports",
    "Fold the beaten egg whites into the batter.": "cooking",
    "A cold front will bring heavy showers overnight.": "weather",
    "The deployment failed because the container image was missing.": "computing",
}


def run_job(dataset, output_dir, **inputs) -> subprocess.CompletedProcess:
    command = manifest_from_dir(TEMPLATE).job.command
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "INPUT_DATASET": str(dataset),
        "OUTPUT_DIR": str(output_dir),
        **{f"INPUT_{name.upper()}": str(value) for name, value in inputs.items()},
    }
    # hub.yaml says `python -m train`: run it with the template environment's interpreter, in the template folder.
    return subprocess.run(
        [str(template_python()), *command[1:]], cwd=TEMPLATE, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("finetune-output")
    result = run_job(SHIPPED_DATASET, output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="module")
def metrics(job_output) -> dict:
    return json.loads((job_output / "metrics.json").read_text())


@pytest.fixture(scope="module")
def classifier(run_template, job_output):
    with run_template("finetune-classifier", env={"MODEL_PATH": str(job_output / "model" / "classifier.pt")}) as server:
        yield server


def test_it_writes_every_output_hub_yaml_declares(job_output):
    for output in manifest_from_dir(TEMPLATE).job.outputs:
        assert (job_output / output.path).is_file(), output.name


def test_it_reaches_the_required_accuracy_on_held_out_examples(metrics):
    assert metrics["accuracy"] >= REQUIRED_ACCURACY
    assert metrics["holdout_examples"] == 56 and metrics["train_examples"] == 224
    assert metrics["labels"] == ["computing", "cooking", "sports", "weather"]
    assert metrics["dataset_sha256"] == hashlib.sha256(SHIPPED_DATASET.read_bytes()).hexdigest()


def test_it_serves_the_checkpoint_the_job_wrote(classifier, job_output, metrics):
    status, card = classifier.get_json("/v1/model")
    assert status == 200
    assert (
        card["sha256"]
        == metrics["checkpoint_sha256"]
        == hashlib.sha256((job_output / "model" / "classifier.pt").read_bytes()).hexdigest()
    )


def test_it_classifies_sentences_it_never_saw(classifier):
    status, body = classifier.post_json("/v1/classify", {"input": list(UNSEEN_SENTENCES)})
    assert status == 200, body
    assert [item["label"] for item in body["data"]] == list(UNSEEN_SENTENCES.values())
    for item in body["data"]:
        assert item["score"] == max(item["scores"].values())
        assert sum(item["scores"].values()) == pytest.approx(1, abs=1e-4)


def test_it_classifies_one_text_through_predict(classifier):
    status, body = classifier.post_json("/predict", {"text": "Snow will fall on the hills tonight."})
    assert status == 200 and body["label"] == "weather"


@pytest.mark.parametrize(
    "payload", [{"input": []}, {"input": ["ok"] * 65}, {"input": ["x" * 2001]}, {"input": [""]}, {}]
)
def test_it_rejects_requests_out_of_bounds(classifier, payload):
    status, body = classifier.post_json("/v1/classify", payload)
    assert status == 400, body


def test_it_explains_a_dataset_without_a_label_column(tmp_path):
    dataset = tmp_path / "bad.csv"
    dataset.write_text("text,topic\nhello,greeting\n")
    result = run_job(dataset, tmp_path / "out")
    assert result.returncode == 2
    assert "needs a header row with `text` and `label` columns" in result.stderr


def test_it_explains_a_label_with_too_few_examples(tmp_path):
    dataset = tmp_path / "scarce.csv"
    rows = [f"sentence {i} about sport,sports" for i in range(10)] + ["a lone recipe,cooking"]
    dataset.write_text("text,label\n" + "\n".join(rows) + "\n")
    result = run_job(dataset, tmp_path / "out")
    assert result.returncode == 2
    assert "at least 5 examples" in result.stderr and "cooking" in result.stderr
