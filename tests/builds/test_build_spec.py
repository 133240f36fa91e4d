"""What builders get from a manifest: typed values, the template's pins winning over the
harness's by canonical name, and the harness's configuration resolved into the image."""

from pathlib import Path

from builders.build import harness_pins_for, read_requirements
from builders.render import SERVE_CONFIG_FILE, build_context_render
from builders.spec import ServeSpec, TemplateSpec
from runners.harness.manifest import ServeConfig, read_serve_config

ROOT = Path(__file__).resolve().parents[2]
HARNESS_DIR = ROOT / "runners" / "harness"
HARNESS_PINS = read_requirements(HARNESS_DIR / "requirements.txt")
SERVE = ServeSpec(handler="handler:Echo", port=9000, health_path="/healthz", ready_path="/ready", max_batch_size=8, max_wait_ms=5)


def service(*packages: str) -> TemplateSpec:
    return TemplateSpec(kind="service", python="3.11", packages=packages, serve=SERVE, input_defaults={"top_k": 4})


def test_the_harness_spells_prometheus_client_with_a_hyphen():
    # The test below is only meaningful while the two spellings differ.
    assert any(pin.startswith("prometheus-client==") for pin in HARNESS_PINS)


def test_a_template_pin_replaces_the_harness_pin_whatever_its_spelling():
    pins = harness_pins_for(service("prometheus_client==0.20.0", "PyYAML==6.0.1", "Starlette[full]==0.40.0"), HARNESS_PINS)

    names = [pin.split("==")[0].lower() for pin in pins]
    assert "prometheus-client" not in names and "pyyaml" not in names and "starlette" not in names
    assert "uvicorn" in names and len(pins) == len(HARNESS_PINS) - 3


def test_a_job_that_serves_nothing_needs_no_harness():
    job = TemplateSpec(kind="job", python="3.11", job_command=("python", "train.py"))
    assert harness_pins_for(job, HARNESS_PINS) == []


def test_the_build_writes_the_resolved_serve_config_the_harness_reads(tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    (template / "hub.yaml").write_text("serve:\n  handler: other:Thing\n")  # never read in an image
    (template / SERVE_CONFIG_FILE).write_text("{}")  # a publisher's own file of that name is kept

    context = build_context_render(
        spec=service(), template_dir=template, lock=[], wheelhouse=None, harness_dir=HARNESS_DIR,
        base_image="hub-base:bookworm", base_image_id="sha256:" + "0" * 64, out=tmp_path / "out",
    )

    resolved = context.app_path / "harness" / SERVE_CONFIG_FILE
    config = read_serve_config(context.app_path / "template", resolved=resolved)
    assert config == ServeConfig(
        handler="handler:Echo", port=9000, health_path="/healthz", ready_path="/ready",
        max_batch_size=8, max_wait_ms=5, input_defaults={"top_k": 4},
    )
    assert (context.app_path / "template" / SERVE_CONFIG_FILE).read_text() == "{}"
    assert '"--port", "9000"' in (context.app_path / "Dockerfile").read_text()


def test_a_job_image_has_no_serve_config(tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    job = TemplateSpec(kind="job", python="3.11", job_command=("python", "train.py"))

    context = build_context_render(
        spec=job, template_dir=template, lock=[], wheelhouse=None, harness_dir=HARNESS_DIR,
        base_image="hub-base:bookworm", base_image_id="x", out=tmp_path / "out",
    )

    assert not (context.app_path / "harness" / SERVE_CONFIG_FILE).exists()
