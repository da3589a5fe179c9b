"""Key generation, PKCS#8 encryption at rest, and the passphrase sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pki import KeyStoreError, KeyType, generate_private_key, load_private_key, private_key_pem
from pki.keys import public_key_fingerprint, read_passphrase

PASSPHRASE = b"correct horse battery staple"


@pytest.mark.parametrize(
    ("key_type", "expected", "size"),
    [
        (KeyType.P256, ec.EllipticCurvePrivateKey, 256),
        (KeyType.P384, ec.EllipticCurvePrivateKey, 384),
        (KeyType.ED25519, ed25519.Ed25519PrivateKey, None),
        (KeyType.RSA3072, rsa.RSAPrivateKey, 3072),
    ],
)
def test_generate_each_key_type(key_type: KeyType, expected: type, size: int | None) -> None:
    key = generate_private_key(key_type)
    assert isinstance(key, expected)
    if size is not None:
        assert key.key_size == size  # type: ignore[union-attr]


def test_default_key_type_is_p256() -> None:
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(ValueError):
        generate_private_key("dsa1024")


def test_encrypted_pkcs8_round_trip() -> None:
    key = generate_private_key()
    pem = private_key_pem(key, PASSPHRASE)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key(pem, PASSPHRASE)
    assert public_key_fingerprint(loaded) == public_key_fingerprint(key)


def test_wrong_or_missing_passphrase_is_refused_with_reason() -> None:
    pem = private_key_pem(generate_private_key(), PASSPHRASE)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        load_private_key(pem, b"not the passphrase at all")
    with pytest.raises(KeyStoreError, match="passphrase"):
        load_private_key(pem, None)


def test_short_passphrase_is_refused() -> None:
    with pytest.raises(KeyStoreError, match="passphrase must be"):
        private_key_pem(generate_private_key(), b"short")


def test_passphrase_from_file_strips_one_newline(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(PASSPHRASE + b"\n")
    assert read_passphrase(file=path) == PASSPHRASE


def test_passphrase_from_environment() -> None:
    environ = {"NHI_CA_PASSPHRASE": PASSPHRASE.decode()}
    assert read_passphrase(env="NHI_CA_PASSPHRASE", environ=environ) == PASSPHRASE
    with pytest.raises(KeyStoreError, match="not set"):
        read_passphrase(env="OTHER", environ=environ)


def test_passphrase_from_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "ca-passphrase").write_bytes(PASSPHRASE)
    environ = {"CREDENTIALS_DIRECTORY": os.fspath(tmp_path)}
    assert read_passphrase(credential="ca-passphrase", environ=environ) == PASSPHRASE
    with pytest.raises(KeyStoreError, match="not a plain name"):
        read_passphrase(credential="../etc/shadow", environ=environ)
    with pytest.raises(KeyStoreError, match="CREDENTIALS_DIRECTORY"):
        read_passphrase(credential="ca-passphrase", environ={})


def test_exactly_one_passphrase_source(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="exactly one"):
        read_passphrase()
    with pytest.raises(KeyStoreError, match="exactly one"):
        read_passphrase(file=tmp_path / "x", env="Y", environ={})
    with pytest.raises(KeyStoreError, match="cannot read"):
        read_passphrase(file=tmp_path / "missing")
