"""CSR checks: each refusal raises with its reason; the CSR only supplies the key."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from pki import (
    CertificateIssuer,
    CsrRejected,
    PolicyViolation,
    SpiffeId,
    build_csr,
    check_csr,
    generate_private_key,
    public_key_fingerprint,
)
from pki.csr import MAX_CSR_BYTES
from tests.pki.conftest import NOW, TRUST_DOMAIN

SHA256 = hashes.SHA256()
IDENTITY = SpiffeId(TRUST_DOMAIN, "workload", "payments-api")


class FakeBindings:
    """KeyBindings held in a dict: fingerprint -> (kind, name)."""

    def __init__(self, bound: dict[str, tuple[str, str]]) -> None:
        self.bound = bound
        self.asked: list[str] = []

    def bound_identity(self, key_fingerprint: str) -> tuple[str, str] | None:
        self.asked.append(key_fingerprint)
        return self.bound.get(key_fingerprint)


def make_csr(
    key: Any,
    names: list[x509.GeneralName] | None = None,
    *,
    ca: bool | None = None,
    common_name: str | None = None,
    algorithm: Any = SHA256,
) -> bytes:
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = None
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["p256", "p384", "ed25519", "rsa2048"],
)
def test_allowed_keys_pass(key: Any) -> None:
    checked = check_csr(make_csr(key, [uri(IDENTITY.uri)]), IDENTITY)
    assert checked.key_fingerprint == public_key_fingerprint(key)
    assert checked.dns_names == ()


def test_der_csr_and_allowed_dns_names() -> None:
    key = generate_private_key()
    pem = make_csr(key, [uri(IDENTITY.uri), x509.DNSName("pay.nhi.example")])
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    checked = check_csr(der, IDENTITY, allowed_dns_names={"pay.nhi.example"})
    assert checked.dns_names == ("pay.nhi.example",)


def test_csr_without_names_is_fine() -> None:
    check_csr(build_csr(generate_private_key()), IDENTITY)


def _tampered_signature(key: Any = None) -> bytes:
    pem = make_csr(key or generate_private_key(), [uri(IDENTITY.uri)])
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return bytes(der)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["p384", "ed25519", "rsa2048"],
)
def test_a_bad_signature_is_refused_for_every_key_type(key: Any) -> None:
    with pytest.raises(CsrRejected, match="signature does not verify"):
        check_csr(_tampered_signature(key), IDENTITY)


def test_the_signature_is_checked_with_the_digest_the_csr_names() -> None:
    """Signed with SHA-256, labelled ecdsa-with-SHA384: the label is what is checked."""
    der = x509.load_pem_x509_csr(make_csr(generate_private_key(), [uri(IDENTITY.uri)])
                                 ).public_bytes(serialization.Encoding.DER)
    sha256_oid = bytes.fromhex("2a8648ce3d040302")
    assert der.count(sha256_oid) == 1
    relabelled = der.replace(sha256_oid, bytes.fromhex("2a8648ce3d040303"))
    assert x509.load_der_x509_csr(relabelled).signature_hash_algorithm.name == "sha384"
    with pytest.raises(CsrRejected, match="signature does not verify"):
        check_csr(relabelled, IDENTITY)


@pytest.mark.parametrize(
    ("csr", "reason"),
    [
        (_tampered_signature(), "signature does not verify"),
        (b"not a csr", "cannot be parsed"),
        (b"0" * (MAX_CSR_BYTES + 1), "larger than"),
        (make_csr(ec.generate_private_key(ec.SECP521R1())), "secp521r1 is not allowed"),
        (make_csr(dsa.generate_private_key(2048)), "DSAPublicKey keys are not allowed"),
        (make_csr(rsa.generate_private_key(3, 2048)), "exponent 3 is not 65537"),
        (make_csr(rsa.generate_private_key(65537, 1024)), "1024 bits is outside 2048-4096"),
        (make_csr(generate_private_key(), algorithm=hashes.SHA224()), "sha224"),
        (make_csr(generate_private_key(), [uri(IDENTITY.uri)], ca=True), "CA:TRUE"),
    ],
    ids=[
        "bad-signature",
        "garbage",
        "oversized",
        "p521",
        "dsa",
        "rsa-e3",
        "rsa1024",
        "sha224",
        "ca-true",
    ],
)
def test_bad_csrs_are_rejected_with_reason(csr: bytes, reason: str) -> None:
    with pytest.raises(CsrRejected, match=reason) as caught:
        check_csr(csr, IDENTITY)
    assert reason.lower() in caught.value.reason.lower()


@pytest.mark.parametrize(
    ("names", "common_name", "reason"),
    [
        ([uri(f"spiffe://{TRUST_DOMAIN}/workload/other")], None, "this identity is"),
        ([uri("spiffe://evil.example/workload/payments-api")], None, "this identity is"),
        ([x509.DNSName("pay.nhi.example")], None, "scope does not allow"),
        ([x509.RFC822Name("a@nhi.example")], None, "RFC822Name"),
        (None, "someone-else", "common name 'someone-else'"),
    ],
)
def test_names_outside_policy_are_refused(
    names: list[x509.GeneralName] | None, common_name: str | None, reason: str
) -> None:
    csr = make_csr(generate_private_key(), names, common_name=common_name)
    with pytest.raises(PolicyViolation, match=reason):
        check_csr(csr, IDENTITY)


def test_matching_common_name_is_accepted() -> None:
    check_csr(make_csr(generate_private_key(), common_name="payments-api"), IDENTITY)


def test_key_bound_to_another_identity_is_refused() -> None:
    key = generate_private_key()
    bindings = FakeBindings({public_key_fingerprint(key): ("device", "printer-1")})
    with pytest.raises(
        CsrRejected, match=r"already bound to another identity \(device/printer-1\)"
    ):
        check_csr(build_csr(key), IDENTITY, key_bindings=bindings)
    assert bindings.asked == [public_key_fingerprint(key)]


def test_key_bound_to_the_same_identity_may_renew() -> None:
    key = generate_private_key()
    bindings = FakeBindings({public_key_fingerprint(key): ("workload", "payments-api")})
    check_csr(build_csr(key), IDENTITY, key_bindings=bindings)


def test_ca_key_is_refused(issuer: CertificateIssuer) -> None:
    csr = build_csr(issuer.ca.key)
    with pytest.raises(CsrRejected, match="belongs to a certificate authority"):
        issuer.issue_for_csr(csr, "workload", "payments-api", "workload", NOW)


def test_issue_for_csr_takes_only_the_key(issuer: CertificateIssuer) -> None:
    key = generate_private_key()
    csr = make_csr(key, [uri(IDENTITY.uri), x509.DNSName("pay.nhi.example")])
    issued = issuer.issue_for_csr(
        csr, "workload", "payments-api", "workload", NOW, allowed_dns_names={"pay.nhi.example"}
    )
    cert = x509.load_der_x509_certificate(issued.der)
    assert public_key_fingerprint(cert.public_key()) == public_key_fingerprint(key)  # type: ignore[arg-type]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pay.nhi.example"]
