#!/usr/bin/env python3
"""Hold N EAP-TLS conversations in flight on a RADIUS server and report its memory.

Usage: eap_sessions.py HOST PORT SECRET --sessions N --pid PID [--metrics URL]

Each conversation: Access-Request with EAP-Response/Identity -> Access-Challenge (State,
EAP-TLS Start); Access-Request with EAP-TLS ClientHello -> Access-Challenge carrying the
first fragment of the server's flight.  The server then holds a TLS connection in the
middle of its handshake for that State; the helper never completes it (the server
forgets it after its idle timeout).  Conversations are spread over source addresses
127.0.0.1, 127.0.0.2, ... (a NAS client each on the server) at most 4000 per address,
because a server caps EAP conversations per NAS.  Batches of 128 per socket; bounded.
Prints one line starting with "RSS ".  Standard library only; loopback only.
"""
import argparse
import hashlib
import hmac
import os
import socket
import ssl
import struct
import sys
import time
import urllib.request

PER_NAS = 4000
BATCH = 128


def attr(t, v):
    return struct.pack("!BB", t, len(v) + 2) + v


def eap_attrs(eap):
    return b"".join(attr(79, eap[i:i + 253]) for i in range(0, len(eap), 253))


def request(ident, secret, attrs):
    auth = os.urandom(16)
    body = attrs + attr(80, b"\x00" * 16)
    hdr = struct.pack("!BBH", 1, ident, 20 + len(body)) + auth
    ma = hmac.new(secret, hdr + body, hashlib.md5).digest()
    return hdr + body[:-16] + ma


def parse(data):
    out, i = {}, 20
    while i + 2 <= len(data):
        t, ln = data[i], data[i + 1]
        if ln < 2:
            break
        out.setdefault(t, []).append(data[i + 2:i + ln])
        i += ln
    return data[0], data[1], out


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def rss_kb(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0])
    return vals


def gauge(url):
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("nhi_radius_eap_sessions "):
                    return int(float(line.split()[1]))
    except OSError:
        return None
    return None


def batch(sock, secret, dst, names, hello, timeout):
    """Run up to 128 conversations to the first server fragment; return how many got there."""
    n = len(names)
    pend = {}
    for i, name in enumerate(names):
        eap = struct.pack("!BBH", 2, 0, 5 + len(name)) + b"\x01" + name
        pkt = request(i, secret, attr(1, name) + attr(31, b"02-00-00-00-00-01") + attr(61, struct.pack("!I", 15))
                      + eap_attrs(eap))
        sock.sendto(pkt, dst)
        pend[i] = name
    states = {}
    deadline = time.monotonic() + timeout
    while len(states) < n and time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        code, ident, a = parse(data)
        if code == 11 and ident in pend and 24 in a and 79 in a:
            eap = b"".join(a[79])
            states[ident] = (a[24][0], eap[1])
    got = 0
    for i, (state, eid) in states.items():
        tls = b"\x80" + struct.pack("!I", len(hello)) + hello
        eap = struct.pack("!BBH", 2, eid, 5 + len(tls)) + b"\x0d" + tls
        sock.sendto(request(128 + i, secret, attr(1, pend[i]) + attr(24, state) + eap_attrs(eap)), dst)
    deadline = time.monotonic() + timeout
    while got < len(states) and time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        code, _, a = parse(data)
        if code == 11:
            got += 1
    return got


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("secret")
    p.add_argument("--sessions", type=int, default=10000)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--metrics", default="")
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    if not a.host.startswith("127.") or not 1 <= a.sessions <= 16000:
        sys.exit("loopback only; 1..16000 sessions")
    secret = a.secret.encode()
    hello = client_hello()
    before = rss_kb(a.pid)
    g0 = gauge(a.metrics)
    t0 = time.monotonic()
    held = 0
    nas_count = -(-a.sessions // PER_NAS)
    for nas in range(nas_count):
        want = min(PER_NAS, a.sessions - nas * PER_NAS)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.bind((f"127.0.0.{nas + 1}", 0))
        sock.settimeout(a.timeout)
        for b in range(0, want, BATCH):
            names = [f"rss-{nas}-{i}".encode() for i in range(b, min(want, b + BATCH))]
            held += batch(sock, secret, (a.host, a.port), names, hello, a.timeout)
        sock.close()
    el = time.monotonic() - t0
    after = rss_kb(a.pid)
    g1 = gauge(a.metrics)
    delta = after["VmRSS"] - before["VmRSS"]
    print(f"RSS sessions_asked={a.sessions} held={held} server_gauge={g0}->{g1} fill_s={el:.1f} "
          f"rss_before_kb={before['VmRSS']} rss_after_kb={after['VmRSS']} delta_kb={delta} "
          f"kb_per_session={delta / max(1, held):.1f} hwm_kb={after['VmHWM']}")


if __name__ == "__main__":
    main()
