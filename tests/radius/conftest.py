"""Fixtures of the RADIUS tests: a CA, certificates, a filled MemoryDirectory."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from nhi_nac.domain import IdentityKind, IdentityRef, IdentityStatus, OwnerStatus
from nhi_nac.radius.directory import AdmissionIdentity, MemoryDirectory, NasClient
from nhi_nac.radius.eaptls import EapTlsServerConfig
from tests.radius.pkiutil import NOW, Issued, issue, make_ca, server_cert

SECRET = b"testing123"
TD = "nhi.example"
MAB_MAC = "aa:bb:cc:dd:ee:ff"
MAB_VLAN = 120
DEVICE_VLAN = 100
QUARANTINE_VLAN = 999


def uri(name: str, kind: str = "device") -> str:
    return f"spiffe://{TD}/{kind}/{name}"


@dataclass
class Pki:
    ca: Issued
    other_ca: Issued
    server: Issued
    good: Issued
    revoked: Issued
    expired: Issued
    not_yet_valid: Issued
    no_client_auth: Issued
    no_eku: Issued
    unknown: Issued
    retired: Issued
    departed: Issued
    foreign: Issued
    two_uris: Issued


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = make_ca()
    other = make_ca("other CA")
    return Pki(
        ca=ca,
        other_ca=other,
        server=server_cert(ca),
        good=issue(ca, "x", uris=(uri("x"),)),
        revoked=issue(ca, "revoked", uris=(uri("revoked"),)),
        expired=issue(
            ca,
            "expired",
            uris=(uri("expired"),),
            not_before=NOW - dt.timedelta(days=10),
            not_after=NOW - dt.timedelta(days=1),
        ),
        not_yet_valid=issue(
            ca,
            "future",
            uris=(uri("future"),),
            not_before=NOW + dt.timedelta(days=1),
            not_after=NOW + dt.timedelta(days=10),
        ),
        no_client_auth=issue(
            ca, "noeku", uris=(uri("noeku"),), eku=(ExtendedKeyUsageOID.SERVER_AUTH,)
        ),
        no_eku=issue(ca, "noeku", uris=(uri("noeku"),), eku=None),
        unknown=issue(ca, "ghost", uris=(uri("ghost"),)),
        retired=issue(ca, "retired", uris=(uri("retired"),)),
        departed=issue(ca, "departed", uris=(uri("departed"),)),
        foreign=issue(other, "x", uris=(uri("x"),)),
        two_uris=issue(ca, "two", uris=(uri("x"), uri("two"))),
    )


def _ident(name: str, **kw: object) -> AdmissionIdentity:
    return AdmissionIdentity(ref=IdentityRef(IdentityKind.DEVICE, name), owner="alice", **kw)  # type: ignore[arg-type]


@pytest.fixture
def directory(pki: Pki) -> MemoryDirectory:
    d = MemoryDirectory(
        nas_clients=[
            NasClient("lo4", ipaddress.ip_network("127.0.0.0/8"), SECRET, site="lab"),
            NasClient("lo6", ipaddress.ip_network("::1/128"), SECRET, site="lab"),
            NasClient(
                "relaxed",
                ipaddress.ip_network("192.0.2.7/32"),
                SECRET,
                require_message_authenticator=False,
            ),
        ],
        identities=[
            _ident("x"),
            _ident("revoked"),
            _ident("expired"),
            _ident("future"),
            _ident("noeku"),
            _ident("two"),
            _ident("retired", status=IdentityStatus.RETIRED),
            _ident("departed", owner_status=OwnerStatus.DEPARTED),
            _ident("printer", macs=frozenset({MAB_MAC}), allow_mab=True),
            _ident("camera", macs=frozenset({"00:11:22:33:44:55"}), allow_mab=False),
        ],
        trust_domain=TD,
        default_vlans={IdentityKind.DEVICE: DEVICE_VLAN},
        vlans={"device/printer": MAB_VLAN},
    )
    d.revoked_serials.add(pki.revoked.cert.serial_number)
    return d


@pytest.fixture(scope="session")
def tls_config(pki: Pki) -> EapTlsServerConfig:
    return EapTlsServerConfig(
        certificate=pki.server.cert, private_key=pki.server.key, trust_anchors=(pki.ca.cert,)
    )
