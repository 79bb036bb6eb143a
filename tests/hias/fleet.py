"""A fleet of simulated edge devices against one broker (used by test_fleet and bench_fleet).

Each device is a real HiasComponent with its own paho client, its own SQLite journal and its
own entity name, all in this process (threads). Results are synthetic; what is measured is
journal -> outbox -> MQTT (TLS, QoS 1) -> broker -> HIAS-style listener, end to end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from tests.hias.broker import Broker
from tests.hias.edge_setup import Edge, make_config
from tests.hias.listener import HiasListener


def run_fleet(broker: Broker, workdir: Path, clients: int = 50, per_client: int = 20,
              timeout: float = 120.0) -> Dict[str, Any]:
    """Start `clients` devices, each journals `per_client` results as fast as it can."""
    listener = HiasListener(broker, location="Fleet").start()
    edges: List[Edge] = []
    sent: Dict[str, List[str]] = {}
    try:
        for i in range(clients):
            cfg = make_config(broker, Path(workdir) / f"edge{i:03d}", location="Fleet",
                              entity=f"pi-{i:03d}", life_first_delay=3600)
            edges.append(Edge(cfg).start())
        end = time.monotonic() + timeout
        for e in edges:
            if not e.wait_state("connected", timeout=max(0.1, end - time.monotonic())):
                raise RuntimeError(f"{e.config.hias.entity} did not connect: "
                                   f"{e.hias.status()['last_error']}")
        total = clients * per_client
        start = threading.Barrier(clients + 1)

        def produce(e: Edge) -> None:
            start.wait(30)
            sent[e.config.hias.entity] = e.record(per_client)

        threads = [threading.Thread(target=produce, args=(e,)) for e in edges]
        for t in threads:
            t.start()
        start.wait(30)
        t0 = time.monotonic()
        for t in threads:
            t.join(max(0.1, end - time.monotonic()))
        listener.wait_for(lambda: len(listener.result_ids()) >= total,
                          max(0.1, end - time.monotonic()))
        seconds = time.monotonic() - t0
        listener.wait_for(lambda: all(e.depth() == 0 for e in edges), 10)
        received = listener.result_ids()
        lost = {ent: sorted(set(ids) - set(listener.result_ids(ent))) for ent, ids in sent.items()}
        return {
            "clients": clients, "per_client": per_client, "sent": sum(map(len, sent.values())),
            "received": len(received), "unique": len(set(received)),
            "lost": sum(map(len, lost.values())), "lost_by_entity": {k: v for k, v in
                                                                     lost.items() if v},
            "undelivered_rows": sum(e.depth() for e in edges),
            "seconds": seconds, "msg_per_s": len(set(received)) / seconds if seconds else 0.0,
            "listener_errors": list(listener.errors),
        }
    finally:
        for e in edges:
            e.close()
        listener.stop()
