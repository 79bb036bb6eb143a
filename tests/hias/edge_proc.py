"""A simulated edge device in its own process, for kill -9 tests.

Usage: python -m tests.hias.edge_proc CONFIG.json
Prints `READY <state>` once started, then answers stdin lines: `record N` -> JSON list of the
journaled ids, `state` -> the component's state. Meant to be killed, not stopped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.config import Config
from tests.hias.edge_setup import Edge


def main() -> None:
    cfg = Config.model_validate_json(Path(sys.argv[1]).read_text())
    edge = Edge(cfg).start()
    want = sys.argv[2] if len(sys.argv) > 2 else "connected"
    edge.wait_state(want, timeout=20)
    print("READY", edge.hias.status()["state"], flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "record":
            print(json.dumps(edge.record(int(arg))), flush=True)
        elif cmd == "state":
            print(edge.hias.status()["state"], flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
