"""The command line: check-config errors (exit 2, no traceback), classify (JSON lines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

from tests.conftest import REPO_ROOT
from tests.edge.conftest import Env
from tests.util import cnmc_files, png_header_only


def edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_check_config_ok(env: Env) -> None:
    p = edge("check-config", "--config", str(env.write()))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("config OK: model ")


def test_check_config_reports_every_problem(env: Env, tmp_path: Path) -> None:
    p = edge("check-config", "--config", str(env.write()), "--set", "server.port=99999",
             "--set", "model.devices=[]", "--set", "storage.colour=1",
             "--set", "sources.folder.settle_seconds=\"soon\"")
    assert p.returncode == 2
    lines: List[str] = p.stderr.strip().splitlines()
    assert all(ln.startswith("config error: ") for ln in lines), p.stderr
    text = p.stderr
    assert "server.port: Input should be less than or equal to 65535 (got 99999)" in text
    assert "model.devices:" in text and "storage.colour: unknown key" in text
    assert "sources.folder.settle_seconds:" in text
    assert "Traceback" not in text


def test_check_config_missing_model_and_bad_json(tmp_path: Path) -> None:
    p = edge("check-config", "--set", f"model.xml={tmp_path}/none.xml")
    assert p.returncode == 2 and "model.xml: file not found" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{\"model\": ")
    p = edge("check-config", "--config", str(bad))
    assert p.returncode == 2 and "not valid JSON at line 1" in p.stderr
    assert "Traceback" not in p.stderr
    p = edge("run", "--config", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "cannot read config file" in p.stderr


def test_http_access_rules_are_config_errors_for_check_config_and_run(env: Env) -> None:
    """Found by check-config, and by run before the model compiles (exit 2, not 1)."""
    cfg = str(env.write())
    for args, fragment in ((["--set", "server.host=0.0.0.0"], "is not a loopback address"),
                           (["--set", "server.auth.username=bob"], "no password was found")):
        for command in ("check-config", "run"):
            p = edge(command, "--config", cfg, "--set", "server.enabled=true", *args)
            assert p.returncode == 2, (command, p.returncode, p.stderr)
            assert "config error: server" in p.stderr and fragment in p.stderr, p.stderr
            assert "Traceback" not in p.stderr and "compiled" not in p.stderr
    p = edge("check-config", "--config", cfg, "--set", "server.host=0.0.0.0", "--set", "server.enabled=false")
    assert p.returncode == 0, p.stderr


def test_check_config_invalid_model_json(tmp_path: Path, model_copy: Path) -> None:
    model_copy.with_suffix(".json").write_text("{\"name\": 1}")
    p = edge("check-config", "--set", f"model.xml={model_copy}")
    assert p.returncode == 2 and "invalid" in p.stderr and "Traceback" not in p.stderr


def test_classify_prints_one_json_per_line(env: Env, tmp_path: Path) -> None:
    files = [str(f) for f in cnmc_files()[:3]]
    p = edge("classify", "--config", str(env.write()), *files)
    assert p.returncode == 0, p.stderr
    results = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["name"] for r in results] == files
    assert all(r["status"] == "ok" and r["source"] == "cli" for r in results)
    assert all(r["positive"] == (r["probability"] >= r["threshold"]) for r in results)
    assert not (env.data / "journal.sqlite3").exists(), "classify must not journal"


def test_classify_follows_a_link_given_on_the_command_line(env: Env, tmp_path: Path) -> None:
    link = tmp_path / "latest.bmp"
    link.symlink_to(cnmc_files()[0])
    p = edge("classify", "--config", str(env.write()), str(link))
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["name"] == str(link)


def test_classify_exit_code_when_any_fails(env: Env, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))
    p = edge("classify", "--config", str(env.write()), str(cnmc_files()[0]), str(bomb),
             str(tmp_path / "missing.jpg"))
    assert p.returncode == 1
    results = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["status"] for r in results] == ["ok", "quarantined", "quarantined"]
    assert results[1]["reason"] == "too_many_pixels" and results[2]["reason"] == "not_found"
    assert "Traceback" not in p.stderr


def test_help_exits_zero() -> None:
    p = edge("--help")
    assert p.returncode == 0 and "classify" in p.stdout


def test_classify_non_utf8_file_name_is_valid_json(env: Env, tmp_path: Path) -> None:
    """A file name with undecodable bytes still gives one valid UTF-8 JSON line (U+FFFD)."""
    import os

    odd = os.fsencode(tmp_path) + b"/cell\xff.bmp"
    with open(odd, "wb") as f:
        f.write(cnmc_files()[0].read_bytes())
    p = subprocess.run([os.fsencode(sys.executable), b"-m", b"edge", b"classify", b"--config",
                        os.fsencode(env.write()), odd], cwd=REPO_ROOT, capture_output=True,
                       timeout=60, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    r = json.loads(p.stdout.decode("utf-8"))
    assert r["status"] == "ok" and r["name"].endswith("cell\ufffd.bmp")


def _dark_is_nan_ir(d: Path) -> Path:
    """A throwaway synthetic IR (test-only): softmax over sqrt(mean pixel - 0.5), so a dark
    image (a C-NMC cell on black) yields NaN and a white one a finite probability."""
    import numpy as np
    import openvino as ov
    import openvino.opset8 as ops

    d.mkdir()
    p = ops.parameter([1, 100, 100, 3], np.float32, name="input")
    pooled = ops.reduce_mean(p, np.array([1, 2], np.int64), keep_dims=False)
    root = ops.sqrt(ops.subtract(pooled, ops.constant(np.float32(0.5))))
    out = ops.softmax(ops.matmul(root, ops.constant(np.ones((3, 2), np.float32)), False, False), 1)
    ov.save_model(ov.Model([out], [p], "nan-test"), str(d / "model.xml"))
    meta = {"name": "nan-test", "version": "0", "created": "2026-11-22T00:00:00Z",
            "labels": ["normal", "ALL"], "positive_label": "ALL",
            "input": {"shape": [1, 100, 100, 3]}, "synthetic": True}
    (d / "model.json").write_text(json.dumps(meta))
    return d / "model.xml"


def test_classify_model_error_is_one_line_and_the_rest_go_on(env: Env, tmp_path: Path) -> None:
    """Non-finite model output for one file: one error line naming it, its JSON line says why,
    the next file is still classified, and the exit code is non-zero. No traceback."""
    import cv2
    import numpy as np

    env.settings["model"] = {"xml": str(_dark_is_nan_ir(tmp_path / "nan")), "devices": ["CPU"]}
    white = tmp_path / "white.png"
    cv2.imwrite(str(white), np.full((60, 60, 3), 255, np.uint8))
    cell = str(cnmc_files()[0])
    p = edge("classify", "--config", str(env.write()), cell, str(white))
    assert p.returncode == 1
    results = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["status"] for r in results] == ["quarantined", "ok"]
    assert results[0]["reason"] == "model_error" and "non-finite" in results[0]["detail"]
    errors = p.stderr.strip().splitlines()
    assert len(errors) == 1 and cell in errors[0] and "non-finite" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
