"""Daemon configuration: one pydantic schema, unknown keys rejected, errors by dotted path.

Relative paths are resolved against the directory of the config file (or the repository root
for the embedded defaults), so `confs.json` at the repository root works from a fresh clone.
Secrets are never required inline: see `edge.secrets`.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SUBDIRS = ("processing", "archive", "quarantine", "thumbs", "annotated")  # under data_dir
DEFAULT_CONFIG = REPO_ROOT / "confs.json"
ISRG_ROOT_X1 = "/etc/ssl/certs/ISRG_Root_X1.pem"


class ConfigError(Exception):
    """Invalid configuration; `problems` are operator-readable `path: what (expected)` lines."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


AnalysisMode = Literal["whole-image", "cells"]


class AgentConfig(Section):
    name: str = Field("all-edge", min_length=1, max_length=64, description="shown on the page")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ModelConfig(Section):
    xml: Path = Field(Path("models/default/model.xml"), description="OpenVINO IR; model.json beside it")
    devices: List[str] = Field(default_factory=lambda: ["MYRIAD", "CPU"], min_length=1)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="overrides model.json")
    cpu_threads: int = Field(0, ge=0, le=64, description="0 = OpenVINO's default")

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, v: List[str]) -> List[str]:
        for d in v:
            if not d or not d.replace(".", "").replace("_", "").isalnum():
                raise ValueError(f"{d!r} is not an OpenVINO device name (e.g. MYRIAD, CPU, GPU)")
        return v


class FolderSourceConfig(Section):
    enabled: bool = True
    path: Path = Path("var/inbox")
    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds; polling fallback")
    settle_seconds: float = Field(1.0, ge=0, le=600, description="size must be stable this long")
    use_inotify: bool = True
    analysis: AnalysisMode = "whole-image"


class CameraSourceConfig(Section):
    enabled: bool = False
    backend: Literal["auto", "picamera2", "opencv"] = "auto"
    device: Union[int, str] = Field(0, description="OpenCV index, /dev/videoN, file or URL")
    width: int = Field(2592, ge=64, le=8192)
    height: int = Field(1944, ge=64, le=8192)
    interval_seconds: float = Field(0, ge=0, le=86400, description="0 = no timed capture")
    on_change: bool = False
    change_threshold: float = Field(0.1, gt=0, le=1, description="structure difference, 0..1")
    exposure_us: Optional[int] = Field(None, ge=1, le=10_000_000)
    awb: Optional[str] = Field(None, description="auto-white-balance mode, backend specific")
    analysis: AnalysisMode = "cells"

    @field_validator("device")
    @classmethod
    def _index(cls, v: Union[int, str]) -> Union[int, str]:
        """A digit string (`--set sources.camera.device=1`, or "1" in JSON) is camera 1, not a
        file named 1: `auto` and OpenCV choose by type."""
        if isinstance(v, str) and v.strip().isdigit():
            return int(v.strip())
        return v


class SourcesConfig(Section):
    folder: FolderSourceConfig = FolderSourceConfig()
    camera: CameraSourceConfig = CameraSourceConfig()


class AnalysisConfig(Section):
    """Cell detection parameters for `cells` mode (field-of-view analysis)."""

    min_cell_diameter_px: int = Field(20, ge=4, le=2000)
    max_cell_diameter_px: int = Field(400, ge=8, le=4000)
    crop_margin: float = Field(0.25, ge=0, le=2, description="extra context around a cell")
    max_cells: int = Field(500, ge=1, le=10000)

    @model_validator(mode="after")
    def _size_order(self) -> AnalysisConfig:
        if self.min_cell_diameter_px >= self.max_cell_diameter_px:
            raise ValueError(f"min_cell_diameter_px ({self.min_cell_diameter_px}) must be below "
                             f"max_cell_diameter_px ({self.max_cell_diameter_px})")
        return self


class AuthConfig(Section):
    username: Optional[str] = None
    password_file: Optional[Path] = None
    password_env: Optional[str] = "ALL_EDGE_API_PASSWORD"
    password_credential: Optional[str] = Field("api-password", description="systemd credential")
    token_file: Optional[Path] = None
    token_env: Optional[str] = "ALL_EDGE_API_TOKEN"
    token_credential: Optional[str] = "api-token"
    max_failed_logins: int = Field(10, ge=0, description="wrong credentials from one address before "
                                   "it is locked out (0 = never)")
    lockout_seconds: float = Field(300, gt=0, le=86400, description="the window those failures are "
                                   "counted in, and how long a lockout lasts")


class ServerConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    allow_unauthenticated_remote: bool = Field(
        False, description="bind a non-loopback address with no credentials (not recommended)"
    )
    threads: int = Field(4, ge=1, le=64)
    max_upload_mb: float = Field(25, gt=0, le=1024)
    max_pixels: int = Field(50_000_000, ge=10_000, le=1_000_000_000)
    auth: AuthConfig = AuthConfig()

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v != "localhost":
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError("must be an IP address or 'localhost'") from None
        return v

    @property
    def is_loopback(self) -> bool:
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback


class StorageConfig(Section):
    data_dir: Path = Path("var/data")
    archive_images: bool = True
    archive_max_days: int = Field(90, ge=0, le=36500, description="0 = keep no archived images")
    archive_max_gb: float = Field(8.0, ge=0, le=10000)
    quarantine_max_gb: float = Field(2.0, ge=0, le=10000, description="rejected inputs, oldest "
                                     "removed first (one may be up to 512 MB)")
    journal_max_rows: int = Field(2_000_000, ge=1000)
    journal_max_days: int = Field(3650, ge=1)
    journal_max_mb: float = Field(2048, ge=1, le=1_000_000, description="journal data size; oldest "
                                  "rows deleted beyond it")
    min_free_mb: int = Field(1024, ge=0, description="stop archiving below this free space")
    thumbnails: bool = True


class HiasTLSConfig(Section):
    enabled: bool = True
    ca_file: Path = Path(ISRG_ROOT_X1)
    certfile: Optional[Path] = None
    keyfile: Optional[Path] = None


class HiasConfig(Section):
    enabled: bool = False
    host: str = "localhost"
    port: int = Field(8883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version; '3.1.1' only for old brokers: there a broker that "
        "refuses a result (ACL) still acknowledges it, so the refusal is invisible")
    tls: HiasTLSConfig = HiasTLSConfig()
    username: Optional[str] = None
    password_file: Optional[Path] = None
    password_env: Optional[str] = "HIAS_PASSWORD"
    password_credential: Optional[str] = "hias-password"
    location: str = "Location"
    zone: str = "Zone"
    entity: str = "Entity"
    entity_type: Literal["Agents", "Devices"] = "Agents"
    model_name: str = "ALL Classifier"
    life_interval: float = Field(300, ge=5, le=86400)
    life_first_delay: float = Field(10, ge=0, le=3600)
    latitude: float = Field(0.0, ge=-90, le=90)
    longitude: float = Field(0.0, ge=-180, le=180)
    keepalive: int = Field(60, ge=5, le=3600)
    resend_rate: float = Field(50, gt=0, le=10000, description="backlog messages per second")
    reconnect_min_delay: float = Field(1, gt=0, le=600, description="seconds, doubles per failure")
    reconnect_max_delay: float = Field(60, gt=0, le=3600, description="seconds, backoff ceiling")

    @field_validator("location", "zone", "entity")
    @classmethod
    def _topic_segment(cls, v: str) -> str:
        if not v or any(c in v for c in "/+#") or v != v.strip():
            raise ValueError("must be a non-empty topic segment without '/', '+', '#'")
        return v

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        """`--set hias.protocol=5` arrives as the JSON number 5."""
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _backoff_order(self) -> HiasConfig:
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ValueError(f"reconnect_min_delay ({self.reconnect_min_delay:g} s) must not "
                             f"exceed reconnect_max_delay ({self.reconnect_max_delay:g} s)")
        return self


class Config(Section):
    agent: AgentConfig = AgentConfig()
    model: ModelConfig = ModelConfig()
    sources: SourcesConfig = SourcesConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    hias: HiasConfig = HiasConfig()


# --------------------------------------------------------------------------- loading


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """`--set a.b.c=VALUE`: VALUE is JSON when it parses as JSON, else a string."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError([f"--set {item!r}: expected KEY=VALUE with a dotted KEY"])
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError([f"--set {item!r}: {where} is not a section"])
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def _format_errors(exc: ValidationError) -> List[str]:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see confs.json for the known keys)"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) \
            else f" (got {json.dumps(got, default=str)[:80]})"
        lines.append(f"{path}: {msg}{shown}")
    return lines


PATH_KEYS = ("model.xml", "sources.folder.path", "storage.data_dir", "server.auth.password_file",
             "server.auth.token_file", "hias.tls.ca_file", "hias.tls.certfile", "hias.tls.keyfile",
             "hias.password_file")


def _resolve_paths(cfg: Config, base: Path, cwd_keys: Sequence[str] = ()) -> None:
    """Relative paths from the file are relative to the file; from `--set`, to the working
    directory (what a shell user means by `--set storage.data_dir=var`)."""
    for key in PATH_KEYS:
        *parents, name = key.split(".")
        section: BaseModel = cfg
        for part in parents:
            section = getattr(section, part)
        p = getattr(section, name)
        if p is not None and not Path(p).is_absolute():
            setattr(section, name, ((Path.cwd() if key in cwd_keys else base) / p).resolve())


def _overlap(cfg: Config) -> Optional[str]:
    """The folder source must never see the daemon's own files as inputs, nor hide its inbox
    inside them."""
    if not cfg.sources.folder.enabled:
        return None
    inbox, data = Path(cfg.sources.folder.path).resolve(), Path(cfg.storage.data_dir).resolve()
    if inbox == data or inbox in data.parents:
        return (f"sources.folder.path ({inbox}) must not be storage.data_dir or contain it: the "
                "daemon would take its own archive and journal as inputs; use a separate inbox")
    if data in inbox.parents:
        first = inbox.relative_to(data).parts[0]
        if first in DATA_SUBDIRS or first.startswith("journal.sqlite3"):
            return (f"sources.folder.path ({inbox}) lies inside the daemon's own {data / first}; "
                    "use a separate inbox")
    return None


def _check_files(cfg: Config) -> List[str]:
    """Files that must exist; directories the daemon creates itself are not checked here."""
    problems = []

    def need(path: Optional[Path], where: str, what: str) -> None:
        if path is not None and not Path(path).is_file():
            problems.append(f"{where}: file not found: {path} (expected {what})")

    need(cfg.model.xml, "model.xml", "an OpenVINO IR .xml with model.bin and model.json beside it")
    if cfg.model.xml.is_file():
        need(cfg.model.xml.with_suffix(".bin"), "model.xml", "model.bin beside model.xml")
        need(cfg.model.xml.with_suffix(".json"), "model.xml", "model.json beside model.xml")
    need(cfg.server.auth.password_file, "server.auth.password_file", "a file holding the password")
    need(cfg.server.auth.token_file, "server.auth.token_file", "a file holding the token")
    if cfg.hias.enabled:
        if cfg.hias.tls.enabled:
            need(cfg.hias.tls.ca_file, "hias.tls.ca_file", "the CA certificate of the HIAS broker")
            need(cfg.hias.tls.certfile, "hias.tls.certfile", "a client certificate")
            need(cfg.hias.tls.keyfile, "hias.tls.keyfile", "the client certificate's key")
        need(cfg.hias.password_file, "hias.password_file", "a file holding the MQTT password")
    if (cfg.hias.tls.certfile is None) != (cfg.hias.tls.keyfile is None):
        problems.append("hias.tls: certfile and keyfile must be given together")
    return problems


def load_config(
    path: Optional[Path] = None,
    overrides: Sequence[str] = (),
    *,
    check_files: bool = True,
) -> Config:
    """Read, override, validate. Raises ConfigError with every problem found."""
    if path is None:
        raw: Dict[str, Any] = {}
        base = REPO_ROOT
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                [f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a JSON object"])
        base = path.resolve().parent
    raw = apply_overrides(raw, overrides)
    try:
        # strict: "8080", "no" or 0 where a number or true/false belongs is a mistake, not a value
        cfg = Config.model_validate_json(json.dumps(raw), strict=True)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    set_keys = [item.partition("=")[0].strip() for item in overrides]
    _resolve_paths(cfg, base, [k for k in PATH_KEYS if k in set_keys])
    problems = _check_files(cfg) if check_files else []
    overlap = _overlap(cfg)
    if overlap:
        problems.append(overlap)
    if problems:
        raise ConfigError(problems)
    return cfg
