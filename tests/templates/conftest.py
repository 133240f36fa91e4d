"""Start fixture templates through the serving harness, as real processes, for tests.

`run_template` (session-scoped factory) returns a context manager:

    def test_it_embeds(run_template):
        with run_template("minilm-embeddings", env={"INPUT_NORMALIZE": "true"}) as server:
            status, body = server.post_json("/v1/embeddings", {"input": "hello"})
            assert status == 200

- `name`: a folder under fixtures/templates/, or a Path to any template folder (with hub.yaml).
- `env`: extra environment for the process: deploy inputs (`INPUT_<NAME>`), required
  templates' URLs (`<ALIAS>_URL`), `DATA_DIR`, ... Offline flags (HF_HUB_OFFLINE=1) are set.
- `ready_timeout` (seconds, default 180), `extra_args` (harness CLI flags, e.g.
  `["--max-body-bytes", "1024"]`), `port` (default: a free one).
- Yields a `runners.harness.testing.RunningTemplate`: `.url`, `.get_json(path)`,
  `.post_json(path, payload, method="POST")`, `.delete(path)`, `.request(method, path, body, headers)`,
  `.output()` (the process's stdout+stderr so far), `.process`.
- Leaving the block sends SIGTERM (the handler's `close()` runs) and waits for the exit.
  Blocks nest, so a workflow test can run a template next to the ones it requires and pass
  their `.url` in as `<ALIAS>_URL`. Within a module, wrap it in a module-scoped fixture to
  start a model once.

The process runs in `var/template-env/bin/python` (override: `HUB_TEMPLATE_PYTHON`), made by
`python tests/template_env.py`. Without it the tests are skipped, except under `CI`, where
they fail.
"""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runners.harness.testing import RunningTemplate, serve_template
from tests.harness.support import ROOT, template_python

FIXTURE_TEMPLATES = ROOT / "fixtures" / "templates"


@pytest.fixture(scope="session")
def run_template(tmp_path_factory) -> Callable[..., contextlib.AbstractContextManager[RunningTemplate]]:
    python = template_python()
    logs = tmp_path_factory.mktemp("template-logs")

    @contextlib.contextmanager
    def run(name: str | Path, *, env: dict[str, str] | None = None, **options) -> Iterator[RunningTemplate]:
        folder = name if isinstance(name, Path) else FIXTURE_TEMPLATES / name
        log_path = Path(logs) / f"{folder.name}-{len(list(Path(logs).iterdir()))}.log"
        with serve_template(folder, python=python, env=env, log_path=log_path, **options) as server:
            try:
                yield server
            except BaseException:
                print(f"--- {folder.name} log ---\n{server.output()[-6000:]}")
                raise

    return run
