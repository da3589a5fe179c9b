"""The internal CA in service: material on disk, issuance gated by governance, revocation.

``pki`` builds and checks certificates; this module decides *for whom* (an identity
that exists, is active and has an active owner), keeps the CA material in
``<data_dir>/ca/`` (the issuing key encrypted at rest), records every certificate,
publishes the CRL, answers OCSP, and issues the service's own RADIUS server and OCSP
responder certificates.

Files in ``<data_dir>/ca/``: ``root.pem``, ``root.key`` (encrypted; removed by
``ca export-root --offline``), ``issuing.pem``, ``issuing.key`` (encrypted PKCS#8),
``chain.pem`` (issuing CA and any intermediates above it), ``passphrase`` (0600, when
no other passphrase source is configured), ``ocsp.pem``/``ocsp.key``, ``crl.der``/``crl.pem``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.x509 import ReasonFlags
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import pki
from nhi_nac import audit
from nhi_nac.bootstrap_tokens import active_identity, consume_bootstrap_token
from nhi_nac.config import Config
from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.errors import Conflict, Forbidden, InternalError, InvalidInput, NotFound
from nhi_nac.inventory import Inventory
from nhi_nac.outbox import add_event
from nhi_nac.radius_service import TLS_DIR
from nhi_nac.storage.models import Credential, Identity, OutboxEvent, Setting

log = structlog.get_logger("nhi_nac.ca")

CA_DIR = "ca"
#: Which certificate profile each identity kind enrolls with.
PROFILE_FOR_KIND = {"device": "device", "workload": "workload",
                    "service_account": "workload", "rpa_bot": "workload",
                    "ai_agent": "ai_agent"}
#: Scope labels ``dns`` or ``dns.<n>`` list the DNS names an identity may hold.
DNS_SCOPE_KEY = "dns"
SERVICE_KIND = "service"
RADIUS_SERVER_NAME = "radius"
OCSP_RESPONDER_NAME = "ocsp"
#: Re-sign the CRL when less than this part of its validity is left.
CRL_REFRESH_FRACTION = 0.5
MAX_CSR_BYTES = 16 * 1024

_ocsp_status: contextvars.ContextVar[pki.SerialStatus] = contextvars.ContextVar("ocsp_status")


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace ``path`` (temp file in the same directory, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class IssuedBundle:
    identity: str
    certificate_pem: str
    chain_pem: str
    ca_pem: str
    serial: str
    not_after: dt.datetime
    profile: str


@dataclass(frozen=True)
class CertificateView:
    serial: str
    identity: str
    fingerprint: str
    profile: str
    status: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    revoked_at: dt.datetime | None
    revocation_reason: str | None


class CaService:
    def __init__(self, inventory: Inventory, config: Config) -> None:
        self.inventory = inventory
        self.config = config
        self.dir = config.data_path / CA_DIR
        self.issuer: pki.CertificateIssuer | None = None
        self.ocsp: pki.OcspResponder | None = None
        self.crl: pki.SignedCrl | None = None
        self._last_event = 0

    # -- material ------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.dir / "issuing.pem").exists()

    def _passphrase(self, create: bool = False) -> bytes:
        source = self.config.ca.passphrase
        if source:
            kind, _, value = source.partition(":")
            try:
                if kind == "file":
                    return pki.read_passphrase(file=value)
                if kind == "env":
                    return pki.read_passphrase(env=value)
                return pki.read_passphrase(credential=value)
            except pki.PkiError as exc:
                raise InternalError(f"CA passphrase ({source}): {exc}") from None
        path = self.dir / "passphrase"
        if not path.exists():
            if not create:
                raise InternalError(f"CA passphrase file {path} is missing")
            _write(path, secrets.token_urlsafe(32).encode(), 0o600)
        return path.read_bytes().strip()

    def public_base(self) -> str:
        if self.config.api.public_url:
            return self.config.api.public_url.rstrip("/")
        host, port = self.config.api_host_port
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def init_hierarchy(self, now: dt.datetime, key_type: str | None = None,
                       trust_domain: str | None = None) -> list[str]:
        """Create root + issuing CA once; later calls change nothing."""
        if self.initialised:
            return []
        td = trust_domain or self.config.ca.trust_domain
        if td != self.config.ca.trust_domain:
            raise InvalidInput(f"trust domain {td} differs from the configured "
                               f"ca.trust_domain {self.config.ca.trust_domain}")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        passphrase = self._passphrase(create=True)
        try:
            h = pki.create_hierarchy(td, now, key_type or self.config.ca.key_type)
        except pki.PkiError as exc:
            raise InvalidInput(str(exc)) from None
        assert h.root_key is not None
        _write(self.dir / "root.pem", h.issuing.root_pem)
        _write(self.dir / "root.key", h.root_key_pem(passphrase), 0o600)
        _write(self.dir / "issuing.key", h.issuing.key_pem(passphrase), 0o600)
        _write(self.dir / "chain.pem", h.issuing.chain_pem)
        _write(self.dir / "issuing.pem", h.issuing.certificate_pem)
        return [f"CA created for trust domain {td} ({key_type or self.config.ca.key_type})"]

    def import_issuing(self, cert_pem: bytes, key_pem: bytes, chain_pem: bytes,
                       now: dt.datetime, key_passphrase: bytes | None) -> str:
        """Bring your own issuing CA (refused if one exists or it does not check out)."""
        if self.initialised:
            raise Conflict(f"a CA already exists in {self.dir}")
        try:
            ca = pki.import_issuing_ca(cert_pem, key_pem, chain_pem, now,
                                       passphrase=key_passphrase,
                                       trust_domain=self.config.ca.trust_domain)
        except pki.PkiError as exc:
            raise InvalidInput(f"CA import refused: {exc}") from None
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        passphrase = self._passphrase(create=True)
        _write(self.dir / "root.pem", ca.root_pem)
        _write(self.dir / "issuing.key", ca.key_pem(passphrase), 0o600)
        _write(self.dir / "chain.pem", ca.chain_pem)
        _write(self.dir / "issuing.pem", ca.certificate_pem)
        return f"issuing CA {ca.certificate.subject.rfc4514_string()} imported"

    def export_root(self, offline: bool) -> bytes:
        """The encrypted root key (same passphrase); ``offline`` deletes it here."""
        path = self.dir / "root.key"
        if not path.exists():
            raise NotFound("the root key is not on this machine (already offline?)")
        data = path.read_bytes()
        if offline:
            path.unlink()
        return data

    def load(self) -> None:
        """Load the issuing CA and the OCSP responder (after ``init``)."""
        if not self.initialised:
            raise InternalError(f"no CA in {self.dir}: run 'nhi-nac init'")
        passphrase = self._passphrase()
        try:
            key = pki.load_private_key((self.dir / "issuing.key").read_bytes(), passphrase)
        except pki.PkiError as exc:
            raise InternalError(f"cannot load the issuing CA key: {exc}") from None
        cert = x509.load_pem_x509_certificate((self.dir / "issuing.pem").read_bytes())
        chain = tuple(pki.load_certificates((self.dir / "chain.pem").read_bytes()))
        root = x509.load_pem_x509_certificate((self.dir / "root.pem").read_bytes())
        ca = pki.IssuingCa(cert, key, chain, root)
        base = self.public_base()
        self.issuer = pki.CertificateIssuer(ca, self.config.ca.trust_domain,
                                            crl_url=f"{base}/pki/v1/crl",
                                            ocsp_url=f"{base}/pki/v1/ocsp")
        ocsp_cert, ocsp_key = self.dir / "ocsp.pem", self.dir / "ocsp.key"
        if ocsp_cert.exists() and ocsp_key.exists():
            self.ocsp = pki.OcspResponder(
                cert, x509.load_pem_x509_certificate(ocsp_cert.read_bytes()),
                pki.load_private_key(ocsp_key.read_bytes(), passphrase), self._ocsp_lookup)
        crl = self.dir / "crl.der"
        if crl.exists():
            loaded = x509.load_der_x509_crl(crl.read_bytes())
            number = loaded.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            self.crl = pki.SignedCrl(crl.read_bytes(), (self.dir / "crl.pem").read_bytes(),
                                     number, loaded.last_update_utc,
                                     loaded.next_update_utc or loaded.last_update_utc,
                                     len(loaded))

    def _issuer(self) -> pki.CertificateIssuer:
        if self.issuer is None:
            self.load()
        assert self.issuer is not None
        return self.issuer

    def issue_service_certificates(self, now: dt.datetime, force: bool = False) -> list[str]:
        """The OCSP responder and RADIUS server certificates, when missing or due."""
        issuer, done = self._issuer(), []
        passphrase = self._passphrase()
        ocsp_cert = self.dir / "ocsp.pem"
        if force or _due(ocsp_cert, now):
            key = pki.generate_private_key("p256")
            cert = issuer.issue(key.public_key(), SERVICE_KIND, OCSP_RESPONDER_NAME,
                                "ocsp-responder", now)
            _write(self.dir / "ocsp.key", pki.private_key_pem(key, passphrase), 0o600)
            _write(ocsp_cert, cert.pem)
            done.append(f"OCSP responder certificate issued (until {cert.not_after:%Y-%m-%d})")
        radius = self.config.data_path / TLS_DIR
        if force or _due(radius / "server.pem", now):
            radius.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = pki.generate_private_key("p256")
            cert = issuer.issue(key.public_key(), SERVICE_KIND, RADIUS_SERVER_NAME,
                                "radius-server", now)
            _write(radius / "server.key", pki.private_key_pem(key), 0o600)
            _write(radius / "chain.pem", issuer.ca.chain_pem)
            _write(radius / "ca.pem", issuer.ca.root_pem)
            _write(radius / "server.pem", cert.pem)
            done.append(f"RADIUS server certificate issued (until {cert.not_after:%Y-%m-%d})")
        if done:
            self.load()
        return done

    # -- issuance ---------------------------------------------------------------------

    async def _key_bindings(self, s: AsyncSession, csr_pem: bytes) -> _Bindings:
        try:
            csr = pki.load_csr(csr_pem)
            fp = pki.public_key_fingerprint(csr.public_key())  # type: ignore[arg-type]
        except (pki.PkiError, ValueError, TypeError) as exc:
            raise InvalidInput(f"CSR refused: {exc}") from None
        row = (await s.execute(
            select(Identity.kind, Identity.name).join(Credential,
                                                      Credential.identity_id == Identity.id)
            .where(Credential.key_fingerprint == fp).limit(1))).first()
        return _Bindings(fp, (row[0], row[1]) if row else None)

    async def _issue(self, s: AsyncSession, ident: Identity, csr_pem: bytes,
                     validity: dt.timedelta | None, now: dt.datetime,
                     actor: str) -> IssuedBundle:
        profile = PROFILE_FOR_KIND.get(ident.kind)
        if profile is None:
            raise InvalidInput(f"{ident.kind} identities do not hold certificates")
        if len(csr_pem) > MAX_CSR_BYTES:
            raise InvalidInput(f"CSR larger than {MAX_CSR_BYTES} bytes")
        dns = [v for k, v in ident.scope.items()
               if k == DNS_SCOPE_KEY or k.startswith(DNS_SCOPE_KEY + ".")]
        bindings = await self._key_bindings(s, csr_pem)
        issuer = self._issuer()
        try:
            cert = issuer.issue_for_csr(csr_pem, ident.kind, ident.name, profile, now,
                                        validity=validity, allowed_dns_names=dns,
                                        key_bindings=bindings)
        except pki.PeerError as exc:
            raise InvalidInput(f"certificate refused: {getattr(exc, 'reason', exc)}") from None
        serial = format(cert.serial, "x")
        ref = f"{ident.kind}/{ident.name}"
        s.add(Credential(identity_id=ident.id, type="certificate", serial=serial,
                         fingerprint=cert.fingerprint_sha256, key_fingerprint=cert.key_fingerprint,
                         profile=profile, status="active", created_at=now, last_rotated_at=None,
                         not_before=cert.not_before, expires_at=cert.not_after,
                         pem=cert.pem.decode()))
        ident.last_rotated_at = now
        await audit.append(s, actor=actor, action="certificate.issue", target=ref, before=None,
                           after={"serial": serial, "profile": profile,
                                  "not_after": cert.not_after.isoformat()}, now=now)
        add_event(s, "certificate.issued", {"identity": ref, "serial": serial,
                                            "profile": profile,
                                            "not_after": cert.not_after.isoformat()}, now)
        return IssuedBundle(ref, cert.pem.decode(), issuer.ca.chain_pem.decode(),
                            issuer.ca.root_pem.decode(), serial, cert.not_after, profile)

    async def enroll(self, token: str, csr_pem: bytes,
                     validity: dt.timedelta | None = None) -> IssuedBundle:
        """Token enrollment: the token picks the identity; the CSR only supplies the key."""
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            ident = await consume_bootstrap_token(s, token, now)
            await active_identity(s, IdentityRef(IdentityKind(ident.kind), ident.name))
            return await self._issue(s, ident, csr_pem, validity, now,
                                     actor=f"enroll:{ident.kind}/{ident.name}")

    async def renew(self, proof: bytes, validity: dt.timedelta | None = None) -> IssuedBundle:
        """Token-less renewal, proven by a request signed with the current key."""
        now = self.inventory.clock()
        issuer = self._issuer()
        try:
            serial = pki.renewal_proof_serial(proof)
        except (pki.PkiError, ValueError, KeyError, TypeError):
            raise Forbidden("malformed renewal proof") from None
        async with self.inventory.db.transaction() as s:
            cred = await s.scalar(select(Credential).where(
                Credential.serial == format(serial, "x"), Credential.type == "certificate"))
            if cred is None or cred.pem is None:
                raise Forbidden("renewal refused: unknown certificate; enroll with a token")
            current = x509.load_pem_x509_certificate(cred.pem.encode())
            try:
                request = pki.verify_renewal_proof(
                    proof, current, issuer.ca.certificate, now,
                    is_revoked=lambda _s: cred.status == "revoked")
            except pki.PkiError as exc:
                raise Forbidden(f"renewal refused: {exc}") from None
            ident = await s.get(Identity, cred.identity_id)
            assert ident is not None
            await active_identity(s, IdentityRef(IdentityKind(ident.kind), ident.name))
            bundle = await self._issue(s, ident, request.csr_pem, validity, now,
                                       actor=f"renew:{ident.kind}/{ident.name}")
            cred.last_rotated_at = now
            return bundle

    # -- revocation -------------------------------------------------------------------

    async def revoke(self, *, serial: str | None = None, identity: IdentityRef | None = None,
                     reason: str = "unspecified", actor: str) -> list[str]:
        try:
            flag = pki.parse_reason(reason)
        except pki.PkiError as exc:
            raise InvalidInput(str(exc)) from None
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            q = select(Credential).where(Credential.type == "certificate",
                                         Credential.status == "active")
            if serial is not None:
                q = select(Credential).where(Credential.type == "certificate",
                                             Credential.serial == _norm_serial(serial))
            elif identity is not None:
                row = await s.scalar(select(Identity).where(
                    Identity.kind == identity.kind.value, Identity.name == identity.name))
                if row is None:
                    raise NotFound(f"no identity {identity}")
                q = q.where(Credential.identity_id == row.id)
            else:
                raise InvalidInput("give a serial or an identity")
            creds = (await s.scalars(q)).all()
            owners = {i: f"{k}/{n}" for i, k, n in (await s.execute(
                select(Identity.id, Identity.kind, Identity.name).where(
                    Identity.id.in_({c.identity_id for c in creds})))).all()} if creds else {}
            if serial is not None and not creds:
                raise NotFound(f"no certificate with serial {serial}")
            revoked = []
            for cred in creds:
                if cred.status == "revoked":
                    raise Conflict(f"certificate {cred.serial} is already revoked")
                cred.status, cred.revoked_at, cred.revocation_reason = "revoked", now, flag.value
                revoked.append(cred.serial or "")
                await audit.append(s, actor=actor, action="certificate.revoke",
                                   target=f"certificate/{cred.serial}", before={"status": "active"},
                                   after={"status": "revoked", "reason": flag.value}, now=now)
                add_event(s, "certificate.revoked", {"serial": cred.serial,
                                                     "identity": owners.get(cred.identity_id),
                                                     "reason": flag.value}, now)
        await self.publish_crl()
        return revoked

    async def publish_crl(self) -> pki.SignedCrl:
        """Re-sign the CRL with every revoked certificate; the number always increases."""
        issuer = self._issuer()
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            setting = await s.get(Setting, "crl_number", with_for_update=True)
            number = int(setting.value) + 1 if setting else 1
            if setting is None:
                s.add(Setting(key="crl_number", value=str(number)))
            else:
                setting.value = str(number)
            rows = (await s.execute(select(Credential.serial, Credential.revoked_at,
                                           Credential.revocation_reason)
                                    .where(Credential.type == "certificate",
                                           Credential.status == "revoked"))).all()
            entries = [pki.RevokedEntry(int(str(sn), 16), at or now,
                                        ReasonFlags(reason or "unspecified"))
                       for sn, at, reason in rows if sn]
            crl = pki.build_crl(issuer.ca, entries, number=number, now=now)
        _write(self.dir / "crl.der", crl.der)
        _write(self.dir / "crl.pem", crl.pem)
        self.crl = crl
        return crl

    async def current_crl(self) -> tuple[bytes, bytes]:
        """The newest CRL on disk (any process sharing the data directory may have
        re-signed it, e.g. ``nhi-nac cert revoke``); one is published if none exists."""
        der, pem = self.dir / "crl.der", self.dir / "crl.pem"
        if not der.exists():  # noqa: ASYNC240 - one stat, small files
            crl = await self.publish_crl()
            return crl.der, crl.pem
        return der.read_bytes(), pem.read_bytes()  # noqa: ASYNC240

    async def refresh(self) -> None:
        """Scheduled: re-sign the CRL before nextUpdate, or after a revocation elsewhere."""
        async with self.inventory.db.read() as s:
            rows = (await s.execute(select(OutboxEvent.id, OutboxEvent.type)
                                    .where(OutboxEvent.id > self._last_event))).all()
        changed = any(t in ("certificate.revoked", "identity.retired") for _, t in rows)
        if rows:
            self._last_event = max(i for i, _ in rows)
        now = self.inventory.clock()
        crl = self.crl
        due = crl is None or now >= crl.this_update + (crl.next_update - crl.this_update) \
            * CRL_REFRESH_FRACTION
        if changed or due:
            await self.publish_crl()

    # -- OCSP -----------------------------------------------------------------------------

    def _ocsp_lookup(self, serial: int) -> pki.SerialStatus:
        return _ocsp_status.get()

    async def ocsp_response(self, request_der: bytes) -> bytes:
        if self.ocsp is None:
            self.load()
        responder = self.ocsp
        if responder is None:
            raise InternalError("no OCSP responder certificate: run 'nhi-nac init'")
        now = self.inventory.clock()
        try:
            request, _nonce = responder.parse_request(request_der)
        except pki.MalformedOcspRequest:
            return responder.respond(request_der, now)
        status = await self.serial_status(request.serial_number)
        token = _ocsp_status.set(status)
        try:
            return responder.respond(request_der, now)
        finally:
            _ocsp_status.reset(token)

    async def serial_status(self, serial: int) -> pki.SerialStatus:
        async with self.inventory.db.read() as s:
            row = (await s.execute(select(Credential.status, Credential.revoked_at,
                                          Credential.revocation_reason)
                                   .where(Credential.serial == format(serial, "x"),
                                          Credential.type == "certificate"))).first()
        if row is None:
            return pki.SerialStatus(pki.CertStatus.UNKNOWN)
        if row[0] == "revoked":
            return pki.SerialStatus(pki.CertStatus.REVOKED, row[1],
                                    ReasonFlags(row[2] or "unspecified"))
        return pki.SerialStatus(pki.CertStatus.GOOD)

    # -- listing ----------------------------------------------------------------------------

    async def certificates(self, identity: IdentityRef | None = None,
                           expiring_within: dt.timedelta | None = None,
                           limit: int = 1000) -> list[CertificateView]:
        q = select(Credential, Identity.kind, Identity.name).join(
            Identity, Identity.id == Credential.identity_id).where(
            Credential.type == "certificate")
        if identity is not None:
            q = q.where(Identity.kind == identity.kind.value, Identity.name == identity.name)
        if expiring_within is not None:
            q = q.where(Credential.status == "active",
                        Credential.expires_at <= self.inventory.clock() + expiring_within)
        q = q.order_by(Credential.expires_at).limit(limit)
        async with self.inventory.db.read() as s:
            rows = (await s.execute(q)).all()
        return [_cert_view(c, f"{k}/{n}") for c, k, n in rows]

    async def certificate(self, serial: str) -> tuple[CertificateView, str]:
        async with self.inventory.db.read() as s:
            row = (await s.execute(select(Credential, Identity.kind, Identity.name).join(
                Identity, Identity.id == Credential.identity_id).where(
                Credential.serial == _norm_serial(serial),
                Credential.type == "certificate"))).first()
        if row is None:
            raise NotFound(f"no certificate with serial {serial}")
        return _cert_view(row[0], f"{row[1]}/{row[2]}"), row[0].pem or ""


@dataclass(frozen=True)
class _Bindings:
    fingerprint: str
    holder: tuple[str, str] | None

    def bound_identity(self, key_fingerprint: str) -> tuple[str, str] | None:
        return self.holder if key_fingerprint == self.fingerprint else None


def _due(path: Path, now: dt.datetime) -> bool:
    if not path.exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return now >= cert.not_valid_before_utc + life * 2 / 3


def _cert_view(c: Credential, ref: str) -> CertificateView:
    return CertificateView(c.serial or "", ref, c.fingerprint, c.profile, c.status,
                           c.not_before, c.expires_at, c.revoked_at, c.revocation_reason)




def _norm_serial(text: str) -> str:
    """Serials are stored as lower-case hex without leading zeros (``openssl`` prints them
    with colons or a 0x prefix; accept those too)."""
    return text.strip().lower().removeprefix("0x").replace(":", "").lstrip("0") or "0"
