#!/usr/bin/env bash
# bench/radius: server CPU per EAP-TLS authentication and per MAB request, nhi-nac vs
# FreeRADIUS 3.2, in one run, with the same load clients (../shared/bench/peer/).
#
#   bench/radius.sh                       (about 3-4 minutes on 2 vCPUs)
#
# 1. FreeRADIUS 3.2: ../shared/bench/peer/run_freeradius_baseline.sh with the knobs below
#    (its own throwaway PKI, private config, loopback; stopped by PID by that driver).
# 2. nhi-nac: a real `nhi-nac serve` process with a temporary data dir, set up with the
#    CLI (owner, NAS, segment map VLAN 100 = EAP-TLS devices / 200 = MAB devices, so the
#    load clients see the same VLANs as from FreeRADIUS; MAB devices by `nhi-nac import`;
#    EAP-TLS device certificates enrolled from nhi-nac's own CA with `nhi-nac enroll`),
#    then the same load points, SERVER_PID = the nhi-nac process.
# 3. Optional: nhi-nac RSS with EAP_SESSIONS conversations held mid-handshake.
# Server CPU = utime+stime of the server PID (/proc/PID/stat) over each load point,
# as measured by the load clients themselves; per auth = CPU / completed auths.
#
# Env knobs (defaults):
#   EAP_TLS="1.2 1.3"   EAP_REAUTH_K="16 32"  EAP_REAUTH=9  EAP_REAUTH_TOTAL=1000
#   EAP_K=1  EAP_TOTAL=40 (one-process-per-auth point; the FreeRADIUS driver always runs one)
#   EAP_DURATION=30  MAB_C="16 64"  MAB_TOTAL=20000  MAB_DURATION=20  N_EAP=8  N_MAB=1000
#   EAP_SESSIONS=10000 (0 = skip the RSS measurement)   PEER=/work/shared/bench/peer
#   NHI=<repo>/.venv/bin/nhi-nac   KEEP=1 keeps the work dir
#   FR_RESULTS=<file>: skip FreeRADIUS and reuse the RESULT lines of an earlier run
#     (a kept work dir's fr.results), for quick iterations on nhi-nac alone
#   MAB_AB_ROUNDS=5 MAB_AB_TOTAL=20000 MAB_AB_C=16: the MAB headline, interleaved: a second
#     FreeRADIUS kept running beside nhi-nac, the same MAB point against each in turn
#     (order alternating per round), medians over the rounds (0 = skip). On a shared VM
#     whose speed drifts by 2x within minutes, only points measured side by side compare.
#   PYSPY=<dir>: sample nhi-nac with py-spy (non-blocking) during each point, one
#     collapsed-stack file per point in <dir> (pip install py-spy)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEER=${PEER:-/work/shared/bench/peer}
NHI=${NHI:-$REPO/.venv/bin/nhi-nac}
PY=${PY:-$REPO/.venv/bin/python}
EAP_TLS=${EAP_TLS:-"1.2 1.3"}
EAP_K=${EAP_K:-1}
EAP_TOTAL=${EAP_TOTAL:-40}
EAP_DURATION=${EAP_DURATION:-30}
EAP_REAUTH_K=${EAP_REAUTH_K-"16 32"}
EAP_REAUTH=${EAP_REAUTH:-9}
EAP_REAUTH_TOTAL=${EAP_REAUTH_TOTAL:-1000}
MAB_C=${MAB_C:-"16 64"}
MAB_TOTAL=${MAB_TOTAL:-20000}
MAB_DURATION=${MAB_DURATION:-20}
N_EAP=${N_EAP:-8}
N_MAB=${N_MAB:-1000}
EAP_SESSIONS=${EAP_SESSIONS:-10000}
MAB_AB_ROUNDS=${MAB_AB_ROUNDS:-5}
MAB_AB_TOTAL=${MAB_AB_TOTAL:-20000}
MAB_AB_C=${MAB_AB_C:-16}
SECRET=nacbench-secret-0123456789

for b in freeradius radclient eapol_test python3 openssl ss; do
  command -v $b >/dev/null || { echo "missing $b: apt-get install -y freeradius freeradius-utils eapoltest" >&2; exit 2; }
done
[ -x "$NHI" ] || { echo "missing $NHI (make test / pip install -e .)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/nhi-radius-bench.XXXXXX)
NHI_PID=
FR_AB_PID=
cleanup() {
  if [ -n "$FR_AB_PID" ] && kill -0 "$FR_AB_PID" 2>/dev/null; then kill "$FR_AB_PID"; fi
  if [ -n "$NHI_PID" ] && kill -0 "$NHI_PID" 2>/dev/null; then
    kill "$NHI_PID"
    for _ in $(seq 100); do kill -0 "$NHI_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NHI_PID" 2>/dev/null && kill -9 "$NHI_PID"
  fi
  NHI_PID=
  [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

udp_free() { ! ss -Huln "sport = :$1" | grep -q .; }
tcp_free() { ! ss -Htln "sport = :$1" | grep -q .; }
pick_ports() { # N consecutive free UDP ports from a random base -> first
  local n=$1 base p ok
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 30000)); ok=1
    for ((p = base; p < base + n; p++)); do udp_free $p && tcp_free $p || { ok=0; break; }; done
    [ $ok = 1 ] && { echo $base; return; }
  done
  echo "no free ports" >&2; exit 2
}

echo "# bench/radius $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname): $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "# $(freeradius -v | head -1 | sed 's/,.*//'); eapol_test $(dpkg-query -W -f '${Version}' eapoltest 2>/dev/null); nhi-nac $("$PY" -c 'import importlib.metadata as m; print(m.version("nhi-nac"))') (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty')); $("$PY" -c 'import OpenSSL, ssl; print("pyOpenSSL", OpenSSL.__version__, "/", OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode())')"
echo "# points: EAP-TLS TLS {$EAP_TLS} K=$EAP_K x$EAP_TOTAL (process/auth) and K={$EAP_REAUTH_K} REAUTH=$EAP_REAUTH x$EAP_REAUTH_TOTAL; MAB C={$MAB_C} x$MAB_TOTAL"

# ---------------------------------------------------------------- FreeRADIUS 3.2
if [ -n "${FR_RESULTS:-}" ]; then
  echo
  echo "################ FreeRADIUS 3.2: RESULT lines reused from $FR_RESULTS (FR_RESULTS set)"
  cp "$FR_RESULTS" "$WORK/fr.results"
else
FR_PORT=$(pick_ports 3)
echo
echo "################ FreeRADIUS 3.2 ($PEER/run_freeradius_baseline.sh, port $FR_PORT)"
WORK="$WORK/fr" PORT=$FR_PORT SECRET=$SECRET EAP_K="$EAP_K" EAP_TOTAL=$EAP_TOTAL EAP_DURATION=$EAP_DURATION \
  EAP_TLS="$EAP_TLS" EAP_REAUTH_K="$EAP_REAUTH_K" EAP_REAUTH=$EAP_REAUTH EAP_REAUTH_TOTAL=$EAP_REAUTH_TOTAL \
  MAB_C="$MAB_C" MAB_PROCS=1 MAB_TOTAL=$MAB_TOTAL MAB_DURATION=$MAB_DURATION RADCLIENT=0 PIN=0 \
  "$PEER/run_freeradius_baseline.sh" 2>&1 | sed '/^== summary/,$d'
cp "$WORK/fr/results.txt" "$WORK/fr.results"
fi

# ---------------------------------------------------------------- nhi-nac
P=$(pick_ports 3)
AUTH=$P; ACCT=$((P + 1)); API=$((P + 2))
export NHI_NAC_DATA_DIR="$WORK/nhi/data" NHI_NAC_LOG_FORMAT=json NHI_NAC_LOG_LEVEL=warning \
  NHI_NAC_RADIUS_AUTH_PORT=$AUTH NHI_NAC_RADIUS_ACCT_PORT=$ACCT NHI_NAC_RADIUS_LISTEN='["127.0.0.1"]' \
  NHI_NAC_API_LISTEN=127.0.0.1:$API NHI_NAC_MQTT_URL= NHI_NAC_DATABASE_URL=
unset NHI_NAC_CONFIG
mkdir -p "$WORK/nhi/certs/clients"
echo
echo "################ nhi-nac (serve on 127.0.0.1:$AUTH, API $API, data dir in $WORK)"
t0=$(date +%s.%N)
"$NHI" init > /dev/null
"$NHI" owner add bench@example.com --name "Bench Owner" --team netops > /dev/null
"$NHI" nas add bench --address 127.0.0.1 --secret "$SECRET" > /dev/null
if [ "$EAP_SESSIONS" -gt 0 ]; then  # the per-NAS EAP session cap is 4096: more NAS for the RSS point
  for i in $(seq 2 $(((EAP_SESSIONS + 3999) / 4000))); do
    "$NHI" nas add bench$i --address 127.0.0.$i --secret "$SECRET" > /dev/null
  done
fi
cat > "$WORK/nhi/segments.yaml" <<'YAML'
metadata: {author: bench, comment: same VLANs as the FreeRADIUS baseline}
segments:
  eaptls: {vlan: 100, description: EAP-TLS bench devices}
  mab:    {vlan: 200, description: MAB bench devices}
rules:
  - {name: eaptls, match: {kind: device, scope: {function: eaptls}}, segment: eaptls}
  - {name: mab, match: {kind: device, scope: {function: mab}}, segment: mab}
fallback: reject
YAML
"$NHI" segments apply "$WORK/nhi/segments.yaml" --yes --comment bench > /dev/null
{
  echo "kind,name,owner,scope,macs,allow_mab"
  for ((i = 1; i <= N_MAB; i++)); do
    printf 'device,mab-%04d,bench@example.com,function=mab,aa:bb:cc:%02x:%02x:%02x,true\n' \
      $i $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255))
  done
  for ((i = 1; i <= N_EAP; i++)); do printf 'device,eap-%03d,bench@example.com,function=eaptls,,false\n' $i; done
} > "$WORK/nhi/devices.csv"
"$NHI" import "$WORK/nhi/devices.csv" > /dev/null
"$NHI" serve > "$WORK/nhi/serve.log" 2>&1 &
NHI_PID=$!
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$API/readyz" > /dev/null 2>&1 && break
  kill -0 "$NHI_PID" 2>/dev/null || { echo "nhi-nac serve exited:"; tail -20 "$WORK/nhi/serve.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$API/readyz" > /dev/null || { echo "nhi-nac not ready"; tail "$WORK/nhi/serve.log"; exit 1; }
# EAP-TLS device certificates from nhi-nac's own CA, in eaptls_load.sh's layout:
# ca.pem, clients/NAME.pem (leaf + chain, so the supplicant sends the chain), clients/NAME.key
enroll_one() {
  local name=$1 tok out=$WORK/nhi/enroll/$1
  tok=$("$NHI" token create "device/$name" --ttl 15m)
  "$NHI" enroll --server "http://127.0.0.1:$API" --token "$tok" --out "$out" > /dev/null
  cat "$out/cert.pem" "$out/chain.pem" > "$WORK/nhi/certs/clients/$name.pem"
  cp "$out/key.pem" "$WORK/nhi/certs/clients/$name.key"
}
export -f enroll_one; export NHI WORK API
seq -f 'eap-%03g' 1 "$N_EAP" | xargs -P 4 -I{} bash -c 'enroll_one {}'
cp "$WORK/nhi/enroll/eap-001/ca.pem" "$WORK/nhi/certs/ca.pem"
printf 'set up in %.1fs: nhi-nac pid %s, %d MAB devices, %d EAP-TLS devices enrolled, RSS %s kB\n' \
  "$(echo "$(date +%s.%N) - $t0" | bc)" "$NHI_PID" "$N_MAB" "$N_EAP" "$(awk '/VmRSS/{print $2}' /proc/$NHI_PID/status)"

export SERVER_PID=$NHI_PID
: > "$WORK/nhi.results"
ticks() { awk '{print $14 + $15}' "/proc/$NHI_PID/stat"; }
settle() { # wait (at most ~150 s) until the server uses < 2 ticks per 0.3 s: deferred work done
  local a b
  a=$(ticks)
  for _ in $(seq 500); do sleep 0.3; b=$(ticks); [ $((b - a)) -le 1 ] && break; a=$b; done
}
TCK=$(getconf CLK_TCK)
settle; i0=$(ticks); sleep 3; i1=$(ticks)
echo "idle server CPU: $(((i1 - i0) * 1000 / TCK / 3)) ms of CPU per second (not subtracted from the figures)"
point() { # cmd... : one load point against nhi-nac, keep its RESULT line plus the CPU
  # from just before the point until the server is idle again (includes the probe auth
  # and work done after the reply, e.g. batched admission writes): settled_cpu_s
  local out rc=0 s0 s1
  settle; s0=$(ticks)
  local spy=
  if [ -n "${PYSPY:-}" ]; then
    mkdir -p "$PYSPY"; NPOINT=$((${NPOINT:-0} + 1))
    "$(dirname "$PY")/py-spy" record --nonblocking --format raw -r 250 -p "$NHI_PID" \
      -o "$PYSPY/point-$NPOINT.txt" > /dev/null 2>&1 & spy=$!
  fi
  out=$("$@" 2>&1) || rc=$?
  settle; s1=$(ticks)
  if [ -n "$spy" ]; then kill -INT "$spy"; wait "$spy" || true; fi
  echo "$out" | grep -v '^RESULT' || true
  echo "   until idle again: server_cpu=$(echo "scale=2; ($s1 - $s0) / $TCK" | bc)s"
  echo "$out" | grep '^RESULT' | sed "s/\$/ settled_cpu_s=$(echo "scale=2; ($s1 - $s0) / $TCK" | bc)/" >> "$WORK/nhi.results" \
    || echo "RESULT failed rc=$rc: $*" >> "$WORK/nhi.results"
  [ "$rc" = 0 ] || echo "   (exit $rc)"
  kill -0 "$NHI_PID" 2>/dev/null || { echo "nhi-nac died"; tail "$WORK/nhi/serve.log"; exit 1; }
}
C="$WORK/nhi/certs"
echo "== EAP-TLS: eapol_test, one process per auth, full handshake, $EAP_TOTAL auths or ${EAP_DURATION}s per point"
for tls in $EAP_TLS; do for k in $EAP_K; do
  point "$PEER/eaptls_load.sh" 127.0.0.1 "$AUTH" "$SECRET" "$C" "$k" "$EAP_TOTAL" "$EAP_DURATION" "$tls"
done; done
if [ -n "$EAP_REAUTH_K" ]; then
  echo "== EAP-TLS: eapol_test -r$EAP_REAUTH ($((EAP_REAUTH + 1)) full handshakes per process), $EAP_REAUTH_TOTAL auths or ${EAP_DURATION}s per point"
  for tls in $EAP_TLS; do for k in $EAP_REAUTH_K; do
    REAUTH=$EAP_REAUTH point "$PEER/eaptls_load.sh" 127.0.0.1 "$AUTH" "$SECRET" "$C" "$k" "$EAP_REAUTH_TOTAL" "$EAP_DURATION" "$tls"
  done; done
fi
echo "== MAB/PAP: mab_load.py, closed loop, $MAB_TOTAL requests or ${MAB_DURATION}s per point"
for c in $MAB_C; do
  point python3 "$PEER/mab_load.py" 127.0.0.1 "$AUTH" "$SECRET" --total "$MAB_TOTAL" \
    --duration "$MAB_DURATION" --concurrency "$c" --procs 1 --macs "$N_MAB" --vlan 200
done
echo "nhi-nac store counters: $(curl -fsS "http://127.0.0.1:$API/metrics" | grep '^nhi_radius_store_events_total' | sed 's/nhi_radius_store_events_total//' | tr '\n' ' ')"
AB_LINES=
if [ "$MAB_AB_ROUNDS" -gt 0 ]; then
  echo "== MAB/PAP interleaved: FreeRADIUS and nhi-nac in turn, $MAB_AB_ROUNDS rounds x $MAB_AB_TOTAL requests, C=$MAB_AB_C"
  FRW="$WORK/fr-ab"; FR_AB_PORT=$(pick_ports 3); mkdir -p "$FRW"
  FR_PKI="$WORK/fr/pki"
  [ -f "$FR_PKI/ca.pem" ] || { FR_PKI="$FRW/pki"; "$PEER/make_pki.sh" "$FR_PKI" 2 > /dev/null; }
  "$PEER/setup_freeradius.sh" "$FRW/raddb" "$FR_PKI" "$FR_AB_PORT" "$SECRET" 1.3 "$N_MAB" > /dev/null
  freeradius -f -d "$FRW/raddb" > "$FRW/freeradius.out" 2>&1 &
  FR_AB_PID=$!
  for _ in $(seq 100); do ss -Huln "sport = :$FR_AB_PORT" | grep -q . && break; sleep 0.1; done
  fr_ticks() { awk '{print $14 + $15}' "/proc/$FR_AB_PID/stat"; }
  ab_point() { # fr|nhi : one MAB point; prints "<server> <requests> <window ticks> <settled ticks>"
    local who=$1 port pid out s0 s1
    if [ "$who" = fr ]; then port=$FR_AB_PORT; pid=$FR_AB_PID; else port=$AUTH; pid=$NHI_PID; settle; fi
    s0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(SERVER_PID=$pid python3 "$PEER/mab_load.py" 127.0.0.1 "$port" "$SECRET" --total "$MAB_AB_TOTAL" \
      --duration "$MAB_DURATION" --concurrency "$MAB_AB_C" --procs 1 --macs "$N_MAB" --vlan 200 2>&1) || true
    [ "$who" = nhi ] && settle
    s1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "$out" | grep '^RESULT' | sed "s/^RESULT/AB $who/; s/\$/ settled_cpu_s=$(echo "scale=2; ($s1 - $s0) / $TCK" | bc)/"
  }
  for r in $(seq "$MAB_AB_ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="fr nhi"; else order="nhi fr"; fi
    for who in $order; do
      line=$(ab_point "$who"); AB_LINES+="$line"$'\n'
      echo "   round $r: $line"
    done
  done
  kill "$FR_AB_PID"; FR_AB_PID=
fi
RSS_LINE=
if [ "$EAP_SESSIONS" -gt 0 ]; then
  echo "== nhi-nac memory: $EAP_SESSIONS EAP-TLS conversations held mid-handshake (Identity, ClientHello sent, first server fragment received)"
  RSS_LINE=$("$PY" "$HERE/radius/eap_sessions.py" 127.0.0.1 "$AUTH" "$SECRET" --sessions "$EAP_SESSIONS" --pid "$NHI_PID" --metrics "http://127.0.0.1:$API/metrics" 2>&1) || true
  echo "$RSS_LINE"
fi
kill "$NHI_PID"
for _ in $(seq 100); do kill -0 "$NHI_PID" 2>/dev/null || break; sleep 0.1; done
NHI_PID=

echo
echo "################ figures (server CPU per completed auth, from /proc/PID/stat utime+stime)"
"$PY" "$HERE/radius/figures.py" "$WORK/fr.results" "$WORK/nhi.results" "$RSS_LINE"
if [ -n "$AB_LINES" ]; then
  printf '%s' "$AB_LINES" > "$WORK/ab.results"
  "$PY" "$HERE/radius/figures.py" --interleaved "$WORK/ab.results"
fi
