"""Private keys: generation, PKCS#8 encryption at rest, and the passphrase source.

The CA's intermediate key is stored as encrypted PKCS#8 (RFC 5958) with
``BestAvailableEncryption``; its passphrase comes from one of three places
(a file, an environment variable, or a systemd credential, which systemd puts
in ``$CREDENTIALS_DIRECTORY/<name>``). The library does not read the process
environment by itself: the caller passes the mapping to look in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pki import der
from pki.errors import KeyStoreError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
SignatureHash: TypeAlias = hashes.SHA256 | hashes.SHA384

#: A passphrase shorter than this is refused: it would protect the CA key in name only.
MIN_PASSPHRASE_BYTES = 12
#: A passphrase file larger than this is not a passphrase file.
MAX_PASSPHRASE_BYTES = 4096
#: RSA size for the ``rsa3072`` key type (NIST SP 800-57: 128-bit security).
RSA_KEY_BITS = 3072
RSA_PUBLIC_EXPONENT = 65537


class KeyType(StrEnum):
    """Key types the CA generates, named as on the command line."""

    P256 = "p256"
    P384 = "p384"
    ED25519 = "ed25519"
    RSA3072 = "rsa3072"


DEFAULT_KEY_TYPE = KeyType.P256


def generate_private_key(key_type: KeyType | str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh private key of ``key_type`` from the OS CSPRNG."""
    kind = KeyType(key_type)
    if kind is KeyType.P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is KeyType.P384:
        return ec.generate_private_key(ec.SECP384R1())
    if kind is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def signature_hash(key: PrivateKey | PublicKey) -> SignatureHash | None:
    """The digest to sign with ``key``: None for Ed25519, SHA-384 for P-384, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP384R1
    ):
        return hashes.SHA384()
    return hashes.SHA256()


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key`` (or of its public half)."""
    public = key.public_key() if isinstance(key, PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def subject_public_key_bits(spki: bytes) -> bytes:
    """The key itself from a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7): the value of
    its subjectPublicKey BIT STRING, the unused-bits octet left out. Hashed for SKI/AKI
    (§4.2.1.2) and for OCSP's issuerKeyHash and ResponderID byKey (RFC 6960 §4.1.1)."""
    # SPKI ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
    return der.contents(der.split(spki)[1])[1:]


def public_key_fingerprint(key: PrivateKey | PublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, lowercase hex: the key's identity in storage."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase is not None:
        check_passphrase(passphrase)
        encryption = serialization.BestAvailableEncryption(passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(pem: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key, decrypting it with ``passphrase`` when it is encrypted."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:
        # cryptography raises TypeError for "encrypted but no password" and the reverse.
        raise KeyStoreError(f"private key passphrase mismatch: {exc}") from None
    except ValueError:
        raise KeyStoreError(
            "private key could not be loaded: wrong passphrase or not a PEM private key"
        ) from None
    if not isinstance(key, PrivateKey):
        raise KeyStoreError(f"unsupported private key type {type(key).__name__}")
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(
        key.curve, ec.SECP256R1 | ec.SECP384R1
    ):
        raise KeyStoreError(f"unsupported elliptic curve {key.curve.name}")
    return key


def check_passphrase(passphrase: bytes) -> bytes:
    if not MIN_PASSPHRASE_BYTES <= len(passphrase) <= MAX_PASSPHRASE_BYTES:
        raise KeyStoreError(
            f"passphrase must be {MIN_PASSPHRASE_BYTES} to {MAX_PASSPHRASE_BYTES} bytes"
        )
    return passphrase


def read_passphrase(
    *,
    file: str | Path | None = None,
    env: str | None = None,
    credential: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """The CA key passphrase from exactly one source.

    ``file`` is a path whose content (one trailing newline stripped) is the
    passphrase; ``env`` names a variable in ``environ``; ``credential`` names a
    systemd credential, read from ``$CREDENTIALS_DIRECTORY/<credential>`` (see
    systemd.exec(5), ``LoadCredential=``). ``environ`` is the caller's
    environment mapping, required for ``env`` and ``credential``.
    """
    chosen = [s for s in (file, env, credential) if s is not None]
    if len(chosen) != 1:
        raise KeyStoreError("give exactly one passphrase source: file, env or credential")
    if file is not None:
        return _read_passphrase_file(Path(file))
    if environ is None:
        raise KeyStoreError("an environment mapping is needed to read env or credential")
    if env is not None:
        value = environ.get(env)
        if value is None:
            raise KeyStoreError(f"environment variable {env} is not set")
        return check_passphrase(value.encode())
    assert credential is not None
    if "/" in credential or credential in ("", ".", ".."):
        raise KeyStoreError(f"systemd credential name {credential!r} is not a plain name")
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise KeyStoreError("CREDENTIALS_DIRECTORY is not set (no systemd credentials)")
    return _read_passphrase_file(Path(directory) / credential)


def _read_passphrase_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PASSPHRASE_BYTES + 2)
    except OSError as exc:
        raise KeyStoreError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return check_passphrase(data)


def direct_signer(
    key: PrivateKey, algorithm: SignatureHash | None
) -> Callable[[bytes], bytes] | None:
    """Sign bytes with ``key`` as cryptography's builders (``CertificateBuilder``,
    ``OCSPResponseBuilder``) sign with ``key`` and ``algorithm``, if we know how.

    None for a key we do not know: the DER templates of ``pki.issuer`` and ``pki.ocsp``
    then keep the builder.
    """
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    if algorithm is None:
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(algorithm)
        return lambda data: key.sign(data, ecdsa)
    if isinstance(key, rsa.RSAPrivateKey):
        # The builder's RSA default: PKCS #1 v1.5 (RFC 8017 §8.2), not PSS.
        pkcs1 = padding.PKCS1v15()
        return lambda data: key.sign(data, pkcs1, algorithm)
    return None
