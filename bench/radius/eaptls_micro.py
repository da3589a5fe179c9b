#!/usr/bin/env python3
"""In-process EAP-TLS cost: full handshakes through RadiusServer.receive() with an
in-memory supplicant (tests/radius/eaptls_peer.py), server-side CPU per auth.

Usage: PYTHONPATH=. eaptls_micro.py [N] [1.2|1.3] [--profile]
The server's share is the time inside RadiusServer.receive (the supplicant's TLS work
runs in the same process and is not counted).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.radius.directory import AdmissionIdentity, MemoryDirectory, NasClient, nas_network
from nhi_nac.radius.eaptls import EapTlsServerConfig, TlsVersion, build_server_context
from nhi_nac.radius.server import RadiusServer
from tests.radius.eaptls_peer import EapTlsPeer, run_over_radius
from tests.radius.pkiutil import issue, make_ca, server_cert

SECRET = b"nacbench-secret-0123456789"


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 200
    version = TlsVersion.TLS1_2 if len(args) > 1 and args[1] == "1.2" else TlsVersion.TLS1_3
    ca = make_ca()
    srv = server_cert(ca)
    client = issue(ca, "x", uris=("spiffe://bench.example/device/x",))
    directory = MemoryDirectory(
        nas_clients=[NasClient("bench", nas_network("127.0.0.1"), SECRET)],
        identities=[AdmissionIdentity(IdentityRef(IdentityKind.DEVICE, "x"))],
        trust_domain="bench.example", default_vlans={IdentityKind.DEVICE: 100})
    config = EapTlsServerConfig(srv.cert, srv.key, (ca.cert,),  # type: ignore[arg-type]
                                min_version=version, max_version=version)
    server = RadiusServer(directory, tls_context=build_server_context(config))
    spent = 0.0
    receive = server.receive

    def timed(*a: object) -> object:
        nonlocal spent
        t0 = time.process_time()
        out = receive(*a)  # type: ignore[arg-type]
        spent += time.process_time() - t0
        return out

    server.receive = timed  # type: ignore[method-assign]

    def run() -> None:
        for _ in range(n):
            peer = EapTlsPeer(ca, client, version, 1024)
            result = run_over_radius(server, peer, SECRET, time.time())
            assert result.reply.code == 2, server.counters

    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.runcall(run)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    else:
        run()
    print(f"EAP-TLS {version.name}: {spent / n * 1e3:.3f} ms server CPU per auth (n={n})")


if __name__ == "__main__":
    main()
