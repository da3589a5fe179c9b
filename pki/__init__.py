"""The internal certificate authority: a pure library (no storage, no HTTP, never
imports ``nhi_nac`` or ``segments``). Time comes in as ``now``; persistence
reaches it through the small protocols below, which ``nhi_nac`` implements.

The service calls:

- ``create_hierarchy(trust_domain, now, key_type) -> CaHierarchy`` at ``ca init``;
  ``import_issuing_ca(cert_pem, key_pem, chain_pem, now, passphrase=, trust_domain=)``
  for bring-your-own CA; ``renew_issuing_ca(ca, signer_key, now)`` (or
  ``install_renewed_issuing_ca(ca, cert_pem, chain_pem, now)`` for one signed elsewhere)
  to extend the issuing CA's life with the same name and key;
  ``read_passphrase(file=|env=|credential=, environ=)`` and
  ``load_private_key(pem, passphrase)`` to load the issuing key at start.
- ``CertificateIssuer(issuing_ca, trust_domain, crl_url=, ocsp_url=)`` once, then
  ``.issue_for_csr(csr, kind, name, profile, now, validity=, allowed_dns_names=,
  key_bindings=) -> IssuedCertificate`` per enrollment (``.issue(public_key, ...)``
  when the key is already checked). Refusals raise ``PeerError`` subclasses
  with a ``reason``.
- ``CrlSigner(issuing_ca)`` once, then ``.sign(entries, number=, now=) -> SignedCrl``
  on every revocation and on schedule, with each entry encoded once by
  ``encode_entry(serial, revoked_at, reason)`` (``decode_entry`` reads one back;
  ``build_crl`` encodes and signs in one call); ``parse_reason`` for RFC 5280 reason
  names.
- ``OcspResponder(issuer, responder_cert, responder_key, status_lookup)`` and
  ``.respond(der, now)`` / ``.respond_get(url_component, now)`` -> DER response.
- ``verify_renewal_proof(proof, current_cert, issuer, now, is_revoked=)`` for
  token-less renewal (``renewal_proof_serial`` finds the certificate first).

The enrolling client calls ``new_enrollment``, ``write_credentials``,
``read_credentials``, ``build_renewal_proof`` and ``renewal_time``.
"""

from pki.crl import (
    DEFAULT_CRL_VALIDITY,
    KEEP_AFTER_EXPIRY,
    REASONS,
    CrlSigner,
    RevokedEntry,
    SignedCrl,
    build_crl,
    decode_entry,
    encode_entry,
    entry_has_reason,
    parse_reason,
    reason_may_change,
)
from pki.csr import CheckedCsr, KeyBindings, ParsedCsr, check_csr, load_csr, parse_csr
from pki.enroll import (
    CredentialFiles,
    Enrollment,
    RenewalRequest,
    build_csr,
    build_renewal_proof,
    new_enrollment,
    read_credentials,
    renewal_proof_serial,
    renewal_time,
    verify_renewal_proof,
    write_credentials,
)
from pki.errors import (
    CaMaterialInvalid,
    CsrRejected,
    EnrollmentRefused,
    KeyStoreError,
    LocalError,
    MalformedOcspRequest,
    OcspResponseInvalid,
    PeerError,
    PkiError,
    PolicyViolation,
)
from pki.hierarchy import (
    INTERMEDIATE_LIFETIME,
    ROOT_LIFETIME,
    CaHierarchy,
    IssuingCa,
    certificates_pem,
    create_hierarchy,
    import_issuing_ca,
    install_renewed_issuing_ca,
    load_certificates,
    renew_issuing_ca,
)
from pki.issuer import CertificateIssuer, IssuedCertificate, new_serial
from pki.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_fingerprint,
    read_passphrase,
)
from pki.names import SpiffeId
from pki.ocsp import (
    CertStatus,
    OcspResponder,
    SerialStatus,
    StatusLookup,
    build_request,
    check_response,
    decode_get_request,
)
from pki.profiles import PROFILES, Profile, get_profile

__all__ = [
    "DEFAULT_CRL_VALIDITY",
    "DEFAULT_KEY_TYPE",
    "INTERMEDIATE_LIFETIME",
    "KEEP_AFTER_EXPIRY",
    "PROFILES",
    "REASONS",
    "ROOT_LIFETIME",
    "CaHierarchy",
    "CaMaterialInvalid",
    "CertStatus",
    "CertificateIssuer",
    "CheckedCsr",
    "ParsedCsr",
    "CredentialFiles",
    "CsrRejected",
    "Enrollment",
    "EnrollmentRefused",
    "IssuedCertificate",
    "IssuingCa",
    "KeyBindings",
    "KeyStoreError",
    "KeyType",
    "LocalError",
    "MalformedOcspRequest",
    "OcspResponseInvalid",
    "OcspResponder",
    "PeerError",
    "PkiError",
    "PolicyViolation",
    "PrivateKey",
    "Profile",
    "PublicKey",
    "RenewalRequest",
    "RevokedEntry",
    "CrlSigner",
    "SerialStatus",
    "SignedCrl",
    "SpiffeId",
    "StatusLookup",
    "build_crl",
    "decode_entry",
    "encode_entry",
    "entry_has_reason",
    "build_csr",
    "build_renewal_proof",
    "certificates_pem",
    "check_csr",
    "create_hierarchy",
    "build_request",
    "check_response",
    "decode_get_request",
    "generate_private_key",
    "get_profile",
    "import_issuing_ca",
    "install_renewed_issuing_ca",
    "load_certificates",
    "load_csr",
    "parse_csr",
    "load_private_key",
    "new_enrollment",
    "new_serial",
    "parse_reason",
    "reason_may_change",
    "private_key_pem",
    "public_key_fingerprint",
    "read_credentials",
    "read_passphrase",
    "renew_issuing_ca",
    "renewal_proof_serial",
    "renewal_time",
    "verify_renewal_proof",
    "write_credentials",
]
