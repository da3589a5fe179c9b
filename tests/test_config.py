"""Configuration: defaults, file, environment overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nhi_nac.config import Config, load_config
from nhi_nac.errors import ConfigError


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.radius.auth_port == 1812 and cfg.radius.listen == ("127.0.0.1", "::1")
    assert cfg.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert cfg.effective_database_url.endswith(".nhi-nac/nhi-nac.db")


def test_file_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "/srv/nhi"\n[radius]\nauth_port = 11812\n[ca]\n'
                 'trust_domain = "corp.example"\n')
    cfg = load_config(str(f), environ={"NHI_NAC_RADIUS_AUTH_PORT": "18120",
                                       "NHI_NAC_RADIUS_LISTEN": '["127.0.0.1"]'})
    assert cfg.data_dir == "/srv/nhi"
    assert cfg.radius.auth_port == 18120
    assert cfg.radius.listen == ("127.0.0.1",)
    assert cfg.ca.trust_domain == "corp.example"
    cfg = load_config(environ={"NHI_NAC_CONFIG": str(f), "NHI_NAC_DATA_DIR": "/tmp/x"})
    assert cfg.data_dir == "/tmp/x" and cfg.radius.auth_port == 11812


def test_postgres_url_gets_async_driver() -> None:
    cfg = load_config(environ={"NHI_NAC_DATABASE_URL": "postgresql://u@db/nhi"})
    assert cfg.effective_database_url == "postgresql+asyncpg://u@db/nhi"


@pytest.mark.parametrize("env, key", [
    ({"NHI_NAC_RADIUS_AUTH_PORT": "x"}, "radius.auth_port"),
    ({"NHI_NAC_RADIUS_AUTH_PORT": "70000"}, "radius.auth_port"),
    ({"NHI_NAC_RADIUS_LISTEN": "127.0.0.1"}, "radius.listen"),
    ({"NHI_NAC_RADIUS_LISTEN": '["nope"]'}, "radius.listen[0]"),
    ({"NHI_NAC_RADIUS_ON_BACKEND_ERROR": "accept"}, "radius.on_backend_error"),
    ({"NHI_NAC_API_LISTEN": "8080"}, "api.listen"),
    ({"NHI_NAC_CA_TRUST_DOMAIN": "Bad_Domain"}, "ca.trust_domain"),
    ({"NHI_NAC_MQTT_URL": "http://x"}, "mqtt.url"),
    ({"NHI_NAC_RADIUS_BOGUS": "1"}, "NHI_NAC_RADIUS_BOGUS"),
    ({"NHI_NAC_EVENT_LOOP": "trio"}, "event_loop"),
    # Plain HTTP beyond loopback would carry bootstrap and API tokens in clear.
    ({"NHI_NAC_API_LISTEN": "0.0.0.0:8443"}, "api.listen"),
    ({"NHI_NAC_API_LISTEN": "10.1.2.3:8443"}, "api.listen"),
    ({"NHI_NAC_API_TLS_NAMES": '["nac.example", "localhost"]'}, "api.tls_names[1]"),
    ({"NHI_NAC_API_TLS_CERT": "/etc/nhi/api.pem"}, "api.tls_key"),
    ({"NHI_NAC_API_TLS_CERT": "/etc/nhi/api.pem", "NHI_NAC_API_TLS_KEY": "/etc/nhi/api.key",
      "NHI_NAC_API_TLS_NAMES": '["nac.example"]'}, "api.tls_names"),
])
def test_invalid_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_https_or_loopback() -> None:
    cfg = load_config(environ={"NHI_NAC_API_LISTEN": "0.0.0.0:8443",
                               "NHI_NAC_API_TLS_NAMES": '["nac.example", "10.1.2.3", "::1"]'})
    assert cfg.api_tls and cfg.api.tls_names == ("nac.example", "10.1.2.3", "::1")
    cfg = load_config(environ={"NHI_NAC_API_LISTEN": "0.0.0.0:8080",
                               "NHI_NAC_API_ALLOW_PLAIN_HTTP": "true"})
    assert not cfg.api_tls
    assert not load_config(environ={}).api_tls  # loopback, plain HTTP: the default


def test_unknown_file_key_and_bad_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[radius]\nport = 1\n")
    with pytest.raises(ConfigError, match="radius.port: unknown setting"):
        load_config(str(f), environ={})
    f.write_text("[radius\n")
    with pytest.raises(ConfigError, match="--config"):
        load_config(str(f), environ={})
