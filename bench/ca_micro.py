"""In-process CA micro-benchmarks: issuance, CRL build, OCSP signing, on one core.

Prints figures; asserts nothing. Usage::

    .venv/bin/python bench/ca_micro.py [--seconds 3] [--crl 100000] [--key-type p256]

- ``cryptography baseline``: CertificateBuilder + sign of a comparable leaf, no policy;
- ``issue(public_key)``: the issuer with the key already checked (its DER template);
- ``issue(public_key), builder``: the same through the builder fallback, for comparison;
- ``issue_for_csr(csr PEM)``: CSR parse + checks + issue, the enrollment path;
- ``CRL build``: one-pass build of N revoked entries, signed;
- ``OCSP respond``: parse a request with nonce, look up, sign a response (its DER template);
- ``OCSP respond, builder``: the same through the OCSPResponseBuilder fallback.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from pki import (
    CertificateIssuer,
    CertStatus,
    OcspResponder,
    RevokedEntry,
    SerialStatus,
    build_crl,
    build_csr,
    create_hierarchy,
    generate_private_key,
)
from pki.keys import signature_hash


def rate(name: str, seconds: float, call: Callable[[], object]) -> float:
    call()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            call()
        count += 100
    elapsed = time.perf_counter() - start
    per_second = count / elapsed
    print(f"{name:<34} {per_second:>10,.0f}/s   {1e6 / per_second:>8.1f} µs each")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--crl", type=int, default=100_000)
    parser.add_argument("--key-type", default="p256")
    args = parser.parse_args()

    now = datetime.now(UTC)
    hierarchy = create_hierarchy("nhi.example", now, args.key_type)
    ca = hierarchy.issuing
    issuer = CertificateIssuer(
        ca,
        "nhi.example",
        crl_url="http://ca.nhi.example/crl",
        ocsp_url="http://ca.nhi.example/ocsp",
    )
    # The same issuer with its template off: every leaf through x509.CertificateBuilder.
    builder_issuer = CertificateIssuer(
        ca,
        "nhi.example",
        crl_url="http://ca.nhi.example/crl",
        ocsp_url="http://ca.nhi.example/ocsp",
    )
    builder_issuer._template = None
    leaf = generate_private_key(args.key_type)
    csr = build_csr(leaf, "spiffe://nhi.example/workload/api")
    template = "on" if issuer._template is not None else "off (probe failed: builder)"
    print(
        f"key type {args.key_type}, {args.seconds:.0f} s per figure, one core, "
        f"DER template {template}\n"
    )

    def baseline() -> bytes:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.certificate.subject)
            .public_key(leaf.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(hours=24))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("spiffe://nhi.example/workload/api")]
                ),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, signature_hash(ca.key))
            .public_bytes(serialization.Encoding.DER)
        )

    rate("cryptography baseline (sign only)", args.seconds, baseline)
    rate(
        "issue(public_key)",
        args.seconds,
        lambda: issuer.issue(leaf.public_key(), "workload", "api", "workload", now),
    )
    rate(
        "issue(public_key), builder",
        args.seconds,
        lambda: builder_issuer.issue(leaf.public_key(), "workload", "api", "workload", now),
    )
    rate(
        "issue_for_csr(csr PEM)",
        args.seconds,
        lambda: issuer.issue_for_csr(csr, "workload", "api", "workload", now),
    )

    responder_key = generate_private_key(args.key_type)
    responder_cert = x509.load_der_x509_certificate(
        issuer.issue(responder_key.public_key(), "service", "ocsp", "ocsp-responder", now).der
    )
    subject = x509.load_der_x509_certificate(
        issuer.issue(leaf.public_key(), "workload", "api", "workload", now).der
    )
    revoked = SerialStatus(CertStatus.REVOKED, now, x509.ReasonFlags.key_compromise)
    responder = OcspResponder(ca.certificate, responder_cert, responder_key, lambda s: revoked)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(subject, ca.certificate, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"\x42" * 16), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    if responder._template is None:
        print("OCSP DER template off (probe failed): both OCSP figures are the builder's")
    rate("OCSP respond (nonce, revoked)", args.seconds, lambda: responder.respond(request, now))
    # The same responder with its template off: every response through OCSPResponseBuilder.
    builder_responder = OcspResponder(
        ca.certificate, responder_cert, responder_key, lambda s: revoked
    )
    builder_responder._template = None
    rate(
        "OCSP (nonce, revoked), builder",
        args.seconds,
        lambda: builder_responder.respond(request, now),
    )

    entries = [
        RevokedEntry(serial, now, x509.ReasonFlags.key_compromise)
        for serial in range(1, args.crl + 1)
    ]
    start = time.perf_counter()
    crl = build_crl(ca, entries, number=1, now=now)
    elapsed = time.perf_counter() - start
    print(f"\nCRL build, {args.crl:,} entries: {elapsed:.2f} s, {len(crl.der) / 1e6:.1f} MB DER")


if __name__ == "__main__":
    main()
