#!/usr/bin/env bash
# bench/ca: certificates issued per second through the HTTP enrollment endpoint and server CPU
# per certificate, nhi-nac vs CloudFlare CFSSL (Debian golang-cfssl), at the same concurrency,
# in one run; plus CRL build time with 100,000 revoked entries and OCSP responses per second.
#
#   bench/ca.sh                      (about 1-2 minutes on 2 vCPUs)
#
# CFSSL: ../shared/bench/ca/run_cfssl_peer.sh N C PORT (cfssl serve, fresh P-256 CA, loopback,
#   http_sign_load.py: closed loop, C keep-alive connections, one fixed CSR body).
# nhi-nac: a real `nhi-nac serve` process with a temporary data dir (SQLite, P-256 CA), one
#   workload identity per enrollment (`nhi-nac import`), one single-use bootstrap token and a
#   fresh P-256 key/CSR each (bench/ca/prepare.py, in-process, before the server starts),
#   driven by bench/ca/load.py: the same closed-loop method, one body per request,
#   POST /pki/v1/enroll -> 201. WARM enrollments first (not counted). The two servers are
#   measured alternately, ROUNDS times each; the summary takes medians.
# Server CPU = utime+stime of the server PID and its child processes (/proc/*/stat) over the
#   load, / certificates.
# OCSP: POST /pki/v1/ocsp, DER requests with nonce for an issued certificate, concurrency OCSP_C.
# CRL: bench/ca/crl.py with the server stopped: pki.build_crl on CRL_N entries with the
#   service's issuing CA (every entry encoded), a re-sign of the same entries kept encoded
#   (what every later CRL costs), then the service path (CRL_N revoked rows in the DB,
#   `revoke` one), with the longest event-loop stall during each (reading and signing run
#   in worker threads).
#
# Env knobs (defaults): N=2000 C=8 ROUNDS=3 WARM=200 OCSP_N=5000 OCSP_C=8 CRL_N=100000
#   CRL_REPS=3 PEER=/work/shared/bench/ca  KEEP=1 keeps the work dir
#   WORKERS=1 nhi-nac API processes (api.workers; server CPU counts them all)
#   CFSSL=0 skips the CFSSL rounds, OCSP and CRL (quick nhi-nac-only enrollment iterations)
#   FLOOR=1 also measures, alternately with the others, bench/ca/floor.py: the same aiohttp
#     endpoint doing only the CA's work (CSR checks + signing, no token, governance,
#     database, audit or log), the part of nhi-nac's cost that is the HTTP stack and the
#     signing path alone; and floor.py --http-only, the same server answering every request
#     with one canned certificate reply (the HTTP stack and JSON alone) (FLOOR=0 skips both)
#   PG=postgresql://postgres@127.0.0.1 runs nhi-nac on a fresh PostgreSQL database created
#     there for the run (dropped at the end) instead of SQLite; needed for WORKERS > 1.
#     Where that server runs with autovacuum off, each nhi-nac round starts with a
#     VACUUM ANALYZE of the bench database (what autovacuum would have done meanwhile:
#     without it the tables the rounds grow go unanalyzed and bloat, and each round is
#     slower than the one before)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEER=${PEER:-/work/shared/bench/ca}
NHI=${NHI:-$REPO/.venv/bin/nhi-nac}
PY=${PY:-$REPO/.venv/bin/python}
N=${N:-2000}; C=${C:-8}; ROUNDS=${ROUNDS:-3}; WARM=${WARM:-200}; CFSSL=${CFSSL:-1}; WORKERS=${WORKERS:-1}; FLOOR=${FLOOR:-1}
OCSP_N=${OCSP_N:-5000}; OCSP_C=${OCSP_C:-8}; CRL_N=${CRL_N:-100000}; CRL_REPS=${CRL_REPS:-3}

for b in cfssl curl python3 openssl ss; do
  command -v $b >/dev/null || { echo "missing $b: apt-get install -y golang-cfssl curl openssl iproute2" >&2; exit 2; }
done
[ -x "$NHI" ] || { echo "missing $NHI (make test / pip install -e .)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/nhi-ca-bench.XXXXXX)
NHI_PID=
FLOOR_PID=; HTTP_PID=
stop_floor() {
  for pid in $FLOOR_PID $HTTP_PID; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
  FLOOR_PID=; HTTP_PID=
}
stop_nhi() {
  if [ -n "$NHI_PID" ] && kill -0 "$NHI_PID" 2>/dev/null; then
    kill "$NHI_PID"
    for _ in $(seq 100); do kill -0 "$NHI_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NHI_PID" 2>/dev/null && kill -9 "$NHI_PID"
    wait "$NHI_PID" 2>/dev/null || true
  fi
  NHI_PID=
}
PG=${PG:-}; PG_DB=nhi_ca_bench_$$
cleanup() {
  stop_floor
  stop_nhi
  [ -n "$PG" ] && psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true
  [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port free for TCP and UDP, $1 consecutive
  local n=$1 base p ok
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 30000)); ok=1
    for ((p = base; p < base + n; p++)); do
      ! ss -Htuln "sport = :$p" | grep -q . || { ok=0; break; }
    done
    [ $ok = 1 ] && { echo $base; return; }
  done
  echo "no free ports" >&2; exit 2
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "# bench/ca $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname): $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "# cfssl $(cfssl version 2>/dev/null | sed -n 's/^Version: //p') (Debian golang-cfssl $(dpkg-query -W -f '${Version}' golang-cfssl 2>/dev/null)); nhi-nac $("$PY" -c 'import importlib.metadata as m; print(m.version("nhi-nac"))') (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty')); $("$PY" -c 'import cryptography, aiohttp, sys; print("Python", sys.version.split()[0], "cryptography", cryptography.__version__, "aiohttp", aiohttp.__version__)')"
VACUUM=0
if [ -n "$PG" ]; then STORE="PostgreSQL $(psql -tA "$PG/postgres" -c 'SHOW server_version') at $PG"
  if [ "$(psql -tA "$PG/postgres" -c 'SHOW autovacuum')" = off ]; then
    VACUUM=1; STORE="$STORE; its autovacuum is off, so VACUUM (ANALYZE) before each nhi-nac round"
  fi
else STORE="SQLite (the embedded default)"; fi
echo "# nhi-nac storage: $STORE"
echo "# enrollment: N=$N per round, C=$C, nhi-nac api.workers=$WORKERS, ROUNDS=$ROUNDS alternating (nhi-nac WARM=$WARM first); OCSP N=$OCSP_N C=$OCSP_C; CRL $CRL_N entries"

# ---------------------------------------------------------------- nhi-nac set-up
P=$(free_port 3)
export NHI_NAC_DATA_DIR=$WORK/data NHI_NAC_API_LISTEN=127.0.0.1:$P \
  NHI_NAC_RADIUS_AUTH_PORT=$((P + 1)) NHI_NAC_RADIUS_ACCT_PORT=$((P + 2)) \
  NHI_NAC_RADIUS_LISTEN='["127.0.0.1"]' NHI_NAC_LOG_FORMAT=json NHI_NAC_LOG_LEVEL=info \
  NHI_NAC_API_WORKERS=$WORKERS
unset NHI_NAC_CONFIG NHI_NAC_DATABASE_URL
if [ -n "$PG" ]; then
  command -v psql >/dev/null || { echo "missing psql: apt-get install -y postgresql-client" >&2; exit 2; }
  psql -q "$PG/postgres" -c "CREATE DATABASE $PG_DB" || exit 2
  export NHI_NAC_DATABASE_URL=$PG/$PG_DB
fi
TOTAL=$((WARM + ROUNDS * N))
t0=$(date +%s.%N)
"$NHI" init > "$WORK/init.log"
"$NHI" owner add bench@example.com --name "Bench Owner" --team bench > /dev/null
{ echo kind,name,owner; for ((i = 0; i < TOTAL; i++)); do echo "workload,w-$i,bench@example.com"; done; } > "$WORK/ids.csv"
"$NHI" import "$WORK/ids.csv" > "$WORK/import.log"
"$PY" "$HERE/ca/prepare.py" w "$TOTAL" "$WORK/bodies.jsonl" 2> "$WORK/prepare.log"
echo "# set-up: $TOTAL workload identities imported, tokens minted, P-256 CSRs built in $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s ($(cat "$WORK/prepare.log"))"

"$NHI" serve > "$WORK/serve.log" 2>&1 &
NHI_PID=$!
for _ in $(seq 150); do curl -sf -o /dev/null "http://127.0.0.1:$P/pki/v1/ca.pem" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$P/pki/v1/ca.pem" || { echo "nhi-nac did not start:" >&2; tail -5 "$WORK/serve.log" >&2; exit 1; }
# With api.workers > 1, wait until every process listens on the API port.
for _ in $(seq 100); do [ "$(ss -Htln "sport = :$P" | wc -l)" -ge "$WORKERS" ] && break; sleep 0.1; done
URL=http://127.0.0.1:$P/pki/v1/enroll
echo "nhi-nac  warm-up  $("$PY" "$HERE/ca/load.py" enroll "$WARM" "$C" "$URL" "$WORK/bodies.jsonl" --pid $NHI_PID --save-cert "$WORK/leaf.pem")"

if [ "$FLOOR" = 1 ]; then
  TD=$("$PY" -c 'from nhi_nac.config import load_config; print(load_config(None).ca.trust_domain)')
  start_floor() { # PORT [--http-only]: a floor server; its PID in $!
    "$PY" "$HERE/ca/floor.py" "$@" > "$WORK/floor-$1.log" 2>&1 &
    for _ in $(seq 100); do ss -Htln "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  }
  FP=$(free_port 1); start_floor "$FP" "$TD"; FLOOR_PID=$!
  FLOOR_URL=http://127.0.0.1:$FP/pki/v1/enroll
  HP=$(free_port 1); start_floor "$HP" "$TD" --http-only; HTTP_PID=$!
  HTTP_URL=http://127.0.0.1:$HP/pki/v1/enroll
  echo "floor    warm-up  $("$PY" "$HERE/ca/load.py" enroll "$WARM" "$C" "$FLOOR_URL" "$WORK/bodies.jsonl" --pid $FLOOR_PID)"
  echo "http     warm-up  $("$PY" "$HERE/ca/load.py" enroll "$WARM" "$C" "$HTTP_URL" "$WORK/bodies.jsonl" --pid $HTTP_PID)"
fi

# ---------------------------------------------------------------- enrollment, alternating
declare -a CF_RATE CF_CPU NH_RATE NH_CPU CF_P50 CF_P99 NH_P50 NH_P99 FL_RATE FL_CPU HT_RATE HT_CPU
for ((r = 1; r <= ROUNDS; r++)); do
  if [ "$CFSSL" = 1 ]; then
  # run_cfssl_peer.sh exits 143 after printing (its EXIT trap's `wait` on the killed cfssl
  # under set -e), so judge it by its output line.
  # Its trap then never reaches `rm -rf`, so remove the work folder it left (new since before).
  before=$(ls -d /tmp/cfssl-peer.* 2>/dev/null || true)
  out=$(bash "$PEER/run_cfssl_peer.sh" "$N" "$C" "$(free_port 1)" || true)
  for d in $(ls -d /tmp/cfssl-peer.* 2>/dev/null || true); do
    grep -qxF "$d" <<<"$before" || { [ -f "$d/serve.log" ] && rm -rf "$d"; }
  done
  [[ $out == *server_cpu_us_per_cert=* ]] || { echo "cfssl peer failed: $out" >&2; exit 1; }
  echo "cfssl    round $r  $out"
  CF_RATE+=("$(field rate "$out")"); CF_CPU+=("$(field server_cpu_us_per_cert "$out")")
  CF_P50+=("$(field p50 "$out")"); CF_P99+=("$(field p99 "$out")")
  fi
  [ "$VACUUM" = 1 ] && psql -q "$PG/$PG_DB" -c "VACUUM (ANALYZE)"
  out=$("$PY" "$HERE/ca/load.py" enroll "$N" "$C" "$URL" "$WORK/bodies.jsonl" --pid $NHI_PID --skip $((WARM + (r - 1) * N)))
  echo "nhi-nac  round $r  $out"
  NH_RATE+=("$(field rate "$out")"); NH_CPU+=("$(field server_cpu_us_per_cert "$out")")
  NH_P50+=("$(field p50 "$out")"); NH_P99+=("$(field p99 "$out")")
  if [ "$FLOOR" = 1 ]; then
    out=$("$PY" "$HERE/ca/load.py" enroll "$N" "$C" "$FLOOR_URL" "$WORK/bodies.jsonl" --pid $FLOOR_PID --skip $((WARM + (r - 1) * N)))
    echo "floor    round $r  $out"
    FL_RATE+=("$(field rate "$out")"); FL_CPU+=("$(field server_cpu_us_per_cert "$out")")
    out=$("$PY" "$HERE/ca/load.py" enroll "$N" "$C" "$HTTP_URL" "$WORK/bodies.jsonl" --pid $HTTP_PID --skip $((WARM + (r - 1) * N)))
    echo "http     round $r  $out"
    HT_RATE+=("$(field rate "$out")"); HT_CPU+=("$(field server_cpu_us_per_cert "$out")")
  fi
done
stop_floor
floor_line() {
  [ "$FLOOR" = 1 ] || return 0
  echo "floor (HTTP + CSR checks + signing only, bench/ca/floor.py): median $(median "${FL_RATE[@]}")/s, server CPU $(median "${FL_CPU[@]}") µs/cert"
  echo "http   (HTTP + JSON only, a canned reply, floor.py --http-only): median $(median "${HT_RATE[@]}")/s, server CPU $(median "${HT_CPU[@]}") µs/request"
}

if [ "$CFSSL" != 1 ]; then
  stop_nhi
  echo "== nhi-nac only (CFSSL=0): median rate $(median "${NH_RATE[@]}")/s, server CPU $(median "${NH_CPU[@]}") µs/cert, p50 $(median "${NH_P50[@]}") ms, p99 $(median "${NH_P99[@]}") ms =="
  floor_line
  exit 0
fi
# ---------------------------------------------------------------- OCSP
ocsp=$("$PY" "$HERE/ca/load.py" ocsp "$OCSP_N" "$OCSP_C" "http://127.0.0.1:$P/pki/v1/ocsp" \
  --cert "$WORK/leaf.pem" --issuer "$NHI_NAC_DATA_DIR/ca/issuing.pem" --pid $NHI_PID)
echo "nhi-nac  OCSP     $ocsp"
echo "# nhi-nac error log lines during the load: $(grep -c "\"level\": *\"error\"" "$WORK/serve.log" || true)"
stop_nhi

# ---------------------------------------------------------------- CRL
SERIAL=$(openssl x509 -in "$WORK/leaf.pem" -noout -serial | cut -d= -f2)
"$PY" "$HERE/ca/crl.py" "$CRL_N" "$CRL_REPS" "$SERIAL" | sed 's/^/nhi-nac  /'

# ---------------------------------------------------------------- summary
cr=$(median "${CF_RATE[@]}"); cc=$(median "${CF_CPU[@]}"); nr=$(median "${NH_RATE[@]}"); nc=$(median "${NH_CPU[@]}")
echo
echo "== summary (medians of $ROUNDS rounds, N=$N, concurrency $C) =="
printf '%-8s %9s %18s %9s %9s\n' server "certs/s" "server CPU µs/cert" "p50 ms" "p99 ms"
printf '%-8s %9s %18s %9s %9s\n' cfssl "$cr" "$cc" "$(median "${CF_P50[@]}")" "$(median "${CF_P99[@]}")"
printf '%-8s %9s %18s %9s %9s\n' nhi-nac "$nr" "$nc" "$(median "${NH_P50[@]}")" "$(median "${NH_P99[@]}")"
python3 -c "print(f'ratios nhi-nac/cfssl: rate {$nr/$cr:.2f}x (target >= 1), server CPU per cert {$nc/$cc:.2f}x (target <= 1)')"
floor_line
echo "OCSP (nhi-nac, concurrency $OCSP_C): $(field rate "$ocsp") responses/s, $(field server_cpu_us_per_resp "$ocsp") µs server CPU per response"
