#!/usr/bin/env bash
# Instructions per MAB request through RadiusServer.receive() (engine only), counted by
# valgrind's callgrind: the same build and inputs give the same count whatever else the
# machine does, unlike CPU seconds on a shared VM. Two runs that build the same 3,000
# requests and serve 1,000 and 3,000 of them; the difference / 2,000 is the figure.
#   bench/radius/mab_instructions.sh      (about a minute; apt-get install -y valgrind)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
command -v valgrind >/dev/null || { echo "missing valgrind: apt-get install -y valgrind" >&2; exit 2; }
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$REPO/bench/radius/mab_micro.py" \
    3000 --only "$1" 2>&1 | grep -o 'Collected : [0-9]*' | grep -o '[0-9]*'
}
a=$(count 1000); b=$(count 3000)
echo "MAB receive(): $(((b - a) / 2000)) instructions per request (callgrind, $(git -C "$REPO" rev-parse --short HEAD))"
