"""Fleet load: >= 50 concurrent edge devices (own paho clients) publishing to one broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hias.fleet import run_fleet


@pytest.mark.slow
def test_fifty_devices_lose_nothing(broker, tmp_path: Path) -> None:
    report = run_fleet(broker, tmp_path, clients=50, per_client=20)
    print(f"\nfleet: {report['clients']} devices x {report['per_client']} results, "
          f"{report['unique']} received in {report['seconds']:.2f} s "
          f"= {report['msg_per_s']:.0f} msg/s end to end (figures: bench/bench_fleet.py)")
    assert report["sent"] == 1000
    assert report["lost"] == 0, report["lost_by_entity"]
    assert report["unique"] == 1000 and report["undelivered_rows"] == 0
    assert report["listener_errors"] == []
