"""The installed daemon, started exactly as the unit starts it, reaches READY=1.

How the unit is played without systemd, and what that cannot cover: see unit_runner.py.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.deploy.staging import run_install, unit_values
from tests.deploy.unit_runner import start_like_unit, stop
from tests.util import free_port

pytestmark = pytest.mark.slow

TOKEN = "deploy-test-token-5f2c"


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path,
           source: Path) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("svc") / "root"
    run_install(root, src=source, wheelhouse=wheelhouse)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)  # the venv is ~500 MB


def http(url: str, data: Optional[bytes] = None, token: Optional[str] = None) -> int:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_daemon_started_like_the_unit_reaches_ready(staged: Path, tmp_path: Path,
                                                    cnmc_sample: Path) -> None:
    root = staged
    # The operator's edits: a free port, and an API token as a systemd credential.
    port = free_port()
    cfg_path = root / "etc/all-edge/confs.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["server"]["port"] = port
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (root / "etc/all-edge/credentials/api-token").write_text(TOKEN + "\n")

    proc, notify, log_path = start_like_unit(root, tmp_path)
    try:
        pid = notify.wait_for("READY", "1", time.monotonic() + 120, proc)
        assert pid is not None, f"no READY=1; daemon log:\n{log_path.read_text()[-4000:]}"
        assert pid == proc.pid, "READY=1 must come from the main process (NotifyAccess=main)"

        base = f"http://127.0.0.1:{port}"
        assert http(base + "/") == 200
        image = sorted((cnmc_sample).rglob("*.bmp"))[0].read_bytes()
        assert http(base + "/api/v1/classify", data=image) == 401  # the credential is enforced
        assert http(base + "/api/v1/classify", data=image, token=TOKEN) == 200

        # a real C-NMC cell dropped in the installed inbox is processed and archived
        inbox = Path(cfg["sources"]["folder"]["path"])
        shutil.copyfile(sorted(cnmc_sample.rglob("*.bmp"))[1], inbox / "cell.bmp")
        data_dir = Path(cfg["storage"]["data_dir"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((data_dir / "archive").rglob("*cell.bmp")):
            time.sleep(0.2)
        assert list((data_dir / "archive").rglob("*cell.bmp")), log_path.read_text()[-4000:]

        # `systemctl reload` runs the unit's ExecReload= with $MAINPID: the model is compiled again
        (reload_cmd,) = unit_values((root / "etc/systemd/system/all-edge.service").read_text(),
                                    "ExecReload")
        argv = [a.replace("$MAINPID", str(proc.pid)) for a in shlex.split(reload_cmd)]
        subprocess.run(argv, check=True, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "model reloaded" not in log_path.read_text():
            time.sleep(0.2)
        assert "model reloaded" in log_path.read_text()
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING", "1", time.monotonic() + 30, proc) == proc.pid
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc, notify)
    log_text = log_path.read_text()
    assert TOKEN not in log_text, "the daemon logged a secret"
    assert "Traceback" not in log_text
