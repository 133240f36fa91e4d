"""Shared by the text-generator, RAG and stock-agent tests: a trained generator, and SSE reading.

The generator's checkpoint is trained for real by the template's own `train.py`, once: the
result is cached under var/test-cache/ keyed by the sha256 of everything that determines it
(the training code, the corpus and the step count), so a changed script retrains.
"""

import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness.support import ROOT, template_python

GENERATOR_DIR = ROOT / "fixtures" / "templates" / "text-generator"
TEST_TRAINING_STEPS = 200  # about 20 s on one core; the default 800 is for a deployable model
CACHE = ROOT / "var" / "test-cache" / "text-generator"


@dataclass(frozen=True)
class TrainedGenerator:
    checkpoint: Path
    summary: dict


@functools.cache
def trained_generator() -> TrainedGenerator:
    folder = CACHE / _training_key()
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        _train_into(folder)
    summary = json.loads(summary_path.read_text())
    return TrainedGenerator(Path(summary["path"]), summary)


def _training_key() -> str:
    digest = hashlib.sha256(f"steps={TEST_TRAINING_STEPS}".encode())
    for path in sorted([GENERATOR_DIR / "train.py", GENERATOR_DIR / "charlm.py", *GENERATOR_DIR.glob("corpus/*")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _train_into(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="training-", dir=folder.parent))
    result = subprocess.run(
        [str(template_python()), "train.py", "--output-dir", str(staging), "--steps", str(TEST_TRAINING_STEPS)],
        cwd=GENERATOR_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    summary["path"] = str(folder / Path(summary["path"]).name)
    (folder / "summary.json").write_text(json.dumps(summary))


def server_sent_events(url: str, payload: dict, timeout: float = 60) -> tuple[str, list[str]]:
    """POST `payload`, read the response as it streams; returns (content type, the `data:` values in order)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw_line in response:
            line = raw_line.decode().rstrip("\n")
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
        return response.headers.get("Content-Type", ""), events
