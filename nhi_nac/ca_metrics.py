"""The CA's health on ``/metrics``: when its own certificates and its CRL lapse, and how
many enrollments wait.

An expired CA certificate is the classic PKI outage, and it comes years after anyone
last looked. The service re-issues its own OCSP responder, RADIUS server and HTTPS
certificates by itself, but the issuing CA and the root are the admin's to replace, and
every re-issue can fail. So every certificate the service depends on is exported as
``nhi_ca_certificate_expiry_timestamp_seconds{certificate=…}`` (notAfter, Unix time:
alert on ``… - time() < 30 * 86400``), with the CRL's ``nextUpdate``, number and size,
and the enrollments queued for the database (the 503 threshold is
``ca_service.MAX_ENROLL_QUEUE``).

:func:`issuing_ca_warning` says, in one log line, when the issuing CA's remaining life
has become shorter than what the profiles may grant: from then on a request for a
certificate that would outlive the issuing CA is refused (never trimmed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import pki
from nhi_nac.ca_service import API_TLS_DIR, MAX_ENROLL_QUEUE, CaService
from nhi_nac.radius_service import TLS_DIR


class CaMetrics(Collector):
    """Exports the CA's expiry dates, its CRL and its enrollment queue to Prometheus."""

    def __init__(self, ca: CaService) -> None:
        self.ca = ca
        #: path -> ((mtime_ns, size), notAfter): a file is parsed again only when it changes.
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}

    def certificates(self) -> dict[str, Path]:
        return service_certificates(self.ca)

    def _not_after(self, path: Path) -> float | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        seen = self._seen.get(path)
        if seen is not None and seen[0] == key:
            return seen[1]
        try:  # the first certificate of the file: the leaf of a chain file
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return None
        value = cert.not_valid_after_utc.timestamp()
        self._seen[path] = (key, value)
        return value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        expiry = GaugeMetricFamily(
            "nhi_ca_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate the service depends on (Unix time)",
            labels=["certificate"])
        for label, path in self.certificates().items():
            value = self._not_after(path)
            if value is not None:
                expiry.add_metric([label], value)
        yield expiry
        crl = self.ca.crl
        if crl is not None:
            for name, doc, value in (
                    ("nhi_ca_crl_next_update_timestamp_seconds",
                     "nextUpdate of the newest CRL this process signed or loaded (Unix time)",
                     crl.next_update.timestamp()),
                    ("nhi_ca_crl_number", "CRL number of that CRL", float(crl.number)),
                    ("nhi_ca_crl_entries", "Revoked certificates that CRL lists",
                     float(crl.entries))):
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], value)
                yield gauge
        waiting = GaugeMetricFamily(
            "nhi_ca_enrollments_waiting",
            f"Enrollments queued for the database (503 past {MAX_ENROLL_QUEUE})")
        waiting.add_metric([], float(self.ca.enrollments_waiting))
        yield waiting


def service_certificates(ca: CaService) -> dict[str, Path]:
    """The certificates the service depends on, by label, where they are on disk."""
    data, ca_dir = ca.config.data_path, ca.dir
    found = {"root": ca_dir / "root.pem", "issuing": ca_dir / "issuing.pem",
             "ocsp_responder": ca_dir / "ocsp.pem",
             "radius_server": data / TLS_DIR / "server.pem"}
    api = ca.config.api
    if api.tls_cert:
        found["api_server"] = Path(api.tls_cert)
    elif api.tls_names:
        found["api_server"] = data / API_TLS_DIR / "server.pem"
    return found


async def describe_ca(ca: CaService, now: dt.datetime) -> dict[str, Any]:
    """``nhi-nac ca show``: the trust domain and root fingerprint, whether the root key is
    on this machine, each certificate the service depends on (subject, key, notAfter,
    days left), the newest CRL, the certificates issued by state, and the issuing CA's
    warning (``issuing_ca_warning``), if any."""
    issuing = ca.issuing_ca()
    certificates: dict[str, dict[str, Any] | None] = {}
    for label, path in service_certificates(ca).items():
        try:  # the first certificate of the file: the leaf of a chain file
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            certificates[label] = None
            continue
        certificates[label] = {
            "subject": cert.subject.rfc4514_string(), "key": _key_name(cert.public_key()),
            "not_after": cert.not_valid_after_utc,
            "days_left": (cert.not_valid_after_utc - now).days, "file": str(path)}
    crl = ca.crl
    base = ca.public_base()
    return {
        "trust_domain": ca.config.ca.trust_domain,
        "root_sha256": issuing.root.fingerprint(hashes.SHA256()).hex(),
        "root_key": "here" if (ca.dir / "root.key").exists() else "offline",
        "certificates": certificates,
        "crl": None if crl is None else {
            "number": crl.number, "entries": crl.entries, "this_update": crl.this_update,
            "next_update": crl.next_update, "url": f"{base}/pki/v1/crl"},
        "ocsp_url": f"{base}/pki/v1/ocsp",
        "issued": await ca.certificate_counts(now),
        "warning": issuing_ca_warning(issuing, now),
    }


def _key_name(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384"}.get(
            key.curve.name, f"ECDSA {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def issuing_ca_warning(ca: pki.IssuingCa, now: dt.datetime) -> str | None:
    """What an admin must hear when the issuing CA's remaining life is shorter than the
    longest lifetime a profile grants, or None."""
    not_after = ca.certificate.not_valid_after_utc
    left = not_after - now
    longest = max(pki.get_profile(p).max_validity for p in pki.PROFILES)
    if left >= longest:
        return None
    if left <= dt.timedelta(0):
        return (f"the issuing CA expired at {not_after:%Y-%m-%dT%H:%M:%SZ}: no certificate "
                "can be issued or renewed; renew it (nhi-nac ca renew)")
    cut_off = {p: not_after - pki.get_profile(p).default_validity
               for p in ("device", "workload", "ai_agent")}
    shortest = ", ".join(f"{p} from {at:%Y-%m-%d}" for p, at in cut_off.items())
    return (f"the issuing CA expires at {not_after:%Y-%m-%dT%H:%M:%SZ} ({left.days} days): "
            f"certificates that would outlive it are refused; at their default lifetime: "
            f"{shortest}; renew it (nhi-nac ca renew)")
