"""bench/ca load client for nhi-nac: the method of ../shared/bench/ca/http_sign_load.py
(closed loop, C keep-alive HTTP/1.1 connections on loopback, wall time, p50/p99), but with
a different body per request, because bootstrap tokens are single use.

    load.py enroll N C URL BODIES.jsonl --pid PID [--skip K] [--save-cert FILE]
    load.py ocsp   N C URL --cert CERT.pem --issuer ISSUING.pem --pid PID

enroll: request i sends line K+i of BODIES.jsonl ({"token","csr"}); success = HTTP 201 and
a PEM certificate in the reply.  ocsp: POSTs DER OCSP requests (SHA-1 CertID, with a nonce;
256 distinct requests cycled) for CERT; success = HTTP 200 and responseStatus successful;
the first and last responses are parsed fully and must say GOOD.
Server CPU = utime+stime of --pid and its descendants from /proc/*/stat before/after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and every live descendant (API worker processes), so a
    server that spreads over processes is charged for all of them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        todo.extend(children.get(p, ()))
    return total / os.sysconf("SC_CLK_TCK")


async def run(n: int, c: int, url: str, bodies: list[bytes], ctype: str,
              ok: bytes | None, status: bytes, keep: list[bytes]) -> tuple[list[float], float]:
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("loopback URLs only")
    host_port, path = url[len("http://"):].split("/", 1)
    port = int(host_port.rsplit(":", 1)[1])
    path = "/" + path
    q: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        q.put_nowait(i)
    lat: list[float] = []

    async def worker() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while True:
            try:
                i = q.get_nowait()
            except asyncio.QueueEmpty:
                break
            body = bodies[i % len(bodies)]
            t = time.perf_counter()
            w.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await w.drain()
            hdr = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            cl = int([x for x in hdr.split(b"\r\n")
                      if x.lower().startswith(b"content-length")][0].split(b":")[1])
            data = await asyncio.wait_for(r.readexactly(cl), 30)
            good = hdr.split(b" ")[1] == status and (ok is None or ok in data[:4096]) and \
                (ctype != "application/ocsp-request" or b"\x0a\x01\x00" in data[:8])
            assert good, (i, hdr[:60], data[:300])
            lat.append(time.perf_counter() - t)
            if i == 0 or i == n - 1:
                keep.append(data)
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(c)])
    return lat, time.perf_counter() - t0


def ocsp_bodies(cert_pem: str, issuer_pem: str) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    cert = x509.load_pem_x509_certificate(open(cert_pem, "rb").read())
    issuer = x509.load_pem_x509_certificate(open(issuer_pem, "rb").read())
    out = []
    for _ in range(256):
        req = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
               .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build())
        out.append(req.public_bytes(serialization.Encoding.DER))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["enroll", "ocsp"])
    p.add_argument("n", type=int)
    p.add_argument("c", type=int)
    p.add_argument("url")
    p.add_argument("bodies", nargs="?")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--save-cert")
    p.add_argument("--cert")
    p.add_argument("--issuer")
    a = p.parse_args()
    keep: list[bytes] = []
    if a.mode == "enroll":
        with open(a.bodies, "rb") as f:
            lines = f.read().splitlines()[a.skip:a.skip + a.n]
        if len(lines) < a.n:
            sys.exit(f"only {len(lines)} bodies left after --skip {a.skip}")
        c0 = cpu_seconds(a.pid)
        lat, wall = asyncio.run(run(a.n, a.c, a.url, lines, "application/json",
                                    b"BEGIN CERTIFICATE", b"201", keep))
    else:
        bodies = ocsp_bodies(a.cert, a.issuer)
        c0 = cpu_seconds(a.pid)
        lat, wall = asyncio.run(run(a.n, a.c, a.url, bodies, "application/ocsp-request",
                                    None, b"200", keep))
    c1 = cpu_seconds(a.pid)
    if a.mode == "enroll" and a.save_cert:
        import json
        with open(a.save_cert, "w") as f:
            f.write(json.loads(keep[0])["certificate_pem"])
    if a.mode == "ocsp":
        from cryptography.x509 import ocsp
        for der in keep:
            resp = ocsp.load_der_ocsp_response(der)
            assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, resp.response_status
            assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD, resp.certificate_status
    lat.sort()
    print(f"n={len(lat)} rate={len(lat) / wall:.0f}/s p50={lat[len(lat) // 2] * 1e3:.2f}ms "
          f"p99={lat[int(len(lat) * .99)] * 1e3:.2f}ms "
          f"server_cpu_us_per_{'cert' if a.mode == 'enroll' else 'resp'}="
          f"{round((c1 - c0) / a.n * 1e6)}")


if __name__ == "__main__":
    main()
