"""Shared CA material for the pki tests: one hierarchy per session (keys are slow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pki import (
    CaHierarchy,
    CertificateIssuer,
    IssuedCertificate,
    KeyType,
    PrivateKey,
    create_hierarchy,
    generate_private_key,
)

TRUST_DOMAIN = "nhi.example"
CRL_URL = "http://ca.nhi.example/crl.der"
OCSP_URL = "http://ca.nhi.example/ocsp"

# Real time, not a fixed date: openssl verifies at the wall clock.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

#: One identity per profile: (profile, kind, name, DNS names).
PROFILE_CASES = [
    ("device", "device", "printer-3f-01", ()),
    ("workload", "workload", "payments-api", ("payments.nhi.example",)),
    ("ai_agent", "ai_agent", "triage-bot.run-42", ()),
    ("radius-server", "service", "radius", ("radius.nhi.example",)),
    ("api-server", "service", "api", ("nac.nhi.example",)),
    ("ocsp-responder", "service", "ocsp", ()),
]


@dataclass(frozen=True)
class Leaf:
    key: PrivateKey
    issued: IssuedCertificate


@pytest.fixture(scope="session")
def hierarchy() -> CaHierarchy:
    return create_hierarchy(TRUST_DOMAIN, NOW)


def new_issuer(hierarchy: CaHierarchy) -> CertificateIssuer:
    """An issuer for ``hierarchy``'s issuing CA with the test URLs."""
    return CertificateIssuer(
        hierarchy.issuing,
        TRUST_DOMAIN,
        crl_url=CRL_URL,
        ocsp_url=OCSP_URL,
        ca_issuers_url="http://ca.nhi.example/issuing.der",
    )


@pytest.fixture(scope="session")
def issuer(hierarchy: CaHierarchy) -> CertificateIssuer:
    return new_issuer(hierarchy)


@pytest.fixture(scope="session")
def leaf_key() -> PrivateKey:
    return generate_private_key(KeyType.P256)


@pytest.fixture(scope="session")
def responder(issuer: CertificateIssuer) -> Leaf:
    key = generate_private_key()
    return Leaf(key, issuer.issue(key.public_key(), "service", "ocsp", "ocsp-responder", NOW))


@pytest.fixture(scope="session")
def pki_files(tmp_path_factory: pytest.TempPathFactory, hierarchy: CaHierarchy) -> Path:
    """ca.pem (root) and chain.pem (intermediates) on disk for openssl."""
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.pem").write_bytes(hierarchy.issuing.root_pem)
    (directory / "chain.pem").write_bytes(hierarchy.issuing.chain_pem)
    return directory
