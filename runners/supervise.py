"""Run one command, record its pid and start time, wait for it, record its exit code.

    python -I runners/supervise.py RUN_DIR -- COMMAND [ARG ...]

The process runner starts this in a session of its own, so the run outlives whoever
launched it (a Celery worker) and its exit code is written down even when nobody that
launched it is left to wait. The command gets a session (and process group) of its own
too, so stopping it signals its whole group and never this supervisor. Standard library
only; its first line on stdout is `started PID` or `failed REASON`.

Files in RUN_DIR: `log` (the command's stdout and stderr), `pid` ("PID START SUPERVISOR_PID
SUPERVISOR_START", START being the kernel's start time, which tells a reused pid apart),
`exit` (the return code: negative for a signal).
"""

import os
import subprocess
import sys
from pathlib import Path

LOG, PID, EXIT = "log", "pid", "exit"


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may itself hold spaces and parentheses.
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def write_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def supervise(run_dir: Path, command: list[str]) -> int:
    with open(run_dir / LOG, "ab") as log:
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        except OSError as error:
            print(f"failed {error}", flush=True)
            return 1
    me = os.getpid()
    write_atomically(run_dir / PID, f"{child.pid} {process_stat(child.pid)[1]} {me} {process_stat(me)[1]}\n")
    print(f"started {child.pid}", flush=True)
    # Nobody reads stdout any more: a later write must not die of SIGPIPE.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    write_atomically(run_dir / EXIT, f"{child.wait()}\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: supervise.py RUN_DIR -- COMMAND [ARG ...]")
    sys.exit(supervise(Path(sys.argv[1]), sys.argv[3:]))
