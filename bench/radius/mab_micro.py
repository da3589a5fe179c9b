#!/usr/bin/env python3
"""In-process MAB cost: RadiusServer.receive() alone, µs per Access-Request.

Usage: mab_micro.py [N] [--profile] [--only K]   (no sockets, no database: the engine's
share of the per-request CPU, to compare with bench/radius.sh's whole-process figure;
``--only K`` builds N requests but serves only the first K: bench/radius/mab_instructions.sh
runs it under callgrind twice to count instructions per request, a figure that does not
drift with the machine's load)
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.directory import AdmissionIdentity, MemoryDirectory, NasClient, nas_network
from nhi_nac.radius.server import RadiusServer, Service

SECRET = b"nacbench-secret-0123456789"


def requests(n: int, macs: int = 1000) -> list[bytes]:
    out = []
    for i in range(n):
        m = i % macs + 1
        user = f"aabbcc{m >> 16 & 255:02x}{m >> 8 & 255:02x}{m & 255:02x}".encode()
        auth = os.urandom(16)
        attrs = [
            (Attr.USER_NAME, user),
            (Attr.USER_PASSWORD, codec.hide_user_password(user, SECRET, auth)),
            (Attr.CALLING_STATION_ID, b"AA-BB-CC-" + user[6:8].upper() + b"-"
             + user[8:10].upper() + b"-" + user[10:12].upper()),
            codec.integer(Attr.NAS_PORT, 7),
        ]
        out.append(codec.encode_request(Code.ACCESS_REQUEST, i % 256, attrs, SECRET,
                                        authenticator=auth))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20000
    idents = []
    for m in range(1, 1001):
        mac = f"aa:bb:cc:{m >> 16 & 255:02x}:{m >> 8 & 255:02x}:{m & 255:02x}"
        idents.append(AdmissionIdentity(IdentityRef(IdentityKind.DEVICE, f"mab-{m:04d}"),
                                        macs=frozenset({mac}), allow_mab=True))
    directory = MemoryDirectory(
        nas_clients=[NasClient("bench", nas_network("127.0.0.1"), SECRET)],
        identities=idents, default_vlans={IdentityKind.DEVICE: 200})
    server = RadiusServer(directory)
    data = requests(n)
    addr = ("127.0.0.1", 40000)

    if "--only" in sys.argv:
        data = data[:int(sys.argv[sys.argv.index("--only") + 1])]
        n = max(1, len(data))

    def run() -> None:
        now = time.time()
        for i, d in enumerate(data):
            out = server.receive(d, (addr[0], addr[1] + i % 64), Service.AUTH, now)
            assert out.datagrams
            directory.record_admission(out.decision)  # type: ignore[arg-type]

    t0 = time.process_time()
    run()
    t1 = time.process_time()
    print(f"MAB receive(): {(t1 - t0) / n * 1e6:.1f} us CPU per request (n={n})")
    if "--profile" in sys.argv:
        server = RadiusServer(directory)
        prof = cProfile.Profile()
        prof.runcall(run)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
