#!/usr/bin/env python3
"""Summarise bench/radius RESULT lines: server CPU per auth, FreeRADIUS vs nhi-nac, ratios.

Usage: figures.py FREERADIUS_RESULTS NHI_RESULTS [RSS_LINE]
       figures.py --interleaved AB_RESULTS   (the "AB fr|nhi ..." lines of the interleaved
                                              MAB rounds: per-round and median figures)
"""
import statistics
import sys

TARGET_EAP, TARGET_MAB = 1.0, 2.0


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.startswith("RESULT "):
                continue
            parts = line.split()
            if parts[1] == "failed":
                rows.append({"kind": "failed", "line": line.strip()})
                continue
            d = {"kind": parts[1]}
            for kv in parts[2:]:
                k, _, v = kv.partition("=")
                d[k] = v
            rows.append(d)
    return rows


def groups(rows):
    """(label, n, server_cpu_s, rate list) per measurement group."""
    out = {}
    for r in rows:
        if r["kind"] == "eaptls":
            mode = "process/auth" if r["reauth"] == "0" else f"-r{r['reauth']}"
            key = ("eap", r["tls"], mode)
            n = int(r["ok"])
        elif r["kind"] == "mab":
            key = ("mab", "", "")
            n = int(r["accept"])
        else:
            continue
        g = out.setdefault(key, {"n": 0, "cpu": 0.0, "pts": [], "sn": 0, "scpu": 0.0})
        g["n"] += n
        g["cpu"] += float(r.get("server_cpu_s", "nan"))
        if "settled_cpu_s" in r:  # CPU until idle again, includes the probe auth of eaptls_load
            g["sn"] += n + (1 if r["kind"] == "eaptls" else 0)
            g["scpu"] += float(r["settled_cpu_s"])
        pt = r.get("k") or r.get("c")
        g["pts"].append(f"{'K' if r['kind'] == 'eaptls' else 'C'}={pt}:{float(r['rate']):.0f}/s")
    return out


def ratio(b, a):
    return b / a if a and a == a and b == b else float("nan")


def per(g, scale, settled=False):
    if settled:
        return scale * g["scpu"] / g["sn"] if g and g.get("sn") else float("nan")
    return scale * g["cpu"] / g["n"] if g and g["n"] else float("nan")


def main():
    fr, nh = load(sys.argv[1]), load(sys.argv[2])
    rss = sys.argv[3] if len(sys.argv) > 3 else ""
    failed = [r["line"] for r in fr + nh if r["kind"] == "failed"]
    gf, gn = groups(fr), groups(nh)
    keys = sorted(set(gf) | set(gn), key=lambda k: (k[0] != "eap", k[2] != "process/auth", k[2], k[1]))
    rows = []
    for k in keys:
        if k[0] == "eap":
            label, unit, scale = f"EAP-TLS {k[1].replace('TLSv', 'TLS ')} ({k[2]})", "ms/auth", 1e3
        else:
            label, unit, scale = "MAB/PAP", "us/req", 1e6
        a, b = per(gf.get(k), scale), per(gn.get(k), scale)
        rows.append((label, unit, a, b, per(gn.get(k), scale, True), gf.get(k), gn.get(k)))
    # headline: all EAP-TLS -rN points together (client CPU lowest there), all MAB points
    def total(gs, pred):
        sel = [g for k, g in gs.items() if pred(k)]
        return {k: sum(g[k] for g in sel) for k in ("n", "cpu", "sn", "scpu")} if sel else None
    reauth = lambda k: k[0] == "eap" and k[2] != "process/auth"
    anyeap = lambda k: k[0] == "eap"
    eap_pred = reauth if any(reauth(k) for k in keys) else anyeap
    ef, en = per(total(gf, eap_pred), 1e3), per(total(gn, eap_pred), 1e3)
    mf, mn = per(total(gf, lambda k: k[0] == "mab"), 1e6), per(total(gn, lambda k: k[0] == "mab"), 1e6)
    es = per(total(gn, eap_pred), 1e3, True)
    ms = per(total(gn, lambda k: k[0] == "mab"), 1e6, True)

    w = 34
    print(f"{'server CPU per completed auth':<{w}} {'unit':<8} {'FreeRADIUS':>10} {'nhi-nac':>10} {'ratio':>7} "
          f"{'nhi-settled':>11} {'ratio':>7}   auths FR / nhi   throughput FR | nhi")
    for label, unit, a, b, c, g1, g2 in rows:
        print(f"{label:<{w}} {unit:<8} {a:>10.3f} {b:>10.3f} {ratio(b, a):>6.2f}x {c:>11.3f} {ratio(c, a):>6.2f}x   "
              f"{(g1 or {}).get('n', 0):>6} / {(g2 or {}).get('n', 0):<6}  "
              f"{' '.join((g1 or {}).get('pts', []))} | {' '.join((g2 or {}).get('pts', []))}")
    print("-" * 116)
    print(f"{'EAP-TLS (all -r points, headline)':<{w}} {'ms/auth':<8} {ef:>10.3f} {en:>10.3f} {ratio(en, ef):>6.2f}x {es:>11.3f} {ratio(es, ef):>6.2f}x   "
          f"target <= {TARGET_EAP:.1f}x: {'met' if ratio(en, ef) <= TARGET_EAP else 'NOT met'}")
    print(f"{'MAB (all points, headline)':<{w}} {'us/req':<8} {mf:>10.1f} {mn:>10.1f} {ratio(mn, mf):>6.2f}x {ms:>11.1f} {ratio(ms, mf):>6.2f}x   "
          f"target <= {TARGET_MAB:.1f}x: {'met' if ratio(mn, mf) <= TARGET_MAB else 'NOT met'}")
    if rss:
        print(rss if rss.startswith("RSS ") else f"RSS measurement failed: {rss}")
    for line in failed:
        print("FAILED POINT:", line)
    print("ratio = nhi-nac / FreeRADIUS (lower is better for nhi-nac); CPU from /proc/PID/stat (utime+stime,")
    print("all threads), 10 ms ticks, over each load client's measured window (same method for both servers).")
    print("nhi-settled: nhi-nac CPU from just before each point until the server is idle again (includes the")
    print("probe auth and work done after the replies, e.g. batched admission writes), per auth incl. probe.")
    print("Headline EAP-TLS: eapol_test -rN points only (least client CPU); process/auth rows have few auths.")


def interleaved(path):
    """Rounds of the same MAB point against FreeRADIUS and nhi-nac in turn (two lines per
    round): µs of server CPU per accepted request in each round, the medians, and the
    median of the per-round ratios. A round with a failed point is left out, whole."""
    points = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[0] != "AB":
                continue
            d = dict(kv.partition("=")[::2] for kv in parts[3:])
            n = int(d.get("accept", 0))
            ok = n > 0 and "server_cpu_s" in d and int(d.get("lost", 0)) == 0
            points.append((parts[1], ok, 1e6 * float(d.get("server_cpu_s", 0)) / max(n, 1),
                           1e6 * float(d.get("settled_cpu_s", 0)) / max(n, 1), line.strip()))
    rounds = []
    for first, second in zip(points[0::2], points[1::2], strict=False):
        pair = {p[0]: p for p in (first, second)}
        if set(pair) != {"fr", "nhi"} or not (first[1] and second[1]):
            print(f"round left out: {first[4]} | {second[4]}")
            continue
        rounds.append((pair["fr"][2], pair["nhi"][2], pair["nhi"][3]))
    if not rounds:
        print("interleaved MAB: no complete rounds")
        return
    print()
    print("################ MAB/PAP interleaved (same point, FreeRADIUS and nhi-nac in turn)")
    print("round   FreeRADIUS us/req   nhi-nac us/req   ratio   nhi-nac settled   ratio")
    for i, (fr, nhi, settled) in enumerate(rounds):
        print(f"{i + 1:5d}   {fr:17.1f}   {nhi:14.1f}   {nhi / fr:4.2f}x   {settled:15.1f}"
              f"   {settled / fr:4.2f}x")
    med = statistics.median(nhi / fr for fr, nhi, _ in rounds)
    med_settled = statistics.median(settled / fr for fr, _, settled in rounds)
    print(f"median  {statistics.median(r[0] for r in rounds):17.1f}   "
          f"{statistics.median(r[1] for r in rounds):14.1f}   {med:4.2f}x   "
          f"{statistics.median(r[2] for r in rounds):15.1f}   {med_settled:4.2f}x")
    verdict = "met" if med <= TARGET_MAB else "NOT met"
    print(f"MAB headline (median of per-round ratios): {med:.2f}x FreeRADIUS's CPU per "
          f"request, target <= {TARGET_MAB:.1f}x: {verdict}; settled (incl. the batched "
          f"writes after the replies): {med_settled:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--interleaved":
        interleaved(sys.argv[2])
    else:
        main()
