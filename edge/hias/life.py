"""System figures for the Life heartbeat: CPU, Memory, Diskspace (percent), Temperature (°C).

A figure that cannot be read on this machine is 0.0 (HIAS runs `float()` on each: an empty
string or null would crash it); `temperature_source` says where the temperature came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import psutil

THERMAL_ROOT = Path("/sys/class/thermal")
# Raspberry Pi OS names the SoC sensor `cpu_thermal`; x86 boards use these.
_PREFERRED_SENSORS = ("cpu_thermal", "coretemp", "k10temp", "soc_thermal", "acpitz")


def _sysfs_temperature(root: Path = THERMAL_ROOT) -> Optional[Tuple[float, str]]:
    """First readable thermal zone, preferring `cpu_thermal` (millidegrees in sysfs)."""
    zones = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        zones.append((kind, milli / 1000.0))
    for want in _PREFERRED_SENSORS:
        for kind, celsius in zones:
            if kind == want:
                return celsius, f"sysfs:{kind}"
    return (zones[0][1], f"sysfs:{zones[0][0]}") if zones else None


def temperature(root: Path = THERMAL_ROOT) -> Tuple[float, str]:
    """(°C, source); (0.0, 'unavailable') on VMs and containers without sensors."""
    found = _sysfs_temperature(root)
    if found:
        return found
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        sensors = {}
    for want in _PREFERRED_SENSORS + tuple(sensors):
        for entry in sensors.get(want, []):
            if entry.current is not None:
                return float(entry.current), f"psutil:{want}"
    return 0.0, "unavailable"


class SystemStats:
    """Reads the figures; CPU is the average since the previous call (non-blocking)."""

    def __init__(self, disk_path: Path = Path("/"), thermal_root: Path = THERMAL_ROOT) -> None:
        self.disk_path = Path(disk_path)
        self.thermal_root = thermal_root
        psutil.cpu_percent(interval=None)  # primes the counter; the first reading is then real

    def read(self) -> Dict[str, object]:
        try:
            disk = psutil.disk_usage(str(self.disk_path)).percent
        except OSError:
            disk = 0.0
        celsius, source = temperature(self.thermal_root)
        return {
            "CPU": psutil.cpu_percent(interval=None),
            "Memory": psutil.virtual_memory().percent,
            "Diskspace": disk,
            "Temperature": celsius,
            "temperature_source": source,
        }
