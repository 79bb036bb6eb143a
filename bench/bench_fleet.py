"""Fleet throughput: N simulated edge devices -> one local Mosquitto (TLS, password, QoS 1).

Each device is a real HiasComponent with its own paho client and SQLite journal (threads in
this process); a HIAS-style listener counts what arrives. Reports msg/s end to end (journal
commit -> PUBACK-marked outbox -> listener) and lost messages. Results are synthetic.

    .venv/bin/python bench/bench_fleet.py [--clients 50 100] [--per-client 20] [--write]

Exit status 1 if any message was lost (the section is still written: a loss is a result).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import Machine, add_write_args, exit_on_sigterm, report  # noqa: E402
from tests.hias.broker import MOSQUITTO, Broker, make_passwords, make_pki  # noqa: E402
from tests.hias.fleet import run_fleet  # noqa: E402

SECTION = "fleet"


def mosquitto_version() -> str:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].replace("mosquitto version ", "") if out else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--per-client", type=int, default=20)
    add_write_args(ap)
    args = ap.parse_args()
    exit_on_sigterm()
    m = Machine(["paho-mqtt", "psutil"], {"mosquitto": mosquitto_version()})
    rows = []
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
            rows.append(r)
            print(f"{n} devices: {r['msg_per_s']:.0f} msg/s, {r['lost']} lost", file=sys.stderr)
    text = "\n".join([
        "## Fleet (HIAS over MQTT)", "",
        "`bench/bench_fleet.py`: N simulated edge devices, each a real HiasComponent with its own "
        "paho client and SQLite journal (threads in one process), against one local Mosquitto "
        "(TLS 1.2, password auth, QoS 1); a HIAS-style listener counts what arrives. End to end: "
        "journal commit -> PUBACK-marked outbox -> broker -> listener. Results are synthetic. "
        "Fleet sizes run one after the other in the same run.", "",
        m.line(), "",
        "| devices | results sent | received (unique) | lost | seconds | msg/s |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['clients']} | {r['sent']} | {r['unique']} | {r['lost']} | {r['seconds']:.2f} | "
          f"{r['msg_per_s']:.0f} |" for r in rows],
        "",
    ])
    report(SECTION, text, args)
    return 1 if any(r["lost"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
