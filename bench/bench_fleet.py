"""Fleet throughput: N simulated edge devices -> one local Mosquitto (TLS, password, QoS 1).

Each device is a real HiasComponent with its own paho client and SQLite journal (threads in
this process); a HIAS-style listener counts what arrives. Reports msg/s end to end (journal
commit -> PUBACK-marked outbox -> listener) and lost messages. Results are synthetic.

    .venv/bin/python bench/bench_fleet.py [--clients 50 100] [--per-client 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hias.broker import MOSQUITTO, Broker, make_passwords, make_pki  # noqa: E402
from tests.hias.fleet import run_fleet  # noqa: E402


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


def mosquitto_version() -> str:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].replace("mosquitto version ", "") if out else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--per-client", type=int, default=20)
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
          f"Python {platform.python_version()}, paho-mqtt {version('paho-mqtt')}, "
          f"mosquitto {mosquitto_version()}, psutil {version('psutil')}")
    print("broker: local Mosquitto, TLS 1.2, password auth, QoS 1; results synthetic\n")
    print(f"{'devices':>8} {'results':>8} {'received':>9} {'lost':>5} {'seconds':>8} "
          f"{'msg/s':>8}")
    worst = 0
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        tmpdir = Path(tmp)
        pki = make_pki(tmpdir / "pki")
        passwords = make_passwords(tmpdir / "passwd")
        for n in args.clients:
            broker = Broker(tmpdir / f"broker-{n}", pki, passwords)
            broker.start()
            try:
                r = run_fleet(broker, tmpdir / f"fleet-{n}", clients=n,
                              per_client=args.per_client)
            finally:
                broker.stop()
            worst = max(worst, r["lost"])
            print(f"{n:>8} {r['sent']:>8} {r['unique']:>9} {r['lost']:>5} "
                  f"{r['seconds']:>8.2f} {r['msg_per_s']:>8.0f}")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
