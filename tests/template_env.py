"""Create the Python environment the fixture templates' own tests run in.

The hub never imports torch or the models; the templates do. Their tests start each
template through the serving harness with this environment's interpreter, which has
every fixture's pinned `runtime.packages` and the harness's requirements installed.

    python tests/template_env.py [TARGET]      (default: var/template-env)
"""

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from templates_catalog.manifest import manifest_from_dir  # noqa: E402


def template_requirements() -> list[str]:
    pins: dict[str, str] = {}
    for folder in sorted((ROOT / "fixtures" / "templates").iterdir()):
        if (folder / "hub.yaml").is_file():
            for pin in manifest_from_dir(folder).runtime.packages:
                name = pin.split("==")[0].split("[")[0].lower()
                if name in pins and pins[name] != pin:
                    raise SystemExit(f"{folder.name} pins {pin} but another template pins {pins[name]}")
                pins[name] = pin
    harness = ROOT / "runners" / "harness" / "requirements.txt"
    extra = [line.strip() for line in harness.read_text().splitlines()] if harness.exists() else []
    return sorted(pins.values()) + [line for line in extra if line and not line.startswith("#")]


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "var" / "template-env"
    python = target / "bin" / "python"
    if not python.exists():
        venv.create(target, with_pip=True)
    requirements = template_requirements()
    stamp = target / "requirements.lock-input"
    if stamp.exists() and stamp.read_text() == "\n".join(requirements):
        return
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    stamp.write_text("\n".join(requirements))


if __name__ == "__main__":
    main()
