"""What every bench records and how it lands in docs/benchmarks.md.

One place for the machine description (CPU model, cores, Python, package versions, load, date)
so figures from different benches are comparable, and one writer that replaces a marked section
<!-- NAME:begin --> ... <!-- NAME:end --> so each bench updates only its own part of the doc.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


class Machine:
    """A snapshot taken when a bench starts: the load average then is what the run competed with."""

    def __init__(self, packages: Sequence[str], extra: Optional[Dict[str, str]] = None) -> None:
        self.cpu = cpu_model()
        self.cores = os.cpu_count() or 0
        self.arch = platform.machine()
        self.python = platform.python_version()
        self.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        self.packages = {p: version(p) for p in packages}
        self.packages.update(extra or {})
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def line(self) -> str:
        pkgs = ", ".join(f"{k} {v}" for k, v in self.packages.items())
        return (f"Machine: {self.cpu}, {self.cores} cores, {self.arch}, Python {self.python}; "
                f"{pkgs}; load average {self.load} at the start (shared machine); "
                f"measured {self.started}.")


def add_write_args(ap: argparse.ArgumentParser) -> None:
    """The same --write / --doc flags on every bench."""
    ap.add_argument("--write", action="store_true", help="also replace this bench's section of --doc")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"Markdown file to update (default {DOC})")


def exit_on_sigterm() -> None:
    """SIGTERM (run_all's timeout) becomes SystemExit, so temporary folders, the daemon and the
    broker a bench started are cleaned up by its `finally` blocks."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def report(section: str, text: str, args: argparse.Namespace) -> None:
    """Print a bench's Markdown and, with --write, put it in its section of --doc."""
    print(text)
    if args.write:
        print(f"updated {write_section(section, text, args.doc)}")


def write_section(name: str, text: str, doc: Path = DOC) -> Path:
    """Replace <!-- name:begin --> ... <!-- name:end --> in doc with text (appended if absent).

    Written to a temporary file and renamed, so a crash never leaves a half-written doc.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    if begin in old and end in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, doc)
    return doc
