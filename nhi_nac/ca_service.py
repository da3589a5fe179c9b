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

Speed (bench/ca.sh):

- **Enrollment is group-committed.** Requests that arrive while a batch is being written
  wait in a queue; the next batch checks each of them on its own (token, identity,
  owner, CSR, policy: each refusal goes to its own caller with its reason and stores
  nothing), reading tokens, key bindings and parents with prebuilt Core selects on one
  connection (each CSR parsed once, ``pki.parse_csr``), and writes
  the accepted ones in one transaction of a few Core statements, on SQLite in one
  worker-thread hop (aiosqlite costs several per statement). The tokens are burned by
  one conditional ``UPDATE ... RETURNING`` that re-checks, inside the transaction, that
  each is unused and unexpired and that its identity and owner are active: a token used
  twice at once is issued once, whichever batch or node the uses land in, and an
  identity suspended between the read and the write gets nothing.
  Under concurrent load a batch waits up to ``ENROLL_LINGER_SECONDS`` for as many callers
  as the last batch had: a batch's fixed cost (reads, transaction, thread hop) is worth
  several certificates, and without the wait eight clients split into two alternating
  batches of four (bench/ca: 2.5 ms -> 1.7 ms of server CPU per certificate).
- **Revocation is answered from memory**: revoked serials are kept in a dict (reloaded
  with every CRL, updated on revocation here, and on ``refresh`` when the outbox shows a
  revocation elsewhere); OCSP asks the database only whether a non-revoked serial exists.
  Responses to requests without a nonce are cached for ``OCSP_CACHE_SECONDS``; the cache
  is dropped on every revocation seen.
- **The CRL is signed off the event loop** (``asyncio.to_thread``), after the transaction
  that numbers it has committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from cryptography import x509
from cryptography.x509 import ReasonFlags
from sqlalchemy import bindparam, case, exists, func, insert, select, text, update
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import AsyncSession

import pki
from nhi_nac import audit
from nhi_nac.bootstrap_tokens import (
    BOOTSTRAP_PREFIX,
    MAX_TOKEN_LENGTH,
    check_active,
    token_digest,
)
from nhi_nac.config import Config
from nhi_nac.domain import (
    CERTIFICATE_PROFILE_FOR_KIND,
    IdentityRef,
    IdentityStatus,
    OwnerStatus,
)
from nhi_nac.errors import (
    Conflict,
    Forbidden,
    InternalError,
    InvalidInput,
    NhiError,
    NotFound,
    Unavailable,
)
from nhi_nac.inventory import Inventory, release_credential, revoke_credential
from nhi_nac.radius_service import TLS_DIR
from nhi_nac.storage import queries, sqlite_raw
from nhi_nac.storage.batched import BatchedLookup
from nhi_nac.storage.models import (
    Credential,
    EnrollmentToken,
    Identity,
    OutboxEvent,
    Owner,
    Setting,
    table_of,
)
from pki.enroll import fsync_directory

log = structlog.get_logger("nhi_nac.ca")

CA_DIR = "ca"
#: Scope labels ``dns`` or ``dns.<n>`` list the DNS names an identity may hold.
DNS_SCOPE_KEY = "dns"
SERVICE_KIND = "service"
RADIUS_SERVER_NAME = "radius"
API_SERVER_NAME = "api"
#: Under data_dir: the HTTPS certificate (with its chain) and key the service issues itself.
API_TLS_DIR = "api"
OCSP_RESPONDER_NAME = "ocsp"
#: Re-sign the CRL when less than this part of its validity is left.
CRL_REFRESH_FRACTION = 0.5
MAX_CSR_BYTES = 16 * 1024
#: Revoked rows indexed between two turns of the event loop (PostgreSQL): 500 rows are
#: about 2 ms; parts of 1,000 or more lived long enough to set off 50 ms full collections.
REVOKED_ROWS_PER_PART = 500
#: Enrollments checked and written in one transaction at most (group commit).
MAX_ENROLL_BATCH = 64
#: Seconds a batch waits for more callers when fewer are queued than the last batch had.
ENROLL_LINGER_SECONDS = 0.002
#: Enrollments waiting for a batch at most; beyond, new ones are refused (503-like).
MAX_ENROLL_QUEUE = 4096
#: Seconds a signed OCSP response to a request without a nonce is served again.
OCSP_CACHE_SECONDS = 60
#: Cached OCSP responses at most (the oldest is dropped first).
MAX_OCSP_CACHE = 10_000
#: The states ``cert list --status`` filters on and ``ca show`` counts.
CERTIFICATE_STATES = ("valid", "expired", "revoked", "held")
#: A certificate on hold (the one reversible revocation).
_HELD = func.coalesce(Credential.revocation_reason, "") == ReasonFlags.certificate_hold.value
#: Outbox event types after which the CRL is re-signed and revocations reloaded.
REVOCATION_EVENTS = ("certificate.revoked", "certificate.released", "identity.retired")



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
class PublishedCrl:
    """The CRL as served: both encodings, its validity (for HTTP caching) and an ETag."""

    der: bytes
    pem: bytes
    this_update: dt.datetime
    next_update: dt.datetime
    etag: str


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
        self._enroll_queue: list[_PendingEnrollment] = []
        self._enroll_task: asyncio.Task[None] | None = None
        #: Size of the last enrollment batch (how many callers the next one waits for).
        self._last_batch = 0
        #: While a batch waits for callers: settled when ``_linger_want`` are queued.
        self._batch_full: asyncio.Future[None] | None = None
        self._linger_want = 0
        self._pem_strings: tuple[str, str] | None = None
        #: Revoked serial -> its CRL entry (``pki.encode_entry``); None until first loaded.
        #: Bytes, not tuples: a map the garbage collector never walks, and each entry is
        #: encoded once, not on every CRL.
        self._revoked: dict[int, bytes] | None = None
        #: Entries put in ``_revoked`` while a CRL is being made: it read the database
        #: before them, so they are kept when its index replaces ``_revoked``.
        self._revoked_meanwhile: dict[int, bytes] = {}
        self._first_load: asyncio.Future[dict[int, bytes]] | None = None
        self._crl_signer: pki.CrlSigner | None = None
        #: OCSP request DER (no nonce) -> (expires, response DER).
        self._ocsp_cache: dict[bytes, tuple[dt.datetime, bytes]] = {}
        #: Serial (hex) -> its credential's (status, revoked_at, reason): one query for
        #: the OCSP requests of one moment.
        self._status_lookup: BatchedLookup[str, Any] = BatchedLookup(self._statuses)
        self._published: tuple[tuple[int, int, int], PublishedCrl] | None = None
        self._crl_lock = asyncio.Lock()
        #: publish_crl calls made, and how many of them the newest CRL covers (it was
        #: read from the database after they were made).
        self._crl_asked = 0
        self._crl_covered = 0

    @property
    def enrollments_waiting(self) -> int:
        """Enrollments queued for the database (``MAX_ENROLL_QUEUE`` at most)."""
        return len(self._enroll_queue)

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
        scheme = "https" if self.config.api_tls else "http"
        return f"{scheme}://{host}:{port}"

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
        self._forget_ca()
        return [f"CA created for trust domain {td} ({key_type or self.config.ca.key_type})"]

    async def make_room(self, now: dt.datetime, replace: bool) -> list[str]:
        """Before ``ca init`` or ``ca import`` writes a CA: none there, or (``replace``)
        the one there set aside in ``ca/replaced-<time>/``, as long as it has issued no
        certificate to an identity. Refused, changing nothing, otherwise: certificates
        it issued could neither renew against another CA nor be listed on its CRL."""
        if not self.initialised:
            return []
        issued = await self.inventory.db.run_read(
            lambda conn: conn.execute(_COUNT_CERTIFICATES).scalar_one())
        if issued:
            raise Conflict(
                f"the CA in {self.dir} has issued {issued} certificate(s) to identities; "
                "another CA would strand them (they could neither renew nor be listed on "
                "its CRL): replace the CA before the first enrollment")
        if not replace:
            raise Conflict(f"a CA already exists in {self.dir} (nothing issued yet): add "
                           "--replace to set it aside and put the new one in its place")
        return [f"the CA that was there is set aside in {self._set_aside(now)}"]

    async def import_issuing(self, cert_pem: bytes, key_pem: bytes, chain_pem: bytes,
                             now: dt.datetime, key_passphrase: bytes | None,
                             replace: bool = False) -> list[str]:
        """Bring your own issuing CA, in place of the one ``init`` made if ``replace``
        (see :meth:`make_room`). Refused, changing nothing, when it does not check out or
        ends before the service's own certificates would."""
        try:
            ca = pki.import_issuing_ca(cert_pem, key_pem, chain_pem, now,
                                       passphrase=key_passphrase,
                                       trust_domain=self.config.ca.trust_domain)
        except pki.PkiError as exc:
            raise InvalidInput(f"CA import refused: {exc}") from None
        left = ca.certificate.not_valid_after_utc - now
        needed = max(pki.get_profile(p).default_validity for p in _SERVICE_PROFILES)
        if left < needed:
            raise InvalidInput(
                f"CA import refused: the issuing CA ends in {left.days} days, and the "
                f"service's own certificates need {needed.days} ({', '.join(_SERVICE_PROFILES)})")
        done = await self.make_room(now, replace)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        passphrase = self._passphrase(create=True)
        _write(self.dir / "root.pem", ca.root_pem)
        _write(self.dir / "issuing.key", ca.key_pem(passphrase), 0o600)
        _write(self.dir / "chain.pem", ca.chain_pem)
        _write(self.dir / "issuing.pem", ca.certificate_pem)
        self._forget_ca()
        done.append(f"issuing CA {ca.certificate.subject.rfc4514_string()} imported")
        return done

    def renew_issuing(self, now: dt.datetime, *, root_key: Path | None = None,
                      cert_pem: bytes | None = None,
                      chain_pem: bytes | None = None) -> list[str]:
        """Extend the issuing CA's life without replacing it: the same name and key,
        certified again by the root (its key here, or ``root_key``, the copy ``ca
        export-root`` wrote), or from ``cert_pem`` (and ``chain_pem``) signed elsewhere
        for a CA brought in with ``ca import``. Everything it issued stays valid, on the
        same CRL and OCSP responder, and renews as before; new certificates may last
        until the new end. The certificate it replaces is kept beside it as
        ``issuing-until-<notAfter>.pem``. Refused, changing nothing, when the key or the
        root differs, or the new certificate would not end later."""
        ca = self.issuing_ca()
        try:
            if cert_pem is not None:
                renewed = pki.install_renewed_issuing_ca(
                    ca, cert_pem, chain_pem, now, trust_domain=self.config.ca.trust_domain)
            else:
                path = root_key or self.dir / "root.key"
                if not path.exists():
                    raise NotFound(
                        f"the root key is not at {path}: give the copy 'ca export-root' "
                        "wrote (--root-key FILE), or a renewal signed elsewhere (--cert)")
                signer = pki.load_private_key(path.read_bytes(), self._passphrase())
                renewed = pki.renew_issuing_ca(ca, signer, now)
        except pki.PkiError as exc:
            raise InvalidInput(f"issuing CA renewal refused: {exc}") from None
        old = ca.certificate.not_valid_after_utc
        _write(self.dir / f"issuing-until-{old:%Y%m%dT%H%M%SZ}.pem", ca.certificate_pem)
        # chain.pem first: until issuing.pem follows, the old certificate stays in force.
        _write(self.dir / "chain.pem", renewed.chain_pem)
        _write(self.dir / "issuing.pem", renewed.certificate_pem)
        fsync_directory(self.dir)
        self._forget_ca()
        new = renewed.certificate.not_valid_after_utc
        return [f"issuing CA {renewed.certificate.subject.rfc4514_string()} renewed with the "
                f"same key: valid until {new:%Y-%m-%dT%H:%M:%SZ} (was "
                f"{old:%Y-%m-%dT%H:%M:%SZ}); what it issued stays valid"]

    def _forget_ca(self) -> None:
        """What was loaded from a CA just replaced on disk is gone with it."""
        self.issuer, self.ocsp, self.crl = None, None, None
        self._crl_signer, self._pem_strings = None, None

    def _set_aside(self, now: dt.datetime) -> Path:
        """Move the CA's files (keys, certificates, CRL) into a new ``replaced-<time>``
        directory beside them; the passphrase stays (the new key is encrypted with it)."""
        kept = self.dir / f"replaced-{now:%Y%m%dT%H%M%S%fZ}"
        kept.mkdir(mode=0o700)
        for name in _CA_FILES:
            if (self.dir / name).exists():
                (self.dir / name).rename(kept / name)
        return kept

    def export_root(self, output: Path, offline: bool) -> None:
        """Write the encrypted root key (same passphrase) to ``output``, a new file (0600,
        written whole and synced). With ``offline`` the key here is removed only once that
        file is on disk and reads back the same. Refused, changing nothing, when the key
        is not here, ``output`` exists, or it cannot be written."""
        path = self.dir / "root.key"
        if not path.exists():
            raise NotFound("the root key is not on this machine (already offline?)")
        if output.exists() or output.is_symlink():
            raise Conflict(f"{output} exists; the root key is not written over a file")
        data = path.read_bytes()
        try:
            _write(output, data, 0o600)
            fsync_directory(output.parent)
            if output.read_bytes() != data:
                raise OSError(f"{output} does not read back as written")
        except OSError as exc:
            raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}; the root key "
                               f"stays in {self.dir}") from None
        if offline:
            path.unlink()
            fsync_directory(self.dir)

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
        # What was derived from the CA loaded before (renewed since: ``ca renew``).
        self._crl_signer, self._pem_strings = None, None
        base = self.public_base()
        self.issuer = pki.CertificateIssuer(ca, self.config.ca.trust_domain,
                                            crl_url=f"{base}/pki/v1/crl",
                                            ocsp_url=f"{base}/pki/v1/ocsp")
        ocsp_cert, ocsp_key = self.dir / "ocsp.pem", self.dir / "ocsp.key"
        if ocsp_cert.exists() and ocsp_key.exists():
            self.ocsp = pki.OcspResponder(
                cert, x509.load_pem_x509_certificate(ocsp_cert.read_bytes()),
                pki.load_private_key(ocsp_key.read_bytes(), passphrase), self._ocsp_lookup)
            self._ocsp_cache.clear()  # answers signed by a previous responder certificate
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

    def issuing_ca(self) -> pki.IssuingCa:
        """The issuing CA in use (certificate, chain, root), loaded on first use."""
        return self._issuer().ca

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
        names = self.config.api.tls_names
        api_cert = self.config.data_path / API_TLS_DIR / "server.pem"
        wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
        if names and (force or _due(api_cert, now) or _san_names(api_cert) != wanted):
            api_cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = pki.generate_private_key("p256")
            addresses = [n for n in names if _is_ip(n)]
            cert = issuer.issue(key.public_key(), SERVICE_KIND, API_SERVER_NAME, "api-server",
                                now, dns_names=[n for n in names if not _is_ip(n)],
                                ip_addresses=addresses)
            _write(api_cert.parent / "server.key", pki.private_key_pem(key), 0o600)
            _write(api_cert, cert.pem + issuer.ca.chain_pem)
            done.append(f"HTTPS certificate for {', '.join(names)} issued "
                        f"(until {cert.not_after:%Y-%m-%d})")
        if done:
            self.load()
        return done

    # -- issuance ---------------------------------------------------------------------

    async def enroll(self, token: str, csr_pem: bytes,
                     validity: dt.timedelta | None = None) -> IssuedBundle:
        """Token enrollment: the token picks the identity; the CSR only supplies the key.

        Concurrent calls are written together (see the module docstring); each gets its
        own certificate or its own refusal.
        """
        if not token.startswith(BOOTSTRAP_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            raise Forbidden("invalid bootstrap token")
        if len(self._enroll_queue) >= MAX_ENROLL_QUEUE:
            raise Unavailable(f"more than {MAX_ENROLL_QUEUE} enrollments waiting; retry")
        pending = _PendingEnrollment(token_digest(token), csr_pem, validity,
                                     asyncio.get_running_loop().create_future())
        self._enroll_queue.append(pending)
        full = self._batch_full
        if full is not None and len(self._enroll_queue) >= self._linger_want:
            _settle(full)
        task = self._enroll_task
        if task is None or task.done() or task.get_loop() is not pending.done.get_loop():
            self._enroll_task = asyncio.create_task(self._drain_enrollments())
        return await pending.done

    async def _drain_enrollments(self) -> None:
        """Write queued enrollments batch by batch until the queue is empty."""
        while self._enroll_queue:
            try:
                await self._linger()
            except BaseException:
                for p in self._enroll_queue:
                    p.done.cancel()
                self._enroll_queue.clear()
                raise
            batch = self._enroll_queue[:MAX_ENROLL_BATCH]
            self._last_batch = len(batch)
            del self._enroll_queue[:MAX_ENROLL_BATCH]
            try:
                await self._enroll_batch(batch)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch is told
                log.error("ca.enroll_batch_failed", requests=len(batch), exc_info=True)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(InternalError(
                            f"enrollment could not be stored: {type(exc).__name__}"))
            except BaseException:
                for p in (*batch, *self._enroll_queue):
                    p.done.cancel()
                self._enroll_queue.clear()
                raise

    async def _linger(self) -> None:
        """Under concurrent load, wait a moment for as many callers as the last batch had:
        a batch's reads, transaction and thread hop cost about as much as several
        certificates, so one batch of eight costs much less than two of four. A lone
        caller (last batch of one) never waits; ``enroll`` ends the wait when enough
        callers are queued, and ``ENROLL_LINGER_SECONDS`` bounds it."""
        want = min(self._last_batch, MAX_ENROLL_BATCH)
        if len(self._enroll_queue) >= want:
            return
        loop = asyncio.get_running_loop()
        full = self._batch_full = loop.create_future()
        self._linger_want = want
        timer = loop.call_later(ENROLL_LINGER_SECONDS, _settle, full)
        try:
            await full
        finally:
            timer.cancel()
            self._batch_full = None

    async def _enroll_batch(self, batch: Sequence[_PendingEnrollment]) -> None:
        issuer = self._issuer()
        db = self.inventory.db
        now = self.inventory.clock()
        # No shared snapshot needed: the write checks tokens and keys again.
        candidates, holders, parents = await db.run_read(
            lambda conn: _read_batch(conn, batch, now), transaction=False)
        accepted: list[tuple[_Candidate, pki.IssuedCertificate]] = []
        claimed: set[int] = set()
        for c in candidates:
            try:
                if c.token_id in claimed:
                    raise Forbidden("bootstrap token already used")
                if c.identity_id in parents:
                    c.pending.validity = child_validity(
                        c.profile, c.pending.validity, *parents[c.identity_id], now)
                cert = self._sign(issuer, c, holders, now)
            except NhiError as exc:
                c.pending.done.set_exception(exc)
                continue
            claimed.add(c.token_id)
            holders.setdefault(c.key_fingerprint, set()).add((c.kind, c.name))
            accepted.append((c, cert))
        if not accepted:
            return
        burned, bound = await self.inventory.db.run_write(
            lambda conn: _store_issued(conn, accepted, now), inline=True)
        for c, _cert in accepted:
            if c.token_id in bound:
                c.pending.done.set_exception(_bound_elsewhere(bound[c.token_id]))
        lost = [c for c, _ in accepted if c.token_id not in burned and c.token_id not in bound]
        if lost:
            # Used, expired, suspended or departed since the read above: tell why.
            again = await db.run_read(lambda conn: _token_rows(conn, [c.pending.token_hash
                                                                      for c in lost]))
            for c in lost:
                try:
                    _admit(c.pending, again.get(c.pending.token_hash), now)
                    raise Forbidden("bootstrap token already used")
                except NhiError as exc:
                    c.pending.done.set_exception(exc)
        chain, root = self._pems(issuer)
        for c, cert in accepted:
            if c.token_id in burned and not c.pending.done.done():
                c.pending.done.set_result(IssuedBundle(
                    c.ref, cert.pem.decode(), chain, root, format(cert.serial, "x"),
                    cert.not_after, cert.profile))

    def _sign(self, issuer: pki.CertificateIssuer, c: _Candidate,
              holders: dict[str, set[tuple[str, str]]], now: dt.datetime
              ) -> pki.IssuedCertificate:
        try:
            return issuer.issue_for_csr(
                c.csr, c.kind, c.name, c.profile, now, validity=c.pending.validity,
                allowed_dns_names=c.dns_names,
                key_bindings=_Holders(c.key_fingerprint, holders.get(c.key_fingerprint, set()),
                                      (c.kind, c.name)))
        except pki.PeerError as exc:
            raise InvalidInput(f"certificate refused: {getattr(exc, 'reason', exc)}") from None

    def _pems(self, issuer: pki.CertificateIssuer) -> tuple[str, str]:
        if self._pem_strings is None:
            self._pem_strings = issuer.ca.chain_pem.decode(), issuer.ca.root_pem.decode()
        return self._pem_strings

    def issue_on(self, conn: Connection, *, identity_id: int, kind: str, name: str,
                 scope: dict[str, Any], parent_id: int | None, csr_pem: bytes,
                 validity: dt.timedelta | None, now: dt.datetime, actor: str,
                 extra: dict[str, Any] | None = None) -> IssuedBundle:
        """Check the CSR, sign and store a certificate for an identity whose status the
        caller has checked, inside the caller's write transaction (``run_write``):
        profile, DNS names from scope, key bindings, the parent bound, the credential
        row, the identity's rotation time, the audit record and the event."""
        issuer = self._issuer()
        ref = f"{kind}/{name}"
        profile = CERTIFICATE_PROFILE_FOR_KIND.get(kind)
        if profile is None:
            raise InvalidInput(f"{kind} identities do not hold certificates")
        if len(csr_pem) > MAX_CSR_BYTES:
            raise InvalidInput(f"CSR larger than {MAX_CSR_BYTES} bytes")
        try:
            csr = pki.parse_csr(csr_pem)
        except (pki.PkiError, ValueError, TypeError) as exc:
            raise InvalidInput(f"CSR refused: {exc}") from None
        fp = csr.key_fingerprint
        if parent_id is not None:
            limit = _parent_certificates(conn, [identity_id]).get(identity_id)
            if limit is not None:
                validity = child_validity(profile, validity, *limit, now)
        dns = tuple(v for k, v in scope.items()
                    if k == DNS_SCOPE_KEY or k.startswith(DNS_SCOPE_KEY + "."))
        _lock_keys(conn, [fp])
        holders = _key_holders(conn, [fp])
        try:
            cert = issuer.issue_for_csr(
                csr, kind, name, profile, now, validity=validity, allowed_dns_names=dns,
                key_bindings=_Holders(fp, holders.get(fp, set()), (kind, name)))
        except pki.PeerError as exc:
            raise InvalidInput(f"certificate refused: {getattr(exc, 'reason', exc)}") from None
        new_serial = format(cert.serial, "x")
        _record_issued(conn, [(identity_id, ref, actor, cert, extra or {})], now)
        chain, root = self._pems(issuer)
        return IssuedBundle(ref, cert.pem.decode(), chain, root, new_serial, cert.not_after,
                            profile)

    async def renew(self, proof: bytes, validity: dt.timedelta | None = None) -> IssuedBundle:
        """Token-less renewal, proven by a request signed with the current key.

        One write transaction of Core statements (``Database.run_write``): the current
        certificate and its identity are read, the proof checked, the new certificate
        signed and stored, the old one marked rotated, audited and announced.
        """
        now = self.inventory.clock()
        issuer = self._issuer()
        try:
            serial = format(pki.renewal_proof_serial(proof), "x")
        except (pki.PkiError, ValueError, KeyError, TypeError):
            raise Forbidden("malformed renewal proof") from None

        def tx(conn: Connection) -> IssuedBundle:
            row = conn.execute(_RENEW_LOOKUP, {"serial": serial}).first()
            if row is None or row.pem is None:
                raise Forbidden("renewal refused: unknown certificate; enroll with a token")
            current = x509.load_pem_x509_certificate(row.pem.encode())
            try:
                request = pki.verify_renewal_proof(
                    proof, current, issuer.ca.certificate, now,
                    is_revoked=lambda _s: row.cred_status == "revoked")
            except pki.PkiError as exc:
                raise Forbidden(f"renewal refused: {exc}") from None
            ref = f"{row.kind}/{row.name}"
            check_active(ref, row.status, row.owner_status, row.owner)
            conn.execute(_MARK_CREDENTIAL_ROTATED, {"cid": row.cred_id, "now": now})
            return self.issue_on(conn, identity_id=row.id, kind=row.kind, name=row.name,
                                 scope=row.scope or {}, parent_id=row.parent_id,
                                 csr_pem=request.csr_pem, validity=validity, now=now,
                                 actor=f"renew:{ref}", extra={"renews": serial})

        return await self.inventory.db.run_write(tx)

    # -- revocation -------------------------------------------------------------------

    async def revoke(self, *, serial: str | None = None, identity: IdentityRef | None = None,
                     reason: str = "unspecified", actor: str) -> list[str]:
        """Revoke one certificate by serial, or the valid certificates of an identity and
        its descendants (``Inventory.revoke_certificates``); re-sign the CRL. A
        certificate already revoked takes the new reason only where
        ``pki.reason_may_change`` allows (keyCompromise, or a hold made permanent), and
        keeps its revocation date; by serial, anything else is refused as already revoked."""
        if identity is not None and serial is None:
            revoked = await self.inventory.revoke_certificates(identity, reason, actor=actor)
            self._ocsp_cache.clear()
            await self.publish_crl()
            return revoked
        if serial is None or identity is not None:
            raise InvalidInput("give a serial or an identity")
        try:
            flag = pki.parse_reason(reason)
        except pki.PkiError as exc:
            raise InvalidInput(str(exc)) from None
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            cred, owner, _ = await _certificate_and_owner(s, serial)
            old = cred.revocation_reason or "unspecified"
            if cred.status == "revoked" and not pki.reason_may_change(old, flag):
                raise Conflict(
                    f"certificate {cred.serial} is already revoked ({old}); a revoked "
                    "certificate may only be raised to keyCompromise, or a certificateHold "
                    "made permanent")
            await revoke_credential(s, cred, flag, identity=owner, actor=actor, now=now)
            at = cred.revoked_at or now
        self._remember_revoked(int(cred.serial or "0", 16), at, flag)
        self._ocsp_cache.clear()
        await self.publish_crl()
        return [cred.serial or ""]

    async def release(self, serial: str, *, actor: str) -> str:
        """Take a certificate off hold (RFC 5280 §5.3.1 ``certificateHold``, the one
        reversible reason): it is valid again, leaves the CRL (a full CRL simply no
        longer lists it; ``removeFromCRL`` is for delta CRLs), OCSP answers good, and
        RADIUS admits it again. Anything else revoked stays revoked; a certificate past
        its notAfter, or of a retired identity, is not released."""
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            cred, owner, identity_status = await _certificate_and_owner(s, serial)
            reason = cred.revocation_reason or "unspecified"
            if cred.status != "revoked" or reason != ReasonFlags.certificate_hold.value:
                held = f"revoked ({reason})" if cred.status == "revoked" else "not revoked"
                raise Conflict(f"certificate {cred.serial} is {held}: only a certificate "
                               "on hold (certificateHold) can be released")
            if cred.expires_at is not None and cred.expires_at <= now:
                raise Conflict(f"certificate {cred.serial} expired at "
                               f"{cred.expires_at.isoformat()}: there is nothing to release")
            if identity_status == IdentityStatus.RETIRED.value:
                raise Conflict(f"certificate {cred.serial} belongs to {owner}, which "
                               "is retired")
            await release_credential(s, cred, identity=owner, actor=actor, now=now)
        await self._released([cred.serial or ""])
        return cred.serial or ""

    async def release_identity(self, identity: IdentityRef, *, actor: str) -> list[str]:
        """Take every held certificate of ``identity`` and of its descendants off hold
        (``Inventory.release_certificates``): the counterpart of ``revoke(identity=…,
        reason="certificateHold")``. Returns the serials released, maybe none."""
        released = await self.inventory.release_certificates(identity, actor=actor)
        await self._released(released)
        return released

    async def _released(self, serials: Sequence[str]) -> None:
        if not serials:
            return  # nothing changed: the CRL in force stays
        for serial in serials:
            self._forget_revoked(int(serial or "0", 16))
        self._ocsp_cache.clear()
        await self.publish_crl()

    async def publish_crl(self) -> pki.SignedCrl:
        """Re-sign the CRL with every revoked certificate; the number always increases.

        The transaction only numbers the CRL; reading the revoked rows and signing run
        in worker threads, so neither the event loop nor the database write lock waits
        for them. Each entry is encoded once (``pki.encode_entry``) and kept; a CRL is
        the kept entries joined and signed. A CRL is written to disk only if no newer one
        (another process sharing the data directory) is there already.

        Callers that ask while a CRL is being signed share the next one: it reads the
        database after they asked, so it lists what they revoked before asking, and a
        burst of revocations costs two CRLs, not one each (at 100,000 entries each is
        about half a second of CPU).
        """
        issuer = self._issuer()
        self._crl_asked += 1
        ticket = self._crl_asked
        async with self._crl_lock:
            if self._crl_covered >= ticket and self.crl is not None:
                return self.crl
            covers = self._crl_asked
            now = self.inventory.clock()
            number = await self.inventory.db.run_write(_next_crl_number)
            # Read after the number is taken: a CRL is never older than its number says.
            self._revoked_meanwhile = {}
            revoked = await self._load_revoked(now)
            crl = await asyncio.to_thread(self._sign_and_write_crl, issuer.ca,
                                          list(revoked.values()), number, now)
            revoked.update(self._revoked_meanwhile)
            self._revoked = revoked
            self._ocsp_cache.clear()
            if self.crl is None or crl.number > self.crl.number:
                self.crl = crl
            self._crl_covered = covers
            return crl

    async def _load_revoked(self, now: dt.datetime) -> dict[int, bytes]:
        """Every revoked serial the CRL lists at ``now``, with its entry: kept from
        ``self._revoked`` when known, encoded when new. The rows never pile up: 200,000
        rows held at once cost 60–80 ms full garbage collections, which stop the event
        loop too. On SQLite they stream through a worker thread; elsewhere they come
        ``REVOKED_ROWS_PER_PART`` at a time from a server-side cursor, the loop free
        between parts (fetching 100,000 at once stopped it for 200–300 ms; now at most 7)."""
        known = self._revoked or {}
        db = self.inventory.db
        if db.is_sqlite:
            return await db.run_read_off_loop(
                lambda conn: _revocation_index(_revoked_rows(conn, now), now, known))
        index: dict[int, bytes] = {}
        async for part in db.read_in_parts(_REVOKED_ROWS, queries.listed_revoked_params(now),
                                           REVOKED_ROWS_PER_PART):
            index.update(_revocation_index(part, now, known))
        return index

    def _sign_and_write_crl(self, ca: pki.IssuingCa, entries: Sequence[bytes], number: int,
                            now: dt.datetime) -> pki.SignedCrl:
        """Worker thread: sign, write unless a newer CRL is on disk."""
        signer = self._crl_signer
        if signer is None or signer.ca is not ca:
            signer = self._crl_signer = pki.CrlSigner(ca)
        crl = signer.sign(entries, number=number, now=now)
        if _crl_number_on_disk(self.dir / "crl.der") < number:
            _write(self.dir / "crl.der", crl.der)
            _write(self.dir / "crl.pem", crl.pem)
        return crl

    async def current_crl(self) -> PublishedCrl:
        """The newest CRL on disk (any process sharing the data directory may have
        re-signed it, e.g. ``nhi-nac cert revoke``); one is published if none exists.
        Read again only when the file changes (a CRL of 100,000 entries is 3.6 MB)."""
        der_path = self.dir / "crl.der"
        try:
            stat = der_path.stat()  # noqa: ASYNC240 - one stat
        except FileNotFoundError:
            await self.publish_crl()
            stat = der_path.stat()  # noqa: ASYNC240
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._published
        if cached is not None and cached[0] == key:
            return cached[1]
        der = der_path.read_bytes()  # noqa: ASYNC240 - on change only
        pem = (self.dir / "crl.pem").read_bytes()  # noqa: ASYNC240
        parsed = x509.load_der_x509_crl(der)
        next_update = parsed.next_update_utc or parsed.last_update_utc
        published = PublishedCrl(der, pem, parsed.last_update_utc, next_update,
                                 '"' + hashlib.sha256(der).hexdigest()[:32] + '"')
        self._published = (key, published)
        return published

    async def refresh(self) -> None:
        """Scheduled: re-sign the CRL before nextUpdate, or after a revocation elsewhere."""
        last = self._last_event
        newest, changed = await self.inventory.db.run_read(
            lambda conn: queries.changed_since(conn, last, _REVOCATION_EVENT_AFTER))
        self._last_event = max(last, newest)
        if changed:
            self._ocsp_cache.clear()
        now = self.inventory.clock()
        crl = self.crl
        due = crl is None or now >= crl.this_update + (crl.next_update - crl.this_update) \
            * CRL_REFRESH_FRACTION
        if changed or due:
            await self.publish_crl()

    # -- OCSP -----------------------------------------------------------------------------

    def _ocsp_lookup(self, serial: int) -> pki.SerialStatus:
        # Only ``OcspResponder.respond`` calls this, which ``ocsp_response`` no longer uses
        # for a request it can parse; memory alone cannot tell good from never issued.
        hit = (self._revoked or {}).get(serial)
        if hit is not None:
            return _revoked_status(hit)
        return pki.SerialStatus(pki.CertStatus.UNKNOWN)

    async def ocsp_response(self, request_der: bytes) -> bytes:
        if self.ocsp is None:
            self.load()
        responder = self.ocsp
        if responder is None:
            raise InternalError("no OCSP responder certificate: run 'nhi-nac init'")
        now = self.inventory.clock()
        cached = self._ocsp_cache.get(request_der)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            request, nonce = responder.parse_request(request_der)
        except pki.MalformedOcspRequest:
            return responder.respond(request_der, now)
        if not responder.is_ours(request):
            return pki.ocsp.UNAUTHORIZED
        status = await self.serial_status(request.serial_number)
        response = responder.build_response(request, nonce, status, now)
        if nonce is None:
            # Without a nonce the same answer may be replayed (RFC 6960 §2.5 allows
            # pre-produced responses); it is dropped on every revocation seen.
            if len(self._ocsp_cache) >= MAX_OCSP_CACHE:
                del self._ocsp_cache[next(iter(self._ocsp_cache))]
            self._ocsp_cache[request_der] = (now + dt.timedelta(seconds=OCSP_CACHE_SECONDS),
                                             response)
        return response

    def is_revoked(self, serial: int) -> bool | None:
        """From memory: whether ``serial`` is revoked; None before revocations are loaded."""
        if self._revoked is None:
            return None
        return serial in self._revoked

    async def serial_status(self, serial: int) -> pki.SerialStatus:
        if self._revoked is None:
            # The first requests after start share one load (100,000 rows: about 0.4 s).
            if self._first_load is None:
                self._first_load = asyncio.ensure_future(
                    self._load_revoked(self.inventory.clock()))
            try:
                loaded = await asyncio.shield(self._first_load)
            except Exception:
                self._first_load = None  # the next request tries again
                raise
            if self._revoked is None:
                self._revoked = loaded
        hit = self._revoked.get(serial)
        if hit is not None:
            return _revoked_status(hit)
        # Not revoked as far as this process knows: ask whether we issued it at all (and
        # pick up a revocation made elsewhere that ``refresh`` has not seen yet).
        row = await self._status_lookup.get(format(serial, "x"))
        if row is None:
            return pki.SerialStatus(pki.CertStatus.UNKNOWN)
        if row.status == "revoked":
            at = row.revoked_at or self.inventory.clock()
            reason = ReasonFlags(row.revocation_reason or "unspecified")
            self._remember_revoked(serial, at, reason)
            return pki.SerialStatus(pki.CertStatus.REVOKED, at, reason)
        return pki.SerialStatus(pki.CertStatus.GOOD)

    def _remember_revoked(self, serial: int, at: dt.datetime, reason: ReasonFlags) -> None:
        """A revocation already committed, into the in-memory index (once loaded)."""
        if self._revoked is None:
            return
        entry = self._revoked[serial] = pki.encode_entry(serial, at, reason)
        self._revoked_meanwhile[serial] = entry

    def _forget_revoked(self, serial: int) -> None:
        """A release already committed: out of the in-memory index."""
        if self._revoked is not None:
            self._revoked.pop(serial, None)
        self._revoked_meanwhile.pop(serial, None)

    async def _statuses(self, serials: Sequence[str]) -> dict[str, Any]:
        rows = await self.inventory.db.run_read(
            lambda conn: conn.execute(_STATUS_BY_SERIALS, {"serials": list(serials)}).all(),
            transaction=False)
        return {r.serial: r for r in rows}

    # -- listing ----------------------------------------------------------------------------

    async def certificates(self, identity: IdentityRef | None = None,
                           expiring_within: dt.timedelta | None = None,
                           limit: int = 1000, status: str | None = None
                           ) -> list[CertificateView]:
        """Certificates issued to identities, soonest to end first: of ``identity``, valid
        and ending within ``expiring_within``, and in one state (``CERTIFICATE_STATES``:
        ``valid``, ``expired``, ``revoked`` for good, ``held`` on hold)."""
        q = select(Credential, Identity.kind, Identity.name).join(
            Identity, Identity.id == Credential.identity_id).where(
            Credential.type == "certificate")
        if identity is not None:
            q = q.where(Identity.kind == identity.kind.value, Identity.name == identity.name)
        now = self.inventory.clock()
        if status is not None:
            if status not in CERTIFICATE_STATES:
                raise InvalidInput(f"unknown certificate state {status!r} "
                                   f"({', '.join(CERTIFICATE_STATES)})")
            q = q.where({
                "valid": (Credential.status == "active") & queries.unexpired(now),
                "expired": (Credential.status == "active") & ~queries.unexpired(now),
                "revoked": (Credential.status == "revoked") & ~_HELD,
                "held": _HELD,
            }[status])
        if expiring_within is not None:
            # Still valid, and not for long: not those long expired (a workload renewed
            # daily leaves one a day), which would crowd out the ones about to lapse, nor
            # those a renewal has superseded (the identity already holds the next one).
            q = q.where(Credential.status == "active", Credential.expires_at > now,
                        Credential.expires_at <= now + expiring_within,
                        ~queries.SUPERSEDED_CERTIFICATE)
        q = q.order_by(Credential.expires_at).limit(limit)
        async with self.inventory.db.read() as s:
            rows = (await s.execute(q)).all()
        return [_cert_view(c, f"{k}/{n}", now) for c, k, n in rows]

    async def certificate_counts(self, now: dt.datetime) -> dict[str, int]:
        """Certificates issued to identities, by state (``CERTIFICATE_STATES``): ``valid``,
        ``expired`` (not revoked), ``revoked`` (for good) and ``held`` (certificateHold)."""
        state = case(
            (_HELD, "held"),
            (Credential.status == "revoked", "revoked"),
            (Credential.expires_at <= now, "expired"), else_="valid")
        rows = await self.inventory.db.run_read(lambda conn: conn.execute(
            select(state, func.count()).where(Credential.type == "certificate")
            .group_by(state)).all())
        counts = dict.fromkeys(CERTIFICATE_STATES, 0)
        counts.update({str(name): int(n) for name, n in rows})
        return counts

    async def certificate(self, serial: str) -> tuple[CertificateView, str]:
        async with self.inventory.db.read() as s:
            row = (await s.execute(select(Credential, Identity.kind, Identity.name).join(
                Identity, Identity.id == Credential.identity_id).where(
                Credential.serial == _norm_serial(serial),
                Credential.type == "certificate"))).first()
        if row is None:
            raise NotFound(f"no certificate with serial {serial}")
        return _cert_view(row[0], f"{row[1]}/{row[2]}", self.inventory.clock()), \
            row[0].pem or ""


@dataclass(frozen=True, slots=True)
class _Holders:
    """Key bindings for one request: the identities already holding its key."""

    fingerprint: str
    holders: Collection[tuple[str, str]]
    requester: tuple[str, str]

    def bound_identity(self, key_fingerprint: str) -> tuple[str, str] | None:
        if key_fingerprint != self.fingerprint:
            return None
        others = sorted(h for h in self.holders if h != self.requester)
        if others:
            return others[0]
        return self.requester if self.holders else None


@dataclass(eq=False)
class _PendingEnrollment:
    token_hash: str
    csr_pem: bytes
    validity: dt.timedelta | None
    done: asyncio.Future[IssuedBundle] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An enrollment whose token and identity passed; its CSR is parsed, not yet checked."""

    pending: _PendingEnrollment
    token_id: int
    identity_id: int
    kind: str
    name: str
    profile: str
    dns_names: tuple[str, ...]
    csr: pki.ParsedCsr
    parent_id: int | None

    @property
    def key_fingerprint(self) -> str:
        return self.csr.key_fingerprint

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


#: The profiles of the certificates the service issues itself on import and at start.
_SERVICE_PROFILES = ("ocsp-responder", "radius-server")
#: The files of one CA in its directory (``import_issuing`` sets them aside together).
_CA_FILES = ("root.pem", "root.key", "issuing.pem", "issuing.key", "chain.pem", "ocsp.pem",
             "ocsp.key", "crl.der", "crl.pem")
_COUNT_CERTIFICATES = select(func.count()).select_from(Credential).where(
    Credential.type == "certificate")
# Core statements, built once: the enrollment batch is a few of these whatever its size.
_ENROLL_TOKENS = (
    select(EnrollmentToken.id.label("token_id"), EnrollmentToken.token_hash,
           EnrollmentToken.expires_at, EnrollmentToken.used_at,
           Identity.id.label("identity_id"), Identity.kind, Identity.name, Identity.status,
           Identity.scope, Identity.parent_id, Owner.status.label("owner_status"),
           Owner.email.label("owner"))
    .join(Identity, Identity.id == EnrollmentToken.identity_id)
    .join(Owner, Owner.id == Identity.owner_id)
    .where(EnrollmentToken.token_hash.in_(bindparam("hashes", expanding=True)))
)
_KEY_HOLDERS = (
    select(Credential.key_fingerprint, Identity.kind, Identity.name)
    .join(Identity, Identity.id == Credential.identity_id)
    .where(Credential.key_fingerprint.in_(bindparam("fps", expanding=True)))
)
_TOKENS = table_of(EnrollmentToken)
_CONSUME_TOKENS = (
    update(_TOKENS)
    .where(_TOKENS.c.id.in_(bindparam("ids", expanding=True)), _TOKENS.c.used_at.is_(None),
           _TOKENS.c.expires_at > bindparam("now"),
           exists().where(Identity.id == _TOKENS.c.identity_id,
                          Identity.status == IdentityStatus.ACTIVE.value,
                          Owner.id == Identity.owner_id,
                          Owner.status == OwnerStatus.ACTIVE.value))
    .values(used_at=bindparam("now"))
    .returning(_TOKENS.c.id)
)
_IDENTITIES = table_of(Identity)
_PARENT = _IDENTITIES.alias("parent")
_CREDS = table_of(Credential)
_PARENT_CERTIFICATES = (
    select(_IDENTITIES.c.id, _PARENT.c.kind, _PARENT.c.name,
           select(func.max(_CREDS.c.expires_at))
           .where(_CREDS.c.identity_id == _PARENT.c.id, _CREDS.c.type == "certificate",
                  _CREDS.c.status == "active")
           .scalar_subquery())
    .join(_PARENT, _PARENT.c.id == _IDENTITIES.c.parent_id)
    .where(_IDENTITIES.c.id.in_(bindparam("ids", expanding=True)))
)
_MARK_ROTATED = (
    update(_IDENTITIES)
    .where(_IDENTITIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(last_rotated_at=bindparam("now"))
)
_INSERT_CREDENTIAL = insert(table_of(Credential))
_MARK_CREDENTIAL_ROTATED = (update(_CREDS).where(_CREDS.c.id == bindparam("cid"))
                            .values(last_rotated_at=bindparam("now")))
_RENEW_LOOKUP = (
    select(Credential.id.label("cred_id"), Credential.pem,
           Credential.status.label("cred_status"), Identity.id, Identity.kind, Identity.name,
           Identity.status, Identity.scope, Identity.parent_id,
           Owner.status.label("owner_status"), Owner.email.label("owner"))
    .join(Identity, Identity.id == Credential.identity_id)
    .join(Owner, Owner.id == Identity.owner_id)
    .where(Credential.serial == bindparam("serial"), Credential.type == "certificate")
)
_INSERT_EVENT = insert(table_of(OutboxEvent))
#: PostgreSQL: every row of ``_record_issued`` in one statement (data-modifying CTEs
#: over array parameters, rows in the order given); the audit records' action, the
#: events' type and the credentials' type, status and NULLs are those of the Core twin.
_PG_RECORD_ISSUED = text("""
WITH creds AS (
  INSERT INTO credentials (identity_id, type, serial, fingerprint, key_fingerprint, profile,
                           status, created_at, last_rotated_at, not_before, expires_at,
                           revoked_at, revocation_reason, pem)
  SELECT c.identity_id, 'certificate', c.serial, c.fingerprint, c.key_fingerprint, c.profile,
         'active', CAST(:now AS timestamp), NULL, c.not_before, c.not_after, NULL, NULL, c.pem
  FROM unnest(CAST(:c_identity AS integer[]), CAST(:c_serial AS varchar[]),
              CAST(:c_fingerprint AS varchar[]), CAST(:c_key AS varchar[]),
              CAST(:c_profile AS varchar[]), CAST(:c_not_before AS timestamp[]),
              CAST(:c_not_after AS timestamp[]), CAST(:c_pem AS text[]))
       WITH ORDINALITY AS c(identity_id, serial, fingerprint, key_fingerprint, profile,
                            not_before, not_after, pem, n)
  ORDER BY c.n
), rotated AS (
  UPDATE identities SET last_rotated_at = CAST(:now AS timestamp)
  WHERE id = ANY(CAST(:rotated AS integer[]))
), events AS (
  INSERT INTO event_outbox (event_id, type, at, payload, published_at)
  SELECT e.event_id, 'certificate.issued', CAST(:now AS timestamp), CAST(e.payload AS json),
         NULL
  FROM unnest(CAST(:e_id AS varchar[]), CAST(:e_payload AS text[]))
       WITH ORDINALITY AS e(event_id, payload, n)
  ORDER BY e.n
), records AS (
  INSERT INTO audit_log (seq, at, actor, action, target, "before", "after", prev_hash, hash)
  SELECT a.seq, CAST(:now AS timestamp), a.actor, 'certificate.issue', a.target, NULL,
         a.after, a.prev_hash, a.hash
  FROM unnest(CAST(:a_seq AS bigint[]), CAST(:a_actor AS varchar[]),
              CAST(:a_target AS varchar[]), CAST(:a_after AS text[]),
              CAST(:a_prev AS varchar[]), CAST(:a_hash AS varchar[]))
       AS a(seq, actor, target, after, prev_hash, hash)
)
INSERT INTO audit_head (id, seq, hash) VALUES (1, :seq, :tip)
ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash
""")
# The same statements as raw SQLite (storage.sqlite_raw; IN lists filled with .format).
_SQLITE_ENROLL_TOKENS = (
    "SELECT t.id, t.token_hash, t.expires_at, t.used_at, i.id, i.kind, i.name, i.status, "
    "i.scope, i.parent_id, o.status, o.email FROM enrollment_tokens t "
    "JOIN identities i ON i.id = t.identity_id JOIN owners o ON o.id = i.owner_id "
    "WHERE t.token_hash IN ({})")
_SQLITE_KEY_HOLDERS = (
    "SELECT c.key_fingerprint, i.kind, i.name FROM credentials c "
    "JOIN identities i ON i.id = c.identity_id WHERE c.key_fingerprint IN ({})")
_SQLITE_CONSUME_TOKENS = (
    "UPDATE enrollment_tokens SET used_at = ? WHERE id IN ({}) AND used_at IS NULL "
    "AND expires_at > ? AND EXISTS (SELECT 1 FROM identities i JOIN owners o "
    "ON o.id = i.owner_id WHERE i.id = enrollment_tokens.identity_id "
    "AND i.status = ? AND o.status = ?) RETURNING id")
_SQLITE_INSERT_CREDENTIAL = (
    "INSERT INTO credentials (identity_id, type, serial, fingerprint, key_fingerprint, "
    "profile, status, created_at, last_rotated_at, not_before, expires_at, revoked_at, "
    "revocation_reason, pem) VALUES (?, 'certificate', ?, ?, ?, ?, 'active', ?, NULL, ?, ?, "
    "NULL, NULL, ?)")
_SQLITE_MARK_ROTATED = "UPDATE identities SET last_rotated_at = ? WHERE id IN ({})"
_SQLITE_INSERT_EVENT = ("INSERT INTO event_outbox (event_id, type, at, payload, published_at) "
                        "VALUES (?, 'certificate.issued', ?, ?, NULL)")
_REVOKED_ROWS = select(Credential.serial, Credential.revoked_at,
                       Credential.revocation_reason).where(queries.LISTED_REVOKED)
_STATUS_BY_SERIALS = select(Credential.serial, Credential.status, Credential.revoked_at,
                            Credential.revocation_reason).where(
    Credential.serial.in_(bindparam("serials", expanding=True)),
    Credential.type == "certificate")
_SETTINGS = table_of(Setting)
_CRL_NUMBER = select(_SETTINGS.c.value).where(_SETTINGS.c.key == "crl_number").with_for_update()
# For queries.changed_since: exact types, not prefixes.
_REVOCATION_EVENT_AFTER = select(OutboxEvent.id).where(
    OutboxEvent.id > bindparam("after"), OutboxEvent.id <= bindparam("upto"),
    OutboxEvent.type.in_(REVOCATION_EVENTS)).limit(1)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _admit(p: _PendingEnrollment, row: Any, now: dt.datetime) -> _Candidate:
    """Token, identity and owner checks, then parse the CSR; refusals raise with the reason.

    Reuse, expiry and an unknown token are told apart here (the reason is what the
    caller logs), in the order ``consume_bootstrap_token`` checks them.
    """
    if row is None:
        raise Forbidden("invalid bootstrap token")
    if row.used_at is not None:
        raise Forbidden("bootstrap token already used")
    if row.expires_at <= now:
        raise Forbidden("bootstrap token expired")
    ref = f"{row.kind}/{row.name}"
    check_active(ref, row.status, row.owner_status, row.owner)
    profile = CERTIFICATE_PROFILE_FOR_KIND.get(row.kind)
    if profile is None:
        raise InvalidInput(f"{row.kind} identities do not hold certificates")
    if len(p.csr_pem) > MAX_CSR_BYTES:
        raise InvalidInput(f"CSR larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = pki.parse_csr(p.csr_pem)
    except (pki.PkiError, ValueError, TypeError) as exc:
        raise InvalidInput(f"CSR refused: {exc}") from None
    dns = tuple(v for k, v in (row.scope or {}).items()
                if k == DNS_SCOPE_KEY or k.startswith(DNS_SCOPE_KEY + "."))
    return _Candidate(p, row.token_id, row.identity_id, row.kind, row.name, profile, dns, csr,
                      row.parent_id)


def child_validity(profile: str, requested: dt.timedelta | None, parent: str,
                   parent_not_after: dt.datetime | None, now: dt.datetime) -> dt.timedelta:
    """A child identity's certificate never outlives its parent's: a request beyond the
    parent's remaining life is refused with the reason; no request gets the profile
    default, shortened to what the parent has left."""
    if parent_not_after is None or parent_not_after <= now:
        raise Forbidden(f"parent {parent} holds no valid certificate; a child's "
                        f"certificate cannot outlive its parent's")
    remaining = parent_not_after - now
    if requested is not None:
        if requested > remaining:
            raise InvalidInput(f"a child certificate cannot outlive its parent's: "
                               f"{int(requested.total_seconds())}s asked, {parent}'s "
                               f"certificate ends in {int(remaining.total_seconds())}s")
        return requested
    return min(pki.get_profile(profile).default_validity, remaining)


def _parent_certificates(conn: Connection, identity_ids: Sequence[int]
                         ) -> dict[int, tuple[str, dt.datetime | None]]:
    """For each identity with a parent: (parent ref, the parent's latest active
    certificate's notAfter or None)."""
    found: dict[int, tuple[str, dt.datetime | None]] = {}
    if identity_ids:
        for iid, kind, name, not_after in conn.execute(
                _PARENT_CERTIFICATES, {"ids": list(identity_ids)}):
            found[iid] = (f"{kind}/{name}", not_after)
    return found


def _read_batch(conn: Connection, batch: Sequence[_PendingEnrollment], now: dt.datetime
                ) -> tuple[list[_Candidate], dict[str, set[tuple[str, str]]],
                           dict[int, tuple[str, dt.datetime | None]]]:
    """What a batch is checked against, on one connection: the tokens with their identity
    and owner (each refusal goes to its caller here), then, for the admitted, the
    identities already holding their keys and their parents' certificates."""
    tokens = _token_rows(conn, list({p.token_hash for p in batch}))
    candidates: list[_Candidate] = []
    for p in batch:
        try:
            candidates.append(_admit(p, tokens.get(p.token_hash), now))
        except NhiError as exc:
            p.done.set_exception(exc)
    holders = _key_holders(conn, sorted({c.key_fingerprint for c in candidates}))
    # Most identities have no parent: then no third read.
    parents = _parent_certificates(conn, [c.identity_id for c in candidates
                                          if c.parent_id is not None])
    return candidates, holders, parents


#: Stands in for a NULL that a NOT NULL column cannot hold (keeps the types exact).
_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


class _TokenRow(NamedTuple):
    """A bootstrap token with its identity and owner, as the enrollment batch reads it."""

    token_id: int
    token_hash: str
    expires_at: dt.datetime
    used_at: dt.datetime | None
    identity_id: int
    kind: str
    name: str
    status: str
    scope: dict[str, Any]
    parent_id: int | None
    owner_status: str
    owner: str


def _token_rows(conn: Connection, hashes: Sequence[str]) -> dict[str, _TokenRow]:
    cur = sqlite_raw.cursor(conn)
    if cur is None:
        return _token_rows_core(conn, hashes)
    try:
        rows = cur.execute(_SQLITE_ENROLL_TOKENS.format(sqlite_raw.marks(len(hashes))),
                           hashes).fetchall()
    finally:
        cur.close()
    at = sqlite_raw.from_db_time
    return {r[1]: _TokenRow(r[0], r[1], at(r[2]) or _NEVER, at(r[3]), r[4], r[5], r[6], r[7],
                            json.loads(r[8]), r[9], r[10], r[11]) for r in rows}


def _token_rows_core(conn: Connection, hashes: Sequence[str]) -> dict[str, _TokenRow]:
    return {r.token_hash: _TokenRow(*r)
            for r in conn.execute(_ENROLL_TOKENS, {"hashes": list(hashes)})}


def _key_holders(conn: Connection, fingerprints: Sequence[str]
                 ) -> dict[str, set[tuple[str, str]]]:
    holders: dict[str, set[tuple[str, str]]] = {}
    if not fingerprints:
        return holders
    cur = sqlite_raw.cursor(conn)
    if cur is None:
        rows: Iterable[Any] = conn.execute(_KEY_HOLDERS, {"fps": list(fingerprints)})
    else:
        try:
            rows = cur.execute(_SQLITE_KEY_HOLDERS.format(sqlite_raw.marks(len(fingerprints))),
                               fingerprints).fetchall()
        finally:
            cur.close()
    for fp, kind, name in rows:
        holders.setdefault(fp or "", set()).add((kind, name))
    return holders


def _store_issued(conn: Connection,
                  accepted: Sequence[tuple[_Candidate, pki.IssuedCertificate]],
                  now: dt.datetime) -> tuple[set[int], dict[int, str]]:
    """Burn the tokens, then write what was issued for those burned: credential rows,
    identities' last rotation, audit records and events. Returns the burned token ids,
    and the tokens refused because their key is now bound to another identity (with
    that identity).

    The keys are bound here, not only at the batch's read: under a lock per key
    (:func:`_lock_keys`) the holders are read again, so of two identities enrolling one
    key at once on two nodes (or API processes) exactly one gets it. The burn is one
    conditional UPDATE that re-checks, inside this transaction, that each token is
    unused and unexpired and its identity and owner are active: of two uses of one
    token (two batches, two nodes) exactly one finds it unused.
    """
    fingerprints = sorted({c.key_fingerprint for c, _ in accepted})
    _lock_keys(conn, fingerprints)
    holders = _key_holders(conn, fingerprints)
    bound: dict[int, str] = {}
    free: list[tuple[_Candidate, pki.IssuedCertificate]] = []
    for c, cert in accepted:
        others = sorted(h for h in holders.get(c.key_fingerprint, ()) if h != (c.kind, c.name))
        if others:
            bound[c.token_id] = f"{others[0][0]}/{others[0][1]}"
        else:
            free.append((c, cert))
    burned = _consume_tokens(conn, [c.token_id for c, _ in free], now) if free else set()
    _record_issued(conn, [(c.identity_id, c.ref, f"enroll:{c.ref}", cert, {})
                          for c, cert in free if c.token_id in burned], now)
    return burned, bound


def _bound_elsewhere(ref: str) -> InvalidInput:
    return InvalidInput(f"certificate refused: the CSR's public key is already bound to "
                        f"another identity ({ref})")


#: PostgreSQL advisory lock class of public keys being bound ("nhik" in ASCII); the
#: two-key form, whose key space does not overlap the one-key form's (governance scan).
KEY_LOCK_CLASS = 0x6E68696B
_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(:cls, k) FROM "
    "(SELECT DISTINCT k FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS ordered")


def _lock_keys(conn: Connection, fingerprints: Sequence[str]) -> None:
    """On PostgreSQL, lock each public key (by its SPKI SHA-256) until this transaction
    ends, in one order, so that binding a key and reading who holds it are one step
    across nodes. On SQLite the database's single writer already makes them one."""
    if conn.dialect.name != "postgresql" or not fingerprints:
        return
    keys = [int.from_bytes(bytes.fromhex(fp[:8]), "big", signed=True) for fp in fingerprints]
    conn.execute(_LOCK_KEYS, {"cls": KEY_LOCK_CLASS, "keys": keys}).all()


def _record_issued(conn: Connection,
                   issued: Sequence[tuple[int, str, str, pki.IssuedCertificate, dict[str, Any]]],
                   now: dt.datetime) -> None:
    """Store certificates just signed, each as ``(identity id, KIND/NAME, actor,
    certificate, extra audit details)``: the credential rows, the identities' last
    rotation, one audit record and one ``certificate.issued`` event each.

    On SQLite in raw ``sqlite3`` statements (``storage.sqlite_raw``); on PostgreSQL in
    one statement after the audit head's lock (:func:`_record_issued_pg`); the Core
    statements of :func:`_record_issued_core` are what both must write."""
    if not issued:
        return
    cur = sqlite_raw.cursor(conn)
    if cur is not None:
        try:
            _record_issued_sqlite(cur, conn, issued, now)
        finally:
            cur.close()
    elif conn.dialect.name == "postgresql":
        _record_issued_pg(conn, issued, now)
    else:
        _record_issued_core(conn, issued, now)


def _issued_details(issued: Sequence[tuple[int, str, str, pki.IssuedCertificate,
                                           dict[str, Any]]]
                    ) -> list[tuple[str, str, dict[str, Any]]]:
    """(KIND/NAME, actor, what the audit record and the event say) of each certificate."""
    return [(ref, actor, {"serial": format(cert.serial, "x"), "profile": cert.profile,
                          "not_after": cert.not_after.isoformat(), **extra})
            for _id, ref, actor, cert, extra in issued]


def _record_issued_core(conn: Connection,
                        issued: Sequence[tuple[int, str, str, pki.IssuedCertificate,
                                               dict[str, Any]]],
                        now: dt.datetime) -> None:
    details = _issued_details(issued)
    conn.execute(_INSERT_CREDENTIAL, [
        {"identity_id": identity_id, "type": "certificate",
         "serial": format(cert.serial, "x"), "fingerprint": cert.fingerprint_sha256,
         "key_fingerprint": cert.key_fingerprint, "profile": cert.profile,
         "status": "active", "created_at": now, "last_rotated_at": None,
         "not_before": cert.not_before, "expires_at": cert.not_after, "revoked_at": None,
         "revocation_reason": None, "pem": cert.pem.decode()}
        for identity_id, _ref, _actor, cert, _extra in issued])
    conn.execute(_MARK_ROTATED, {"ids": sorted({i[0] for i in issued}), "now": now})
    conn.execute(_INSERT_EVENT, [
        {"event_id": str(uuid.uuid4()), "type": "certificate.issued", "at": now,
         "payload": {"identity": ref, **after}, "published_at": None}
        for ref, _actor, after in details])
    audit.append_many_sync(conn, [(actor, "certificate.issue", ref, None, after)
                                  for ref, actor, after in details], now)


def _record_issued_sqlite(cur: Any, conn: Connection,
                          issued: Sequence[tuple[int, str, str, pki.IssuedCertificate,
                                                 dict[str, Any]]],
                          now: dt.datetime) -> None:
    details = _issued_details(issued)
    identity_ids = sorted({i[0] for i in issued})
    at, t = sqlite_raw.db_time(now), sqlite_raw.db_time
    cur.executemany(_SQLITE_INSERT_CREDENTIAL, [
        (identity_id, format(cert.serial, "x"), cert.fingerprint_sha256,
         cert.key_fingerprint, cert.profile, at, t(cert.not_before),
         t(cert.not_after), cert.pem.decode())
        for identity_id, _ref, _actor, cert, _extra in issued])
    cur.execute(_SQLITE_MARK_ROTATED.format(sqlite_raw.marks(len(identity_ids))),
                [at, *identity_ids])
    cur.executemany(_SQLITE_INSERT_EVENT, [
        (str(uuid.uuid4()), at, json.dumps({"identity": ref, **after}))
        for ref, _actor, after in details])
    audit.append_many_sync(conn, [(actor, "certificate.issue", ref, None, after)
                                  for ref, actor, after in details], now)


def _pg_time(value: dt.datetime) -> dt.datetime:
    """An aware datetime as ``UtcDateTime`` binds it on PostgreSQL (naive UTC), for a
    ``text()`` statement, which has no column types to do it."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _record_issued_pg(conn: Connection,
                      issued: Sequence[tuple[int, str, str, pki.IssuedCertificate,
                                             dict[str, Any]]],
                      now: dt.datetime) -> None:
    """:func:`_record_issued_core` in two round trips instead of six: the audit head's
    lock (the chain's records hash what comes before them), then one statement that
    inserts the credential rows, marks the identities rotated, inserts the events and
    the audit records and moves the head, every list an array parameter. Each round
    trip through SQLAlchemy and asyncpg costs more than the rows it writes."""
    details = _issued_details(issued)
    records, seq, tip = audit.lock_and_chain(
        conn, [(actor, "certificate.issue", ref, None, after) for ref, actor, after in details],
        now)
    certs = [(identity_id, cert) for identity_id, _ref, _actor, cert, _extra in issued]
    conn.execute(_PG_RECORD_ISSUED, {
        "now": _pg_time(now),
        "c_identity": [i for i, _ in certs],
        "c_serial": [format(c.serial, "x") for _, c in certs],
        "c_fingerprint": [c.fingerprint_sha256 for _, c in certs],
        "c_key": [c.key_fingerprint for _, c in certs],
        "c_profile": [c.profile for _, c in certs],
        "c_not_before": [_pg_time(c.not_before) for _, c in certs],
        "c_not_after": [_pg_time(c.not_after) for _, c in certs],
        "c_pem": [c.pem.decode() for _, c in certs],
        "rotated": sorted({i for i, _ in certs}),
        "e_id": [str(uuid.uuid4()) for _ in details],
        "e_payload": [json.dumps({"identity": ref, **after}) for ref, _a, after in details],
        "a_seq": [r["seq"] for r in records],
        "a_actor": [r["actor"] for r in records],
        "a_target": [r["target"] for r in records],
        "a_after": [r["after"] for r in records],
        "a_prev": [r["prev_hash"] for r in records],
        "a_hash": [r["hash"] for r in records],
        "seq": seq, "tip": tip,
    })


def _consume_tokens(conn: Connection, token_ids: Sequence[int], now: dt.datetime) -> set[int]:
    """Mark the tokens used, if each is still unused and unexpired and its identity and
    owner are active; returns the ids so marked."""
    cur = sqlite_raw.cursor(conn)
    if cur is None:
        return set(conn.execute(_CONSUME_TOKENS, {"ids": list(token_ids), "now": now})
                   .scalars())
    at = sqlite_raw.db_time(now)
    try:
        return {r[0] for r in cur.execute(
            _SQLITE_CONSUME_TOKENS.format(sqlite_raw.marks(len(token_ids))),
            [at, *token_ids, at, IdentityStatus.ACTIVE.value, OwnerStatus.ACTIVE.value]
        ).fetchall()}
    finally:
        cur.close()


def _revoked_rows(conn: Connection, now: dt.datetime) -> Result[Any]:
    """The revoked certificates the CRL lists at ``now``, as rows are fetched (the CRL is
    re-signed at least every half of its validity, CRL_REFRESH_FRACTION, so one made
    after a certificate's expiry has listed it)."""
    return conn.execute(_REVOKED_ROWS, queries.listed_revoked_params(now))


def _next_crl_number(conn: Connection) -> int:
    """Take the next CRL number (RFC 5280 §5.2.3: monotonically increasing)."""
    current = conn.execute(_CRL_NUMBER).scalar()
    number = int(current) + 1 if current is not None else 1
    if current is None:
        conn.execute(insert(_SETTINGS), {"key": "crl_number", "value": str(number)})
    else:
        conn.execute(update(_SETTINGS).where(_SETTINGS.c.key == "crl_number"),
                     {"value": str(number)})
    return number


def _revocation_index(rows: Iterable[Any], now: dt.datetime, known: Mapping[int, bytes]
                      ) -> dict[int, bytes]:
    """Revoked rows (serial hex, revoked_at, reason) by serial number, each as its CRL
    entry: taken from ``known`` when there with the same reason (a revocation's date
    never changes; its reason may, ``pki.reason_may_change``), else encoded."""
    index = {}
    for sn, at, reason in rows:
        if not sn:
            continue
        serial = int(sn, 16)
        entry = known.get(serial)
        index[serial] = entry if entry is not None and pki.entry_has_reason(entry, reason) \
            else pki.encode_entry(
            serial, at or now, ReasonFlags(reason or "unspecified"))
    return index


def _revoked_status(entry: bytes) -> pki.SerialStatus:
    """What OCSP says of a serial with this CRL entry."""
    revoked = pki.decode_entry(entry)
    return pki.SerialStatus(pki.CertStatus.REVOKED, revoked.revoked_at, revoked.reason)


def _crl_number_on_disk(path: Path) -> int:
    if not path.exists():
        return -1
    try:
        crl = x509.load_der_x509_crl(path.read_bytes())
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (ValueError, x509.ExtensionNotFound):
        return -1


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _san_names(path: Path) -> set[str]:
    """The DNS names and IP addresses a certificate file names (empty if none or absent)."""
    if not path.exists():
        return set()
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*san.get_values_for_type(x509.DNSName),
            *(str(a) for a in san.get_values_for_type(x509.IPAddress))}


def _due(path: Path, now: dt.datetime) -> bool:
    if not path.exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return now >= cert.not_valid_before_utc + life * 2 / 3


def _cert_view(c: Credential, ref: str, now: dt.datetime) -> CertificateView:
    """A certificate as listed; one past its notAfter reads ``expired`` (the stored
    status is what was done to it: active, revoked)."""
    status = "expired" if c.status == "active" and c.expires_at is not None and \
        c.expires_at <= now else c.status
    return CertificateView(c.serial or "", ref, c.fingerprint, c.profile, status,
                           c.not_before, c.expires_at, c.revoked_at, c.revocation_reason)




async def _certificate_and_owner(s: AsyncSession, serial: str
                                 ) -> tuple[Credential, str, str]:
    """The certificate with ``serial`` (any notation ``_norm_serial`` reads), its
    identity as ``kind/name`` and that identity's status; ``NotFound`` if none."""
    row = (await s.execute(select(Credential, Identity.kind, Identity.name, Identity.status)
                           .join(Identity, Identity.id == Credential.identity_id).where(
        Credential.type == "certificate", Credential.serial == _norm_serial(serial)))
           ).one_or_none()
    if row is None:
        raise NotFound(f"no certificate with serial {serial}")
    cred, kind, name, status = row
    return cred, f"{kind}/{name}", status


def _norm_serial(text: str) -> str:
    """Serials are stored as lower-case hex without leading zeros (``openssl`` prints them
    with colons or a 0x prefix; accept those too)."""
    return text.strip().lower().removeprefix("0x").replace(":", "").lstrip("0") or "0"
