"""Run every bench in sequence and write every section of docs/benchmarks.md, so all figures
there come from one run on one machine.

    .venv/bin/python bench/run_all.py                         # full sizes, updates docs/benchmarks.md
    .venv/bin/python bench/run_all.py --smoke --doc /tmp/b.md # tiny sizes, only to check the scripts

Each bench runs as its own process (TensorFlow and OpenVINO never share one), one after the
other so they do not compete for the cores. A bench that fails keeps its old section; the
run-all section says so, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import DOC, Machine, write_section  # noqa: E402

SECTION = "run-all"
# (script, full-size arguments, smoke arguments). Full sizes: quick, but large enough that
# medians are stable on a shared 2-core VM.
BENCHES: List[Tuple[str, List[str], List[str]]] = [
    ("bench_edge.py", ["--n", "500", "--repeats", "3"], ["--n", "20", "--repeats", "1"]),
    ("bench_field.py", ["--fields", "40", "--reps", "3"], ["--fields", "2", "--reps", "1"]),
    ("bench_train.py", ["--n", "160", "--epochs", "3"], ["--n", "16", "--epochs", "2", "--arch", "paper"]),
    ("bench_fleet.py", ["--clients", "50", "100", "--per-client", "20"],
     ["--clients", "3", "--per-client", "2"]),
]


def stop_group(proc: subprocess.Popen) -> None:
    """End the bench's own process group (it was started in a new session)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run(cmd: List[str], timeout: float) -> str:
    """Run one bench in its own process group, so a timeout also ends the daemon or broker it
    started; returns "ok" or why not."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return f"FAILED (timed out after {timeout:.0f} s): section not updated"
    except KeyboardInterrupt:
        stop_group(proc)
        raise
    return "ok" if rc == 0 else f"FAILED (exit {rc}): section not updated, or it reports the failure"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=None, help=f"Markdown file to update (default {DOC})")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes to check the scripts run; needs an explicit --doc")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per bench")
    args = ap.parse_args()
    if args.smoke and args.doc is None:
        ap.error("--smoke figures are meaningless: give --doc so docs/benchmarks.md is not overwritten")
    doc = args.doc or DOC
    m = Machine(["openvino", "tensorflow", "opencv-python-headless", "numpy", "paho-mqtt"])
    t_start = time.monotonic()
    rows = []
    for script, full, smoke in BENCHES:
        cmd = [sys.executable, str(REPO / "bench" / script), *(smoke if args.smoke else full),
               "--write", "--doc", str(doc)]
        print(f"run_all: {script} {' '.join(smoke if args.smoke else full)}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        status = run(cmd, args.timeout)
        seconds = time.monotonic() - t0
        print(f"run_all: {script} {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
        rows.append((script, " ".join(smoke if args.smoke else full), seconds, status))
    total = time.monotonic() - t_start
    ok = all(st == "ok" for *_, st in rows)
    text = "\n".join([
        "## This run",
        "",
        ("SMOKE RUN (tiny sizes, figures meaningless). " if args.smoke else "")
        + f"The sections below were written by one run of `bench/run_all.py`, {total / 60:.1f} min in all"
        + ("." if ok else "; those marked FAILED here were not and keep older figures."),
        "",
        m.line(),
        "",
        "| bench | arguments | seconds | status |",
        "|---|---|---:|---|",
        *[f"| `{s}` | `{a}` | {sec:.0f} | {st} |" for s, a, sec, st in rows],
        "",
    ])
    write_section(SECTION, text, doc)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
