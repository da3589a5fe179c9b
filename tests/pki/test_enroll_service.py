"""Enrollment through the HTTP endpoint (POST /pki/v1/enroll) on both storage backends.

Every refusal shows its reason and stores nothing: no credential row, no audit record, no
outbox event, and the token stays usable (a refused request does not burn it). Requests
that arrive together are written in one transaction (group commit); each still gets its
own certificate or its own refusal, and a token used twice at once issues once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import func, select

import pki
from nhi_nac import apitokens, audit, enroll_client
from nhi_nac.api.server import make_app
from nhi_nac.bootstrap_tokens import create_bootstrap_token, create_bootstrap_tokens
from nhi_nac.ca_service import CaService
from nhi_nac.config import Config
from nhi_nac.domain import IdentityRef
from nhi_nac.errors import Conflict, InvalidInput, NotFound
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import AuditRecord, Credential, EnrollmentToken, OutboxEvent

OWNER = "alice@example.com"
TD = "nhi.example"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Lab:
    inv: Inventory
    clock: Clock
    ca: CaService
    client: TestClient[Any, Any]

    async def token(self, ref: str, ttl: str = "15m") -> str:
        minutes = int(ttl.rstrip("m"))
        token, _ = await create_bootstrap_token(self.inv, IdentityRef.parse(ref),
                                                dt.timedelta(minutes=minutes), actor="t")
        return token

    async def enroll(self, token: str, csr: bytes, validity: str | None = None
                     ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"token": token, "csr": csr.decode()}
        if validity:
            body["validity"] = validity
        r = await self.client.post("/pki/v1/enroll", json=body)
        return r.status, await r.json(content_type=None)

    async def counts(self) -> tuple[int, int, int, int]:
        """(credentials, audit records, outbox events, used tokens)."""
        async with self.inv.db.read() as s:
            return (
                int(await s.scalar(select(func.count()).select_from(Credential)) or 0),
                int(await s.scalar(select(func.count()).select_from(AuditRecord)) or 0),
                int(await s.scalar(select(func.count()).select_from(OutboxEvent)) or 0),
                int(await s.scalar(select(func.count()).select_from(EnrollmentToken)
                                   .where(EnrollmentToken.used_at.is_not(None))) or 0),
            )


@pytest.fixture
async def lab(database: Database, tmp_path: Path) -> AsyncIterator[Lab]:
    clock = Clock()
    inv = Inventory(database, clock)
    (tmp_path / "data").mkdir()
    ca = CaService(inv, Config(data_dir=str(tmp_path / "data")))
    ca.init_hierarchy(clock.now - dt.timedelta(minutes=5))
    await inv.add_owner(OWNER, "Alice", "platform", actor="t")
    await inv.add_owner("bob@example.com", "Bob", "platform", actor="t")
    for name, owner, scope in (("api", OWNER, {"dns": "api.nhi.example"}),
                               ("billing", OWNER, {}), ("batch", "bob@example.com", {})):
        await inv.add_identity(NewIdentity.build("workload", name, owner, scope=scope),
                               actor="t")
    async with TestClient(TestServer(make_app(inv, ca=ca), host="127.0.0.1", port=0)) as c:
        yield Lab(inv, clock, ca, c)


def csr_for(name: str, key: Any = None, dns: tuple[str, ...] = ()) -> bytes:
    return pki.build_csr(key or pki.generate_private_key("p256"),
                         f"spiffe://{TD}/workload/{name}", dns)


async def refused(lab: Lab, token: str, csr: bytes, status: int, reason: str,
                  validity: str | None = None) -> None:
    """The request is refused with ``reason``, and nothing at all was stored."""
    before = await lab.counts()
    code, body = await lab.enroll(token, csr, validity)
    assert (code, reason in body.get("detail", "")) == (status, True), body
    assert await lab.counts() == before


# -- each refusal: its reason, and nothing stored -----------------------------------------


async def test_unknown_token_and_unknown_identity(lab: Lab) -> None:
    await refused(lab, "nhb_" + "x" * 43, csr_for("api"), 403, "invalid bootstrap token")
    await refused(lab, "not-a-token", csr_for("api"), 403, "invalid bootstrap token")
    # No token can be minted for an identity that does not exist.
    with pytest.raises(InvalidInput, match="no identity workload/ghost"):
        await create_bootstrap_token(lab.inv, IdentityRef.parse("workload/ghost"), actor="t")


async def test_inactive_identity(lab: Lab) -> None:
    token = await lab.token("workload/api")
    await lab.inv.set_status(IdentityRef.parse("workload/api"), "suspended", actor="t")
    await refused(lab, token, csr_for("api"), 403, "identity workload/api is suspended")
    await lab.inv.set_status(IdentityRef.parse("workload/api"), "active", actor="t")
    code, _ = await lab.enroll(token, csr_for("api"))
    assert code == 201  # the refusal did not burn the token


async def test_owner_not_active(lab: Lab) -> None:
    token = await lab.token("workload/batch")
    await lab.inv.offboard_owner("bob@example.com", actor="t")
    await refused(lab, token, csr_for("batch"), 403, "bob@example.com of workload/batch")


async def test_token_reuse(lab: Lab) -> None:
    token = await lab.token("workload/api")
    code, _ = await lab.enroll(token, csr_for("api"))
    assert code == 201
    await refused(lab, token, csr_for("api"), 403, "bootstrap token already used")


async def test_expired_token(lab: Lab) -> None:
    token = await lab.token("workload/api", ttl="1m")
    lab.clock.now += dt.timedelta(minutes=1, seconds=1)
    await refused(lab, token, csr_for("api"), 403, "bootstrap token expired")


async def test_token_for_another_identity(lab: Lab) -> None:
    token = await lab.token("workload/billing")
    await refused(lab, token, csr_for("api"), 400,
                  f"this identity is spiffe://{TD}/workload/billing")


async def test_bad_csr_signature(lab: Lab) -> None:
    token = await lab.token("workload/api")
    der = x509.load_pem_x509_csr(csr_for("api")).public_bytes(serialization.Encoding.DER)
    tampered = der[:-1] + bytes([der[-1] ^ 1])
    pem = x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM)
    await refused(lab, token, pem, 400, "CSR signature does not verify")
    await refused(lab, token, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                  b"-----END CERTIFICATE REQUEST-----\n", 400, "CSR refused")


@pytest.mark.parametrize(("key", "reason"), [
    (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "elliptic curve secp521r1"),
])
async def test_disallowed_key_type(lab: Lab, key: Any, reason: str) -> None:
    token = await lab.token("workload/api")
    await refused(lab, token, csr_for("api", key()), 400, reason)


async def test_ca_true_requested(lab: Lab) -> None:
    token = await lab.token("workload/api")
    key = pki.generate_private_key("p256")
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier(f"spiffe://{TD}/workload/api")]), False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    await refused(lab, token, csr, 400, "CA:TRUE")


async def test_names_outside_policy(lab: Lab) -> None:
    token = await lab.token("workload/api")
    await refused(lab, token, csr_for("api", dns=("evil.example.com",)), 400,
                  "DNS name 'evil.example.com'")
    # The name the identity's scope allows is issued.
    code, body = await lab.enroll(token, csr_for("api", dns=("api.nhi.example",)))
    assert code == 201, body


async def test_key_already_bound_to_another_identity(lab: Lab) -> None:
    key = pki.generate_private_key("p256")
    code, _ = await lab.enroll(await lab.token("workload/api"), csr_for("api", key))
    assert code == 201
    await refused(lab, await lab.token("workload/billing"), csr_for("billing", key), 400,
                  "already bound to another identity (workload/api)")
    # The same identity may certify its key again.
    code, _ = await lab.enroll(await lab.token("workload/api"), csr_for("api", key))
    assert code == 201


async def test_validity_beyond_the_profile_maximum(lab: Lab) -> None:
    token = await lab.token("workload/api")
    await refused(lab, token, csr_for("api"), 400, "exceeds the workload profile's maximum",
                  validity="30d")


# -- group commit ---------------------------------------------------------------------------


async def test_a_token_used_at_once_is_issued_once(lab: Lab) -> None:
    token = await lab.token("workload/api")
    before = await lab.counts()
    results = await asyncio.gather(*[lab.enroll(token, csr_for("api")) for _ in range(6)])
    codes = sorted(code for code, _ in results)
    assert codes == [201, 403, 403, 403, 403, 403], results
    assert all("already used" in b["detail"] for c, b in results if c == 403)
    assert await lab.counts() == (before[0] + 1, before[1] + 1, before[2] + 1, before[3] + 1)


async def test_a_full_queue_answers_503_with_retry_after_and_stores_nothing(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Past MAX_ENROLL_QUEUE waiting enrollments a request is refused at once with 503,
    ``Retry-After`` and the reason; its token stays usable, and the queued ones are
    issued when the CA catches up."""
    import nhi_nac.ca_service as ca_service

    monkeypatch.setattr(ca_service, "MAX_ENROLL_QUEUE", 2)
    release = asyncio.Event()
    real = CaService._enroll_batch

    async def slow(self: CaService, batch: Any) -> None:
        await release.wait()  # the database is slow: the queue fills behind this batch
        await real(self, batch)

    monkeypatch.setattr(CaService, "_enroll_batch", slow)
    names = ["api", "billing", "batch"]
    tokens = [await lab.token(f"workload/{n}") for n in names]
    spare = await lab.token("workload/api")
    before = await lab.counts()
    first = asyncio.ensure_future(lab.enroll(tokens[0], csr_for("api")))
    for _ in range(100):  # the first request's batch is being written
        await asyncio.sleep(0.01)
        if not lab.ca._enroll_queue:
            break
    queued = [asyncio.ensure_future(lab.enroll(t, csr_for(n)))
              for t, n in zip(tokens[1:], names[1:], strict=True)]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(lab.ca._enroll_queue) == 2:
            break
    r = await lab.client.post("/pki/v1/enroll", json={"token": spare,
                                                      "csr": csr_for("api").decode()})
    body = await r.json(content_type=None)
    assert (r.status, r.headers.get("Retry-After")) == (503, "1"), body
    assert "more than 2 enrollments waiting; retry" in body["detail"]
    # The enrollment client reads it as "try again after 1 s", not as a refusal.
    with pytest.raises(enroll_client.Unreachable, match="enrollments waiting") as caught:
        await asyncio.to_thread(enroll_client.enroll, str(lab.client.make_url("/")), spare,
                                str(tmp_path / "spare"))
    assert caught.value.retry_after == 1.0 and not (tmp_path / "spare").exists()
    assert await lab.counts() == before
    release.set()
    assert [code for code, _ in await asyncio.gather(first, *queued)] == [201, 201, 201]
    code, _ = await lab.enroll(spare, csr_for("api"))
    assert code == 201  # the refused token was not burned
    assert (await lab.counts())[0] == before[0] + 4


async def test_expiring_within_lists_what_is_about_to_lapse_not_what_has(lab: Lab) -> None:
    """A workload renewed daily leaves a certificate a day behind it: they read
    ``expired`` and stay out of "expiring within", which lists the valid ones that end
    soon and that no newer certificate of the identity has superseded (CLI ``cert list
    --expiring-within``, API ``?expiring_within=``)."""

    serials = []
    for _ in range(3):  # three days of daily certificates
        code, body = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
        assert code == 201, body
        serials.append(body["serial"])
        lab.clock.now += dt.timedelta(hours=25)
    lab.clock.now -= dt.timedelta(hours=2)  # the newest has an hour left
    code, body = await lab.enroll(await lab.token("workload/billing"), csr_for("billing"),
                                  validity="72h")
    assert code == 201, body
    soon = await lab.ca.certificates(expiring_within=dt.timedelta(hours=2))
    assert [c.serial for c in soon] == [serials[-1]]
    week = await lab.ca.certificates(expiring_within=dt.timedelta(days=7))
    assert [c.serial for c in week] == [serials[-1], body["serial"]]
    listed = {c.serial: c.status for c in await lab.ca.certificates(
        IdentityRef.parse("workload/api"))}
    assert listed == {serials[0]: "expired", serials[1]: "expired", serials[2]: "active"}
    assert [c.serial for c in await lab.ca.certificates(status="expired")] == serials[:2]
    token = await apitokens.create_token(lab.inv, "auditor", "auditor", actor="t")
    r = await lab.client.get("/api/v1/certificates", params={"expiring_within": "7d"},
                             headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200
    assert [c["serial"] for c in await r.json()] == [serials[-1], body["serial"]]
    # A new certificate supersedes the one with an hour left: the identity has rotated,
    # so that one (still valid, still active) is no longer "expiring".
    code, newest = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
    assert code == 201, newest
    assert await lab.ca.certificates(expiring_within=dt.timedelta(hours=2)) == []
    week = await lab.ca.certificates(expiring_within=dt.timedelta(days=7))
    assert [c.serial for c in week] == [newest["serial"], body["serial"]]  # soonest first
    # Revoking the identity revokes what could still be used: the two valid ones, not
    # the two expired (they admit nobody, and would only fill the CRL).
    revoked = await lab.ca.revoke(identity=IdentityRef.parse("workload/api"),
                                  reason="keyCompromise", actor="t")
    assert sorted(revoked) == sorted([serials[2], newest["serial"]])
    listed = {c.serial: c.status for c in await lab.ca.certificates(
        IdentityRef.parse("workload/api"))}
    assert [listed[s] for s in (*serials, newest["serial"])] == [
        "expired", "expired", "revoked", "revoked"]


async def test_one_bad_request_does_not_fail_the_others(lab: Lab) -> None:
    refs = ["workload/api", "workload/billing", "workload/batch"]
    minted = await create_bootstrap_tokens(lab.inv, [IdentityRef.parse(r) for r in refs],
                                           dt.timedelta(minutes=5), actor="t")
    (api, _), (billing, _), (batch, _) = minted
    before = await lab.counts()
    results = await asyncio.gather(
        lab.enroll(api, csr_for("api")),
        lab.enroll(billing, csr_for("api")),              # wrong identity in the CSR
        lab.enroll(batch, csr_for("batch")),
        lab.enroll("nhb_" + "y" * 43, csr_for("batch")),  # unknown token
        lab.enroll(batch, csr_for("batch")),              # the same token again
    )
    codes = [code for code, _ in results]
    assert codes == [201, 400, 201, 403, 403], results
    assert "this identity is" in results[1][1]["detail"]
    assert "invalid bootstrap token" in results[3][1]["detail"]
    assert "already used" in results[4][1]["detail"]
    issued = [x509.load_pem_x509_certificate(results[i][1]["certificate_pem"].encode())
              for i in (0, 2)]
    sans = [c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            .get_values_for_type(x509.UniformResourceIdentifier) for c in issued]
    assert sans == [[f"spiffe://{TD}/workload/api"], [f"spiffe://{TD}/workload/batch"]]
    assert await lab.counts() == (before[0] + 2, before[1] + 2, before[2] + 2, before[3] + 2)
    # The billing token was not burned by its refusal.
    code, _ = await lab.enroll(billing, csr_for("billing"))
    assert code == 201
    async with lab.inv.db.read() as s:
        verdict = await audit.verify_chain(s)
    assert verdict.ok, verdict.describe()
    async with lab.inv.db.read() as s:
        rows = (await s.execute(select(OutboxEvent.type, OutboxEvent.payload)
                                .where(OutboxEvent.type == "certificate.issued"))).all()
    assert sorted(p["identity"] for _, p in rows) == sorted(refs)


async def test_ocsp_answers_revocation_from_memory_and_drops_cached_answers(lab: Lab) -> None:
    from cryptography.x509 import ocsp

    lab.ca.issue_service_certificates(lab.clock.now)
    code, body = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
    assert code == 201
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    issuer = x509.load_pem_x509_certificate(body["chain_pem"].encode())
    request = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
               .build().public_bytes(serialization.Encoding.DER))

    async def status() -> ocsp.OCSPCertStatus:
        r = await lab.client.post("/pki/v1/ocsp", data=request,
                                  headers={"Content-Type": "application/ocsp-request"})
        return ocsp.load_der_ocsp_response(await r.read()).certificate_status

    assert await status() == ocsp.OCSPCertStatus.GOOD
    assert await status() == ocsp.OCSPCertStatus.GOOD  # served from the cache
    await lab.ca.revoke(serial=body["serial"], reason="keyCompromise", actor="t")
    assert lab.ca.is_revoked(cert.serial_number) is True
    assert await status() == ocsp.OCSPCertStatus.REVOKED
    crl = x509.load_der_x509_crl((Path(lab.ca.dir) / "crl.der").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


async def test_a_revoked_certificate_leaves_the_crl_one_crl_validity_after_it_expires(
        lab: Lab) -> None:
    """RFC 5280 §3.3: listed until it has appeared on a scheduled CRL issued after its
    notAfter, then dropped, so short-lived certificates keep the CRL short. OCSP still
    answers revoked for it (from the database)."""

    lab.ca.issue_service_certificates(lab.clock.now)
    serials = {}
    for name in ("api", "billing"):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name),
                                      validity="1h" if name == "api" else None)
        assert code == 201
        serials[name] = int(body["serial"], 16)
        await lab.ca.revoke(serial=body["serial"], reason="keyCompromise", actor="t")

    def listed() -> set[int]:
        crl = x509.load_der_x509_crl((Path(lab.ca.dir) / "crl.der").read_bytes())
        return {entry.serial_number for entry in crl}

    assert listed() == set(serials.values())
    # api expired (1 h) and is still within the keep window: still listed.
    lab.clock.now += dt.timedelta(hours=1) + pki.KEEP_AFTER_EXPIRY - dt.timedelta(minutes=1)
    await lab.ca.publish_crl()
    assert listed() == set(serials.values())
    # Past it: api leaves the CRL and the in-memory set; billing (24 h) stays.
    lab.clock.now += dt.timedelta(minutes=2)
    await lab.ca.publish_crl()
    assert listed() == {serials["billing"]}
    assert lab.ca.is_revoked(serials["api"]) is False
    assert lab.ca.is_revoked(serials["billing"]) is True
    status = await lab.ca.serial_status(serials["api"])
    assert status.status == pki.CertStatus.REVOKED


async def test_each_revocation_keeps_its_date_and_reason_on_every_crl_and_in_ocsp(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revocations at different times for different reasons: every later CRL (re-signed
    from the entries kept in memory) and OCSP, in this process and in a fresh one that
    reads them from the database (on PostgreSQL two rows at a time), give each its own
    date and reason."""
    from cryptography.x509 import ocsp

    from nhi_nac import ca_service

    monkeypatch.setattr(ca_service, "REVOKED_ROWS_PER_PART", 2)

    lab.ca.issue_service_certificates(lab.clock.now)
    expected = {}
    issuer = None
    for name, reason, flag in (("api", "keyCompromise", x509.ReasonFlags.key_compromise),
                               ("billing", "superseded", x509.ReasonFlags.superseded),
                               ("batch", "unspecified", x509.ReasonFlags.unspecified)):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name))
        assert code == 201
        cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
        issuer = x509.load_pem_x509_certificate(body["chain_pem"].encode())
        lab.clock.now += dt.timedelta(minutes=7)
        await lab.ca.revoke(serial=body["serial"], reason=reason, actor="t")
        expected[cert.serial_number] = (lab.clock.now.replace(microsecond=0), flag)
    assert issuer is not None
    probe = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    hashes_of_issuer = (probe.issuer_name_hash, probe.issuer_key_hash)
    await lab.ca.publish_crl()

    def crl_says() -> dict[int, tuple[dt.datetime, x509.ReasonFlags]]:
        crl = x509.load_der_x509_crl((Path(lab.ca.dir) / "crl.der").read_bytes())
        said = {}
        for entry in crl:
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                reason = x509.ReasonFlags.unspecified
            said[entry.serial_number] = (entry.revocation_date_utc, reason)
        return said

    async def ocsp_says(ca: CaService) -> dict[int, tuple[dt.datetime, x509.ReasonFlags]]:
        said = {}
        for serial in expected:
            request = (ocsp.OCSPRequestBuilder()
                       .add_certificate_by_hash(*hashes_of_issuer, serial, hashes.SHA1())
                       .build().public_bytes(serialization.Encoding.DER))
            answer = ocsp.load_der_ocsp_response(await ca.ocsp_response(request))
            assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
            said[serial] = (answer.revocation_time_utc,
                            answer.revocation_reason or x509.ReasonFlags.unspecified)
        return said

    assert crl_says() == expected
    assert await ocsp_says(lab.ca) == expected
    fresh = CaService(lab.inv, Config(data_dir=str(tmp_path / "data")))
    assert await ocsp_says(fresh) == expected
    await fresh.publish_crl()
    assert crl_says() == expected


async def test_revocations_at_once_share_crls_and_each_is_listed(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight revocations at once, the first CRL held until all eight have asked for one:
    each caller returns once a CRL listing its certificate is published, and the seven
    that asked while the first was being made share the next one."""
    from nhi_nac.ca_service import _SETTINGS

    lab.ca.issue_service_certificates(lab.clock.now)
    serials = []
    for _ in range(8):
        code, body = await lab.enroll(await lab.token("workload/billing"), csr_for("billing"))
        assert code == 201
        serials.append(body["serial"])
    await lab.ca.publish_crl()

    async def crl_number() -> int:
        async with lab.inv.db.read() as s:
            return int(await s.scalar(select(_SETTINGS.c.value).where(
                _SETTINGS.c.key == "crl_number")) or 0)

    before = await crl_number()
    asked_before = lab.ca._crl_asked
    load = lab.ca._load_revoked

    async def held_load(now: dt.datetime) -> dict[int, bytes]:
        for _ in range(1000):
            if lab.ca._crl_asked - asked_before >= len(serials):
                break
            await asyncio.sleep(0.01)
        return await load(now)

    monkeypatch.setattr(lab.ca, "_load_revoked", held_load)

    async def revoke(serial: str) -> set[int]:
        await lab.ca.revoke(serial=serial, reason="superseded", actor="t")
        crl = x509.load_der_x509_crl((Path(lab.ca.dir) / "crl.der").read_bytes())
        return {entry.serial_number for entry in crl}

    listed = await asyncio.gather(*(revoke(s) for s in serials))
    for serial, seen in zip(serials, listed, strict=True):
        assert int(serial, 16) in seen
    assert await crl_number() - before == 2


async def test_a_revocation_during_a_crl_stays_in_memory_when_that_crl_lands(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRL that read the database just before a revocation committed must not drop that
    revocation from memory when it replaces the index: between that CRL and the next,
    the serial is still revoked in memory."""
    lab.ca.issue_service_certificates(lab.clock.now)
    code, body = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
    assert code == 201
    serial = int(body["serial"], 16)
    await lab.ca.publish_crl()  # the index is loaded
    revoked_committed = asyncio.Event()
    seen_between: list[bool | None] = []
    load = lab.ca._load_revoked
    calls = 0

    async def racing_load(now: dt.datetime) -> dict[int, bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first CRL: read, then wait for the revocation to commit
            index = await load(now)
            await asyncio.wait_for(revoked_committed.wait(), 10)
            return index
        seen_between.append(lab.ca.is_revoked(serial))  # the next CRL, before it reads
        return await load(now)

    monkeypatch.setattr(lab.ca, "_load_revoked", racing_load)
    first = asyncio.create_task(lab.ca.publish_crl())
    await asyncio.sleep(0.05)
    remember = lab.ca._remember_revoked

    def remembered(*args: Any) -> None:
        remember(*args)
        revoked_committed.set()

    monkeypatch.setattr(lab.ca, "_remember_revoked", remembered)
    await lab.ca.revoke(serial=body["serial"], reason="keyCompromise", actor="t")
    await first
    assert seen_between == [True]
    assert lab.ca.is_revoked(serial) is True


async def test_the_first_status_requests_after_start_share_one_load(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty status requests at once to a process that has not loaded its revocations
    yet read them from the database once, not twenty times; a load that fails is tried
    again by the next request."""
    lab.ca.issue_service_certificates(lab.clock.now)
    code, body = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
    assert code == 201
    serial = int(body["serial"], 16)
    await lab.ca.revoke(serial=body["serial"], reason="keyCompromise", actor="t")
    fresh = CaService(lab.inv, Config(data_dir=str(tmp_path / "data")))
    load = fresh._load_revoked
    loads = 0
    fail_first = True

    async def counted(now: dt.datetime) -> dict[int, bytes]:
        nonlocal loads, fail_first
        loads += 1
        await asyncio.sleep(0.02)
        if fail_first:
            fail_first = False
            raise ConnectionError("database gone for a moment")
        return await load(now)

    monkeypatch.setattr(fresh, "_load_revoked", counted)
    with pytest.raises(ConnectionError):
        await fresh.serial_status(serial)
    got = await asyncio.gather(*(fresh.serial_status(serial) for _ in range(20)))
    assert {s.status for s in got} == {pki.CertStatus.REVOKED}
    assert loads == 2  # the failed one, then one for all twenty


async def test_concurrent_ocsp_requests_share_queries_and_each_gets_its_own_answer(
        lab: Lab) -> None:
    """Requests that arrive together are looked up in one query, not one each: a good
    certificate, one revoked by another node (in the database, not yet in this process's
    memory) and a serial never issued, each with its own nonce, all at once."""
    import os

    from cryptography.x509 import ocsp
    from sqlalchemy import text

    lab.ca.issue_service_certificates(lab.clock.now)
    certs = {}
    for name in ("api", "billing"):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name))
        assert code == 201
        certs[name] = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    issuer = x509.load_pem_x509_certificate(body["chain_pem"].encode())
    async with lab.inv.db.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE credentials SET status = 'revoked', revoked_at = created_at, "
            "revocation_reason = 'keyCompromise' WHERE serial = :s"),
            {"s": format(certs["billing"].serial_number, "x")})
    never = (ocsp.OCSPRequestBuilder().add_certificate(certs["api"], issuer, hashes.SHA1())
             .build())

    def request(serial: int) -> bytes:
        return (ocsp.OCSPRequestBuilder()
                .add_certificate_by_hash(never.issuer_name_hash, never.issuer_key_hash,
                                         serial, hashes.SHA1())
                .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
                .build().public_bytes(serialization.Encoding.DER))

    async def status(serial: int) -> ocsp.OCSPCertStatus:
        r = await lab.client.post("/pki/v1/ocsp", data=request(serial),
                                  headers={"Content-Type": "application/ocsp-request"})
        answer = ocsp.load_der_ocsp_response(await r.read())
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        return answer.certificate_status

    unknown = [0x5EED00 + i for i in range(16)]
    serials = [certs["api"].serial_number, certs["billing"].serial_number, *unknown] * 2
    before = lab.ca._status_lookup.queries
    got = await asyncio.gather(*(status(s) for s in serials))
    assert got == [ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED,
                   *[ocsp.OCSPCertStatus.UNKNOWN] * len(unknown)] * 2
    # One query per serial would be 17 at least (good and unknown are never in memory).
    assert 1 <= lab.ca._status_lookup.queries - before <= 8
    assert lab.ca.is_revoked(certs["billing"].serial_number) is True  # now in memory


@pytest.mark.parametrize(("change", "reason"), [
    ("UPDATE enrollment_tokens SET used_at = created_at", "bootstrap token already used"),
    ("UPDATE identities SET status = 'suspended' WHERE name = 'api'",
     "identity workload/api is suspended"),
])
async def test_a_change_between_check_and_write_is_caught_in_the_write(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, change: str, reason: str) -> None:
    """Another node burns the token, or an admin suspends the identity, after the batch
    read them: the conditional burn in the write transaction refuses, with the reason."""
    from sqlalchemy import text
    from sqlalchemy.engine import Connection

    import nhi_nac.ca_service as ca_service

    token = await lab.token("workload/api")
    real = ca_service._key_holders
    calls = 0

    def meanwhile(conn: Connection, fingerprints: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the batch's read; the write reads the key's holders again
            conn.execute(text(change))
            conn.commit()
        return real(conn, fingerprints)

    monkeypatch.setattr(ca_service, "_key_holders", meanwhile)
    before = await lab.counts()
    code, body = await lab.enroll(token, csr_for("api"))
    assert (code, reason in body["detail"]) == (403, True), body
    after = await lab.counts()
    assert after[:3] == before[:3]  # no credential, audit record or event


async def test_a_key_bound_elsewhere_between_check_and_write_is_caught_in_the_write(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node certifies the same key for another identity after the batch read the
    key's holders: the write reads them again under the key's lock and refuses, with the
    reason; nothing of this request is stored and its token stays unused."""
    from sqlalchemy import text
    from sqlalchemy.engine import Connection

    import nhi_nac.ca_service as ca_service

    key = pki.generate_private_key("p256")
    token = await lab.token("workload/api")
    real = ca_service._read_batch

    def meanwhile(conn: Connection, batch: Any, now: dt.datetime) -> Any:
        found = real(conn, batch, now)
        conn.execute(text(
            "INSERT INTO credentials (identity_id, type, serial, fingerprint, "
            "key_fingerprint, profile, status, created_at) VALUES ((SELECT id FROM "
            "identities WHERE name = 'billing'), 'certificate', 'b111', :fp, :kfp, "
            "'workload', 'active', :now)"),
            {"fp": "f" * 64, "kfp": pki.public_key_fingerprint(key.public_key()),
             "now": now.replace(tzinfo=None)})
        conn.commit()
        return found

    monkeypatch.setattr(ca_service, "_read_batch", meanwhile)
    before = await lab.counts()
    code, body = await lab.enroll(token, csr_for("api", key))
    assert (code, "already bound to another identity (workload/billing)" in body["detail"]
            ) == (400, True), body
    after = await lab.counts()
    assert after == (before[0] + 1, *before[1:])  # only the other node's credential
    monkeypatch.setattr(ca_service, "_read_batch", real)
    code, body = await lab.enroll(token, csr_for("api"))  # the token is still good
    assert code == 201, body


# -- a revocation's reason: raised to keyCompromise, a hold made permanent ------------------


def _crl_entry(ca: CaService, serial: str) -> x509.RevokedCertificate:
    assert ca.crl is not None
    entry = x509.load_der_x509_crl(ca.crl.der).get_revoked_certificate_by_serial_number(
        int(serial, 16))
    assert entry is not None
    return entry


def _crl_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


async def test_a_revocation_is_raised_to_key_compromise_and_a_hold_made_permanent(
        lab: Lab, database: Database, tmp_path: Path) -> None:
    issued = {}
    for name in ("api", "billing"):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name))
        assert code == 201, body
        issued[name] = body["serial"]
    api, billing = issued["api"], issued["billing"]
    # Another process on the same database, which has the first revocation in memory.
    other = CaService(Inventory(database, lab.clock), Config(data_dir=str(tmp_path / "data")))
    await lab.ca.revoke(serial=api, reason="superseded", actor="t")
    revoked_at = _crl_entry(lab.ca, api).revocation_date_utc
    assert (await other.serial_status(int(api, 16))).reason \
        is x509.ReasonFlags.superseded
    await other.refresh()
    lab.clock.now += dt.timedelta(minutes=10)

    # Anything but keyCompromise is refused, with the reason it has, and stores nothing.
    before = await lab.counts()
    for reason in ("unspecified", "superseded", "cessationOfOperation", "certificateHold"):
        with pytest.raises(Conflict, match=r"already revoked \(superseded\).*keyCompromise"):
            await lab.ca.revoke(serial=api, reason=reason, actor="t")
    assert await lab.counts() == before

    assert await lab.ca.revoke(serial=api, reason="key-compromise", actor="t") == [api]
    entry = _crl_entry(lab.ca, api)
    assert _crl_reason(entry) is x509.ReasonFlags.key_compromise
    assert entry.revocation_date_utc == revoked_at  # when it was revoked, not now
    status = await lab.ca.serial_status(int(api, 16))
    assert (status.reason, status.revoked_at) == (
        x509.ReasonFlags.key_compromise, revoked_at)
    # One audit record and one event say what it was and what it is now.
    async with lab.inv.db.read() as s:
        record = (await s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()))).first()
        event = (await s.scalars(select(OutboxEvent).order_by(OutboxEvent.id.desc()))).first()
    assert record is not None and event is not None
    assert (record.action, record.target) == ("certificate.revoke", f"certificate/{api}")
    assert json.loads(record.before) == {"status": "revoked", "reason": "superseded"}
    assert json.loads(record.after)["reason"] == "keyCompromise"
    assert (event.type, event.payload["previous_reason"]) == (
        "certificate.revoked", "superseded")
    assert [c - b for c, b in zip(await lab.counts(), before, strict=True)] == [0, 1, 1, 0]
    # keyCompromise is final.
    with pytest.raises(Conflict, match=r"already revoked \(keyCompromise\)"):
        await lab.ca.revoke(serial=api, reason="keyCompromise", actor="t")

    # The other process re-reads the changed revocation and lists the new reason.
    await other.refresh()
    assert other.crl is not None and _crl_reason(_crl_entry(other, api)) \
        is x509.ReasonFlags.key_compromise
    assert (await other.serial_status(int(api, 16))).reason \
        is x509.ReasonFlags.key_compromise

    # A hold is made permanent by any other reason, and then is like any revocation.
    await lab.ca.revoke(serial=billing, reason="certificateHold", actor="t")
    held_at = _crl_entry(lab.ca, billing).revocation_date_utc
    await lab.ca.revoke(serial=billing, reason="cessationOfOperation", actor="t")
    entry = _crl_entry(lab.ca, billing)
    assert (_crl_reason(entry), entry.revocation_date_utc) == (
        x509.ReasonFlags.cessation_of_operation, held_at)
    with pytest.raises(Conflict, match=r"already revoked \(cessationOfOperation\)"):
        await lab.ca.revoke(serial=billing, reason="certificateHold", actor="t")
    await lab.ca.revoke(serial=billing, reason="keyCompromise", actor="t")
    assert _crl_reason(_crl_entry(lab.ca, billing)) is x509.ReasonFlags.key_compromise


async def test_revoking_an_identity_for_key_compromise_raises_its_revoked_certificates(
        lab: Lab) -> None:
    serials = []
    for _ in range(3):
        code, body = await lab.enroll(await lab.token("workload/api"), csr_for("api"))
        assert code == 201, body
        serials.append(body["serial"])
    ref = IdentityRef.parse("workload/api")
    await lab.ca.revoke(serial=serials[0], reason="superseded", actor="t")
    await lab.ca.revoke(serial=serials[1], reason="keyCompromise", actor="t")
    # Another reason revokes the one still active and leaves the revoked ones alone.
    assert await lab.ca.revoke(identity=ref, reason="cessationOfOperation", actor="t") \
        == [serials[2]]
    assert await lab.ca.revoke(identity=ref, reason="cessationOfOperation", actor="t") == []
    # keyCompromise raises every valid one that had another reason.
    assert sorted(await lab.ca.revoke(identity=ref, reason="keyCompromise", actor="t")) \
        == sorted([serials[0], serials[2]])
    assert {s: _crl_reason(_crl_entry(lab.ca, s)) for s in serials} == dict.fromkeys(
        serials, x509.ReasonFlags.key_compromise)
    assert await lab.ca.revoke(identity=ref, reason="keyCompromise", actor="t") == []


async def test_a_certificate_on_hold_is_released_and_nothing_else_is(
        lab: Lab, database: Database, tmp_path: Path) -> None:
    issued = {}
    for name in ("api", "billing", "batch"):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name))
        assert code == 201, body
        issued[name] = body["serial"]
    api, billing, batch = issued["api"], issued["billing"], issued["batch"]
    other = CaService(Inventory(database, lab.clock), Config(data_dir=str(tmp_path / "data")))
    await lab.ca.revoke(serial=api, reason="certificateHold", actor="t")
    await lab.ca.revoke(serial=billing, reason="superseded", actor="t")
    assert (await other.serial_status(int(api, 16))).status is pki.CertStatus.REVOKED
    await other.refresh()

    # Only a hold is released: each refusal says why and stores nothing.
    before = await lab.counts()
    for serial, why in ((billing, r"is revoked \(superseded\): only a certificate on hold"),
                        (batch, "is not revoked"), ("abc123", None)):
        with pytest.raises(Conflict if why else NotFound, match=why or "no certificate"):
            await lab.ca.release(serial, actor="t")
    assert await lab.counts() == before

    assert await lab.ca.release(api, actor="t") == api
    assert (await lab.ca.serial_status(int(api, 16))).status is pki.CertStatus.GOOD
    assert lab.ca.crl is not None
    crl = x509.load_der_x509_crl(lab.ca.crl.der)
    assert crl.get_revoked_certificate_by_serial_number(int(api, 16)) is None
    assert crl.get_revoked_certificate_by_serial_number(int(billing, 16)) is not None
    [view] = await lab.ca.certificates(IdentityRef.parse("workload/api"))
    assert (view.status, view.revoked_at, view.revocation_reason) == ("active", None, None)
    async with lab.inv.db.read() as s:
        record = (await s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()))).first()
        event = (await s.scalars(select(OutboxEvent).order_by(OutboxEvent.id.desc()))).first()
    assert record is not None and event is not None
    assert (record.action, json.loads(record.after)) == ("certificate.release",
                                                         {"status": "active"})
    assert json.loads(record.before)["reason"] == "certificateHold"
    assert (event.type, event.payload) == ("certificate.released",
                                           {"serial": api, "identity": "workload/api"})
    # The other process sees the release: its CRL no longer lists it, OCSP says good.
    await other.refresh()
    assert other.crl is not None and x509.load_der_x509_crl(other.crl.der) \
        .get_revoked_certificate_by_serial_number(int(api, 16)) is None
    assert (await other.serial_status(int(api, 16))).status is pki.CertStatus.GOOD

    # Released once, it is an ordinary certificate: revoked again, released again.
    await lab.ca.revoke(serial=api, reason="certificateHold", actor="t")
    assert await lab.ca.release(api, actor="t") == api
    # Retiring the identity makes its hold permanent (cessationOfOperation, the hold's
    # date kept), so it cannot be released; nor can one past its notAfter.
    await lab.ca.revoke(serial=api, reason="certificateHold", actor="t")
    held_at = _crl_entry(lab.ca, api).revocation_date_utc
    await lab.inv.set_status(IdentityRef.parse("workload/api"), "retired", actor="t")
    await lab.ca.publish_crl()
    assert _crl_reason(_crl_entry(lab.ca, api)) is x509.ReasonFlags.cessation_of_operation
    assert _crl_entry(lab.ca, api).revocation_date_utc == held_at
    with pytest.raises(Conflict, match=r"is revoked \(cessationOfOperation\)"):
        await lab.ca.release(api, actor="t")
    # A hold a retired identity kept from before that rule is not released either.
    async with lab.inv.db.transaction() as s:
        cred = await s.scalar(select(Credential).where(Credential.serial == api))
        assert cred is not None
        cred.revocation_reason = "certificateHold"
    with pytest.raises(Conflict, match="workload/api, which is retired"):
        await lab.ca.release(api, actor="t")
    await lab.ca.revoke(serial=batch, reason="certificateHold", actor="t")
    lab.clock.now += dt.timedelta(days=2)
    with pytest.raises(Conflict, match="expired at .*nothing to release"):
        await lab.ca.release(batch, actor="t")


async def test_an_identity_and_its_descendants_are_released_from_hold_together(
        lab: Lab) -> None:
    """``revoke(identity=…, reason="certificateHold")`` has its counterpart: one call (CLI
    ``cert release --identity``, API ``…/release-certificates``) takes every held
    certificate of the family off hold, and nothing else."""
    await lab.inv.add_identity(NewIdentity.build("workload", "billing-job", OWNER,
                                                 parent="workload/billing"), actor="t")
    serials = {}
    for key, name in (("b1", "billing"), ("b2", "billing"), ("job", "billing-job"),
                      ("api", "api")):
        code, body = await lab.enroll(await lab.token(f"workload/{name}"), csr_for(name))
        assert code == 201, body
        serials[key] = body["serial"]
    b1, b2, job, api = serials["b1"], serials["b2"], serials["job"], serials["api"]
    billing = IdentityRef.parse("workload/billing")
    assert sorted(await lab.ca.revoke(identity=billing, reason="certificateHold",
                                      actor="t")) == sorted([b1, b2, job])
    await lab.ca.revoke(serial=b2, reason="keyCompromise", actor="t")  # no longer a hold
    await lab.ca.revoke(serial=api, reason="certificateHold", actor="t")  # not the family

    path = "/api/v1/identities/workload/billing/release-certificates"
    auditor = await apitokens.create_token(lab.inv, "auditor", "auditor", actor="t")
    before = await lab.counts()
    r = await lab.client.post(path, headers={"Authorization": f"Bearer {auditor}"})
    assert r.status == 403 and await lab.counts() == before
    admin = {"Authorization": "Bearer "
             + await apitokens.create_token(lab.inv, "admin", "admin", actor="t")}
    # What is on hold, and what is revoked for any reason (`cert list --status`).
    r = await lab.client.get("/api/v1/certificates", params={"status": "held"}, headers=admin)
    assert r.status == 200 and {c["serial"] for c in await r.json()} == {b1, job, api}
    assert [c.serial for c in await lab.ca.certificates(status="revoked")] == [b2]
    r = await lab.client.get("/api/v1/certificates", params={"status": "on-hold"},
                             headers=admin)
    assert r.status == 400 and "valid, expired, revoked, held" in (await r.json())["detail"]
    r = await lab.client.post(path, headers=admin)
    assert r.status == 200
    assert sorted((await r.json())["released"]) == sorted([b1, job])
    assert {c.serial for c in await lab.ca.certificates(status="valid")} == {b1, job}
    assert {c.serial for c in await lab.ca.certificates(status="held")} == {api}
    for serial, status in ((b1, pki.CertStatus.GOOD), (job, pki.CertStatus.GOOD),
                           (b2, pki.CertStatus.REVOKED), (api, pki.CertStatus.REVOKED)):
        assert (await lab.ca.serial_status(int(serial, 16))).status is status, serial
    assert lab.ca.crl is not None
    listed = {e.serial_number for e in x509.load_der_x509_crl(lab.ca.crl.der)}
    assert listed == {int(b2, 16), int(api, 16)}
    async with lab.inv.db.read() as s:
        events = (await s.scalars(select(OutboxEvent).where(
            OutboxEvent.type == "certificate.released").order_by(OutboxEvent.id))).all()
    assert sorted((e.payload["serial"], e.payload.get("cascade_from")) for e in events) \
        == sorted([(b1, None), (job, "workload/billing")])
    number = lab.ca.crl.number
    r = await lab.client.post(path, headers=admin)  # nothing on hold: the CRL stays
    assert (r.status, (await r.json())["released"]) == (200, [])
    assert lab.ca.crl.number == number
    # The serial endpoint answers in the same shape.
    r = await lab.client.post(f"/api/v1/certificates/{api}/release", headers=admin)
    assert (r.status, await r.json()) == (200, {"released": [api]})

    # A retired descendant's hold became permanent and stays; a retired identity is
    # refused, changing nothing.
    await lab.ca.revoke(identity=billing, reason="certificateHold", actor="t")
    await lab.inv.set_status(IdentityRef.parse("workload/billing-job"), "retired",
                             actor="t")
    assert await lab.ca.release_identity(billing, actor="t") == [b1]
    assert (await lab.ca.serial_status(int(job, 16))).status is pki.CertStatus.REVOKED
    await lab.inv.set_status(billing, "retired", actor="t")
    before = await lab.counts()
    r = await lab.client.post(path, headers=admin)
    assert r.status == 409 and "is retired" in (await r.json())["detail"]
    assert await lab.counts() == before
