"""Configuration: one TOML file, every key with a default, overridable from the environment.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or
``NHI_NAC_CONFIG``), then ``NHI_NAC_<SECTION>_<KEY>`` variables (top-level keys are
``NHI_NAC_<KEY>``; lists and tables are JSON). Every value is checked once here; an
invalid one raises :class:`ConfigError` naming the key, and start-up stops.

Only :mod:`nhi_nac.app` and the CLI entry point call :func:`load_config`; nothing else
reads files or the environment for settings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nhi_nac.errors import ConfigError

ENV_PREFIX = "NHI_NAC_"
#: Actions each finding type may take (an unmanaged MAC has no identity to suspend).
_ON_IDENTITY = ("notify", "suspend", "quarantine", "revoke")
GOVERNANCE_ACTIONS_FOR = {
    "orphaned": _ON_IDENTITY, "expired_active": _ON_IDENTITY,
    "stale_credential": _ON_IDENTITY, "sprawl": _ON_IDENTITY,
    "unused": _ON_IDENTITY, "unmanaged": ("notify",), "drift": _ON_IDENTITY,
    # Behavioural findings (AI agents): what a valid credential alone cannot show.
    "new_site": _ON_IDENTITY, "burst": _ON_IDENTITY, "fan_out": _ON_IDENTITY,
    "sequence": _ON_IDENTITY, "volume": _ON_IDENTITY, "off_hours": _ON_IDENTITY,
}
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
CONFIG_ENV = "NHI_NAC_CONFIG"
_TLS_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


@dataclass(frozen=True)
class RadiusConfig:
    listen: tuple[str, ...] = ("127.0.0.1", "::1")
    auth_port: int = 1812
    acct_port: int = 1813
    #: What to do when the database cannot be reached: "reject" or "drop"; never accept.
    on_backend_error: str = "reject"
    #: VLAN for an unknown MAC while no segment map is applied; 0 = reject.
    fallback_vlan: int = 0
    #: UDP port of the NAS's Dynamic Authorization Server (RFC 5176).
    coa_port: int = 3799
    #: Push changes to live sessions with Disconnect/CoA (RFC 5176).
    coa_enabled: bool = True


#: API processes at most (``api.workers``).
MAX_API_WORKERS = 64


@dataclass(frozen=True)
class ApiConfig:
    listen: str = "127.0.0.1:8080"
    #: Largest request body accepted, in bytes.
    max_body: int = 1_048_576
    #: HTTP API processes on ``listen`` (SO_REUSEPORT); the extra ones serve only the API
    #: (enrollment storms). More than one needs PostgreSQL.
    workers: int = 1
    #: Public base URL used in certificates (CRL and OCSP locations); empty =
    #: http(s)://<listen>.
    public_url: str = ""
    #: HTTPS with a certificate the service issues itself from its own CA (profile
    #: api-server), naming these DNS names and IP addresses; re-issued when due.
    tls_names: tuple[str, ...] = ()
    #: HTTPS with a certificate of your own (PEM: the certificate, then its chain) and key.
    tls_cert: str = ""
    tls_key: str = ""
    #: Plain HTTP on an address other than loopback (behind a TLS-terminating proxy).
    allow_plain_http: bool = False


@dataclass(frozen=True)
class CaConfig:
    trust_domain: str = "nhi.example"
    key_type: str = "p256"
    #: Where the intermediate key passphrase comes from: "file:PATH", "env:VAR",
    #: "credential:NAME" (systemd LoadCredential), or "" for a file generated in data_dir.
    passphrase: str = ""


@dataclass(frozen=True)
class MqttConfig:
    url: str = ""
    site: str = "default"


@dataclass(frozen=True)
class LogConfig:
    #: "auto" (JSON unless stderr is a terminal), "json" or "console".
    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True)
class GovernanceConfig:
    #: Days a credential may go without rotation, per identity kind.
    rotation_days: dict[str, int] = field(default_factory=lambda: {
        "api_key": 90, "oauth_token": 30, "service_account": 90, "rpa_bot": 90,
        "device": 397, "workload": 7, "ai_agent": 1, "certificate": 397})
    #: An identity with no authentication or accounting for this many days is unused.
    unused_days: int = 30
    #: More active credentials than this on one identity is sprawl (2 allows a rotation).
    max_active_credentials: int = 2
    #: ``nhi-nac serve`` rescans when a relevant change (owner, identity, credential,
    #: certificate, segment map, discovered device, session) was written, at most once per
    #: this many seconds; 0 leaves scanning to the timer and the CLI.
    rescan_seconds: int = 30
    #: What a newly opened finding triggers besides its event: "notify" (event only),
    #: "suspend" (the identity is suspended), "quarantine" (the identity is put on the
    #: segment map's fallback segment and its sessions re-authenticated by CoA) or
    #: "revoke" (its certificates are revoked, its sessions disconnected). Every action
    #: is audited as actor "governance".
    actions: dict[str, str] = field(default_factory=lambda: {
        "orphaned": "notify", "expired_active": "suspend", "stale_credential": "notify",
        "sprawl": "notify", "unused": "notify", "unmanaged": "notify", "drift": "notify",
        "new_site": "quarantine", "burst": "quarantine", "fan_out": "quarantine",
        "sequence": "quarantine", "volume": "quarantine", "off_hours": "notify"})


@dataclass(frozen=True)
class AgentsConfig:
    """AI agents: dynamic grants and behavioural rules."""

    #: Longest grant an agent may ask for (a grant always ends by itself).
    max_grant: str = "8h"
    #: A grant outside the ceiling waits this long for its owner, then times out.
    pending_timeout: str = "15m"
    #: Behavioural rules look at this much recent activity ...
    window: str = "10m"
    #: ... against a baseline of this much history before it.
    baseline: str = "7d"
    #: Access requests (grant requests and RADIUS authentications) within one window
    #: above which an agent is bursting, and at least this many times its baseline rate.
    burst_requests: int = 30
    burst_factor: int = 5
    #: Sub-agents spawned within one window above which fan-out is flagged.
    fan_out_children: int = 5
    #: Octets (accounting, in + out) in one window above which, and above burst_factor
    #: times the largest baseline session, an agent's traffic is flagged.
    volume_bytes: int = 1_073_741_824
    #: Days of baseline needed before an unseen hour of day is flagged (off_hours).
    off_hours_min_days: int = 3


@dataclass(frozen=True)
class Config:
    data_dir: str = "./.nhi-nac"
    database_url: str = ""
    #: The asyncio event loop of ``serve``: "uvloop" (libuv; the service's packet and
    #: HTTP paths cost less CPU), "asyncio" (the standard library's), or "auto" (uvloop
    #: where it is installed, which the package does on Linux and macOS).
    event_loop: str = "auto"
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    log: LogConfig = field(default_factory=LogConfig)
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, or SQLite in the data directory."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_path / 'nhi-nac.db').resolve()}"

    @property
    def api_tls(self) -> bool:
        """Whether the API serves HTTPS."""
        return bool(self.api.tls_names or self.api.tls_cert)

    @property
    def api_host_port(self) -> tuple[str, int]:
        return split_host_port(self.api.listen, "api.listen")


_SECTIONS: dict[str, type[Any]] = {
    "radius": RadiusConfig,
    "api": ApiConfig,
    "ca": CaConfig,
    "mqtt": MqttConfig,
    "log": LogConfig,
    "governance": GovernanceConfig,
    "agents": AgentsConfig,
}


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pick the async driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def split_host_port(text: str, key: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"{text!r} is not HOST:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(key, f"{host!r} is not an IP address") from None
    return host, _port(port, key)


def _port(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(key, f"port {number} is outside 0-65535")
    return number


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a TOML or environment value to the type of its default, or refuse it."""
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"{value!r} is not a boolean")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(key, f"{value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"{value!r} is not an integer") from None
    if isinstance(default, tuple):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(key, f"{value!r} is not a JSON list") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, "must be a list of strings")
        return tuple(value)
    if isinstance(default, dict):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(key, f"{value!r} is not a JSON object") from None
        kind = type(next(iter(default.values())))
        if not isinstance(value, Mapping) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
            raise ConfigError(key, f"must be a table of {kind.__name__} values")
        return {**default, **value}
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(key, f"{value!r} is not a string")
        return value
    raise ConfigError(key, "unsupported setting")


def _apply(obj: Any, values: Mapping[str, Any], prefix: str) -> Any:
    changes: dict[str, Any] = {}
    known = {f.name: f for f in fields(obj)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in known:
            raise ConfigError(key, "unknown setting")
        current = getattr(obj, name)
        if name in _SECTIONS and not prefix:
            if not isinstance(value, Mapping):
                raise ConfigError(key, "must be a table")
            changes[name] = _apply(current, value, f"{name}.")
        else:
            changes[name] = _coerce(key, value, current)
    return replace(obj, **changes)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map NHI_NAC_<SECTION>_<KEY> to nested settings; unknown names are errors."""
    result: dict[str, Any] = {}
    top = {f.name for f in fields(Config)} - set(_SECTIONS)
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name in top:
            result[name] = value
            continue
        for section, cls in _SECTIONS.items():
            if name.startswith(section + "_"):
                key = name[len(section) + 1 :]
                if key not in {f.name for f in fields(cls)}:
                    raise ConfigError(var, f"no setting {section}.{key}")
                result.setdefault(section, {})[key] = value
                break
        else:
            raise ConfigError(var, "not a known setting")
    return result


def _validate_api_tls(api: ApiConfig) -> None:
    """TLS from one source or none; plain HTTP only on loopback unless allowed."""
    if bool(api.tls_cert) != bool(api.tls_key):
        raise ConfigError("api.tls_key" if api.tls_cert else "api.tls_cert",
                          "tls_cert and tls_key go together")
    if api.tls_cert and api.tls_names:
        raise ConfigError("api.tls_names", "give tls_names (a certificate from this "
                          "service's CA) or tls_cert/tls_key (your own), not both")
    for i, name in enumerate(api.tls_names):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not _TLS_NAME_RE.match(name):
                raise ConfigError(f"api.tls_names[{i}]", f"{name!r} is neither an IP address "
                                  "nor a lower-case DNS name of two or more labels") from None
    host, _ = split_host_port(api.listen, "api.listen")
    if not (api.tls_cert or api.tls_names or api.allow_plain_http
            or ipaddress.ip_address(host).is_loopback):
        raise ConfigError("api.listen", f"{host} is not a loopback address: serve HTTPS "
                          "(api.tls_names, or api.tls_cert and api.tls_key) so bootstrap and "
                          "API tokens never cross the network in clear, or set "
                          "api.allow_plain_http = true behind a TLS-terminating proxy")


def _validate(cfg: Config) -> Config:
    for i, address in enumerate(cfg.radius.listen):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"radius.listen[{i}]", f"{address!r} is not an IP address") from None
    _port(cfg.radius.auth_port, "radius.auth_port")
    _port(cfg.radius.acct_port, "radius.acct_port")
    if not 1 <= _port(cfg.radius.coa_port, "radius.coa_port"):
        raise ConfigError("radius.coa_port", "must be 1-65535")
    if cfg.radius.on_backend_error not in ("reject", "drop"):
        raise ConfigError("radius.on_backend_error", "must be 'reject' or 'drop'")
    if not 0 <= cfg.radius.fallback_vlan <= 4094:
        raise ConfigError("radius.fallback_vlan", "must be 0 (reject) or a VLAN 1-4094")
    cfg.api_host_port  # noqa: B018 - validates api.listen
    if not 1024 <= cfg.api.max_body <= 64 * 1024 * 1024:
        raise ConfigError("api.max_body", "must be between 1024 and 67108864 bytes")
    if not 1 <= cfg.api.workers <= MAX_API_WORKERS:
        raise ConfigError("api.workers", f"must be between 1 and {MAX_API_WORKERS}")
    if cfg.api.workers > 1 and not cfg.effective_database_url.startswith("postgresql"):
        raise ConfigError("api.workers", "more than one API process needs PostgreSQL "
                          "(database_url): SQLite serialises writers within one process only")
    _validate_api_tls(cfg.api)
    if cfg.api.public_url and not cfg.api.public_url.startswith(("http://", "https://")):
        raise ConfigError("api.public_url", "must start with http:// or https://")
    td = cfg.ca.trust_domain
    if len(td) > 255 or not _TRUST_DOMAIN_RE.match(td):
        raise ConfigError(
            "ca.trust_domain", f"{td!r} is not a lower-case DNS-style name (SPIFFE trust domain)"
        )
    if cfg.ca.key_type not in ("p256", "p384", "ed25519", "rsa3072"):
        raise ConfigError("ca.key_type", "must be p256, p384, ed25519 or rsa3072")
    if cfg.ca.passphrase and not cfg.ca.passphrase.startswith(("file:", "env:", "credential:")):
        raise ConfigError("ca.passphrase", "must be file:PATH, env:VAR or credential:NAME")
    if cfg.event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError("event_loop", "must be auto, uvloop or asyncio")
    url = cfg.database_url
    if url and not url.startswith(("sqlite", "postgresql", "postgres://")):
        raise ConfigError("database_url", "must be a sqlite:// or postgresql:// URL")
    if cfg.mqtt.url and not cfg.mqtt.url.startswith(("mqtt://", "mqtts://")):
        raise ConfigError("mqtt.url", "must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if cfg.log.format not in ("auto", "json", "console"):
        raise ConfigError("log.format", "must be auto, json or console")
    kinds = {"device", "workload", "service_account", "api_key", "oauth_token", "rpa_bot",
             "ai_agent", "certificate"}
    for kind, days in cfg.governance.rotation_days.items():
        if kind not in kinds:
            raise ConfigError(f"governance.rotation_days.{kind}", "not an identity kind")
        if not 1 <= days <= 3650:
            raise ConfigError(f"governance.rotation_days.{kind}", "must be 1-3650 days")
    for ftype, action in cfg.governance.actions.items():
        if ftype not in GOVERNANCE_ACTIONS_FOR:
            raise ConfigError(f"governance.actions.{ftype}", "not a finding type")
        if action not in GOVERNANCE_ACTIONS_FOR[ftype]:
            raise ConfigError(f"governance.actions.{ftype}",
                              f"must be one of {', '.join(GOVERNANCE_ACTIONS_FOR[ftype])}")
    if not 1 <= cfg.governance.unused_days <= 3650:
        raise ConfigError("governance.unused_days", "must be 1-3650 days")
    if not 0 <= cfg.governance.rescan_seconds <= 86400:
        raise ConfigError("governance.rescan_seconds", "must be 0-86400 seconds")
    if not 1 <= cfg.governance.max_active_credentials <= 100:
        raise ConfigError("governance.max_active_credentials", "must be 1-100")
    from nhi_nac.durations import parse_duration
    from nhi_nac.errors import InvalidInput

    for key in ("max_grant", "pending_timeout", "window", "baseline"):
        try:
            parse_duration(getattr(cfg.agents, key))
        except InvalidInput as exc:
            raise ConfigError(f"agents.{key}", str(exc)) from None
    if cfg.agents.volume_bytes < 1:
        raise ConfigError("agents.volume_bytes", "must be at least 1")
    for key in ("burst_requests", "burst_factor", "fan_out_children", "off_hours_min_days"):
        if not 1 <= getattr(cfg.agents, key) <= 100_000:
            raise ConfigError(f"agents.{key}", "must be 1-100000")
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level", "must be debug, info, warning or error")
    return cfg


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from defaults, the file and the environment."""
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV) or None
    cfg = Config()
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path}: {exc}") from None
        cfg = _apply(cfg, data, "")
    cfg = _apply(cfg, _env_overrides(env), "")
    return _validate(cfg)
