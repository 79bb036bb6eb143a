"""Configuration: defaults work, every kind of mistake names its dotted path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.config import Config, ConfigError, load_config
from tests.conftest import REPO_ROOT


def test_confs_json_matches_embedded_defaults() -> None:
    raw = json.loads((REPO_ROOT / "confs.json").read_text())
    assert Config.model_validate(raw) == Config()


def test_required_keys_exist_with_documented_names() -> None:
    cfg = load_config(REPO_ROOT / "confs.json")
    assert cfg.model.devices == ["MYRIAD", "CPU"]
    assert cfg.model.xml == REPO_ROOT / "models/default/model.xml"
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    assert cfg.storage.data_dir == REPO_ROOT / "var/data"
    assert cfg.sources.folder.enabled and cfg.sources.folder.path == REPO_ROOT / "var/inbox"
    assert cfg.hias.enabled is False


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("server.port=70000", "server.port: Input should be less than or equal to 65535"),
        ("server.prot=8000", "server.prot: unknown key"),
        ("server.port=\"abc\"", "server.port: Input should be a valid integer"),
        ("hias.entity_type=Things", "hias.entity_type: Input should be 'Agents' or 'Devices'"),
        ("hias.zone=a/b", "hias.zone: Value error, must be a non-empty topic segment"),
        ("server.host=my host", "server.host: Value error, must be an IP address"),
        ("model.xml=/nonexistent/model.xml", "model.xml: file not found: /nonexistent/model.xml"),
        ("server=3", "server: Input should be an object"),
        ("server.port=\"8080\"", "server.port: Input should be a valid integer (got \"8080\")"),
        ("sources.folder.enabled=no", "sources.folder.enabled: Input should be a valid boolean"),
        ("storage.archive_images=0", "storage.archive_images: Input should be a valid boolean (got 0)"),
        ("model.threshold=\"0.7\"", "model.threshold: Input should be a valid number"),
        ("hias.protocol=4", "hias.protocol: Input should be '5' or '3.1.1'"),
        ("hias.reconnect_min_delay=90",
         "hias: Value error, reconnect_min_delay (90 s) must not exceed reconnect_max_delay (60 s)"),
    ],
)
def test_errors_name_the_path(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(REPO_ROOT / "confs.json", [override])
    assert any(fragment in p for p in exc.value.problems), exc.value.problems


def test_set_parses_json_else_string(tmp_path: Path) -> None:
    cfg = load_config(None, ["server.port=8099", "hias.enabled=false", "agent.name=lab 3",
                             "model.devices=[\"CPU\"]"])
    assert cfg.server.port == 8099 and cfg.agent.name == "lab 3" and cfg.model.devices == ["CPU"]
    assert load_config(None, ["hias.protocol=5"]).hias.protocol == "5"   # a JSON number
    assert load_config(None, ["hias.protocol=3.1.1"]).hias.protocol == "3.1.1"


def test_bad_json_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text('{"server": {"port": 80,}}')
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "not valid JSON at line 1" in str(exc.value)
    bad.write_bytes(b'\xff\xfe{"server": {}}')  # UTF-16 BOM from a Windows editor
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "not UTF-8 text" in str(exc.value)


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"storage": {"data_dir": "d"}}))
    cfg = load_config(cfg_file, check_files=False)
    assert cfg.storage.data_dir == tmp_path / "d"


def test_hias_enabled_needs_its_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["hias.enabled=true", f"hias.tls.ca_file={tmp_path}/none.pem"])
    assert any(p.startswith("hias.tls.ca_file: file not found") for p in exc.value.problems)


def test_wrong_types_in_the_file_are_errors_not_conversions(tmp_path: Path) -> None:
    raw = json.loads((REPO_ROOT / "confs.json").read_text())
    raw["server"]["port"] = "8080"
    raw["sources"]["folder"]["enabled"] = "no"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert sorted(p.split(":")[0] for p in exc.value.problems) == ["server.port", "sources.folder.enabled"]


@pytest.mark.parametrize("inbox, data, fragment", [
    ("d", "d", "must not be storage.data_dir or contain it"),
    ("d", "d/data", "must not be storage.data_dir or contain it"),
    ("d/archive/in", "d", "lies inside the daemon's own"),
])
def test_inbox_and_data_dir_must_not_overlap(tmp_path: Path, inbox: str, data: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(REPO_ROOT / "confs.json", [f"sources.folder.path={tmp_path / inbox}",
                                               f"storage.data_dir={tmp_path / data}"])
    assert any(fragment in p for p in exc.value.problems), exc.value.problems


def test_inbox_beside_the_daemons_folders_is_fine(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "confs.json", [f"sources.folder.path={tmp_path / 'd/inbox'}",
                                                 f"storage.data_dir={tmp_path / 'd'}"])
    assert cfg.sources.folder.path == tmp_path / "d/inbox"
    load_config(REPO_ROOT / "confs.json", ["sources.folder.enabled=false", f"sources.folder.path={tmp_path}",
                                           f"storage.data_dir={tmp_path}"])


def test_relative_paths_from_set_are_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO_ROOT / "confs.json", ["storage.data_dir=var/data"])
    assert cfg.storage.data_dir == tmp_path / "var/data"
    assert cfg.sources.folder.path == REPO_ROOT / "var/inbox"     # from the file: beside the file
