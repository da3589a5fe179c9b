"""Segment matcher benchmark: compile, bulk assignment, preview diff, per-request lookup.

Prints figures; asserts nothing. Usage::

    .venv/bin/python bench/segments.py [--count 1000000] [--teams 40]

The map is the shipped starter map plus one rule per (team, env) pair, so that it
has the size of a real organisation's map (about a hundred rules). Every identity
carries a unique ``host`` label, which the map tests with ``exists``: the memo must
not grow with the population.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# This file has the name of the package it measures: keep its own directory off the
# import path, or "import segments" would import this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import segments  # noqa: E402
from segments import (  # noqa: E402
    CompiledMatcher,
    Subject,
    diff_assignments,
    dump_segment_map,
    load_segment_map,
    validate_segment_map,
)

STARTER = (Path(segments.__file__).parent / "examples" / "starter.yaml").read_text()
KINDS = ("device", "workload", "service_account", "api_key", "ai_agent", "rpa_bot")
FUNCTIONS = ("printer", "mfp", "camera", "badge-reader", "hvac", "phone", "laptop-dock")
ENVS = ("prod", "staging", "dev", "ci", "qa")


def build_map_text(teams: int, printers_vlan: int = 120) -> str:
    """The starter map, with per-team segments and rules inserted before the generic ones."""
    segs = "".join(
        f"  team{t}-{env}:\n    vlan: {1000 + t * 10 + e}\n"
        for t in range(teams)
        for e, env in enumerate(("prod", "staging"))
    )
    rules = "".join(
        f"  - name: team{t}-{env}\n    match:\n      kind: [workload, service_account]\n"
        f"      scope: {{env: {env}, host: {{exists: true}}}}\n      owner_team: team{t}\n"
        f"    segment: team{t}-{env}\n"
        for t in range(teams)
        for env in ("prod", "staging")
    )
    text = STARTER.replace("  prod:\n", segs + "  prod:\n", 1)
    text = text.replace("  - name: prod-workloads\n", rules + "  - name: prod-workloads\n", 1)
    return text.replace("vlan: 120\n", f"vlan: {printers_vlan}\n")


def population(n: int, teams: int, seed: int = 7) -> list[tuple[str, Subject]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = rnd.choice(KINDS)
        scope = {"host": f"h{i:07d}", "env": rnd.choice(ENVS)}
        if kind == "device":
            scope["function"] = rnd.choice(FUNCTIONS)
            if rnd.random() < 0.05:
                scope["lab"] = "1"
        if rnd.random() < 0.1:
            scope["zone"] = "pci"
        team = f"team{rnd.randrange(teams * 2)}"  # half the teams have no rule
        out.append((f"{kind}/id-{i:07d}", Subject(kind, scope, team)))
    return out


def timed(label: str, fn: Callable[[], object], repeat: int = 1) -> float:
    best = min(_once(fn) for _ in range(repeat))
    print(f"{label:<52} {best * 1000:10.1f} ms")
    return best


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=40)
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()

    text = build_map_text(args.teams)
    m = load_segment_map(text, "bench.yaml")
    proposed = load_segment_map(build_map_text(args.teams, printers_vlan=121), "proposed.yaml")
    print(f"map: {len(m.segments)} segments, {len(m.rules)} rules, {len(text)} characters")

    timed("validate (parse + check) the map text", lambda: validate_segment_map(text), 5)
    timed("canonical dump", lambda: dump_segment_map(m), 5)
    timed("compile", lambda: CompiledMatcher(m), 20)

    start = time.perf_counter()
    people = population(args.count, args.teams)
    print(
        f"{'build ' + format(args.count, ',') + ' Subjects (setup, not the matcher)':<52} "
        f"{(time.perf_counter() - start) * 1000:10.1f} ms"
    )
    subjects = [s for _, s in people]
    # A million live objects make the cyclic GC's full passes the largest cost in
    # the timings below; a long-running service freezes its steady state the same way.
    gc.collect()
    gc.freeze()

    matcher = CompiledMatcher(m)
    t = timed(
        f"assign {args.count:,} identities (memoized, cold memo)",
        lambda: matcher.assign_all(subjects),
    )
    print(f"{'  per identity':<52} {t / args.count * 1e6:10.3f} µs")
    memo = sum(len(tbl.memo) for tbl in matcher._tables.values()) + len(matcher._other.memo)
    print(f"{'  memo entries after the run':<52} {memo:10d}")
    plain = CompiledMatcher(m, memoize=False)
    timed(f"assign {args.count:,} identities (no memo)", lambda: plain.assign_all(subjects))

    result = None

    def run_diff() -> None:
        nonlocal result
        result = diff_assignments(m, proposed, people)

    t = timed(f"diff two maps over {args.count:,} identities", run_diff)
    assert result is not None
    print(f"{'  identities that move':<52} {len(result.moved):10d}")

    sample = [subjects[i] for i in random.Random(1).sample(range(len(subjects)), args.lookups)]
    for label, mt in (("memoized", matcher), ("no memo", plain)):
        times = []
        assign = mt.assign
        clock = time.perf_counter_ns
        for s in sample:
            start_ns = clock()
            assign(s)
            times.append(clock() - start_ns)
        times.sort()
        print(
            f"per-request lookup ({label}): p50 {times[len(times) // 2] / 1000:.2f} µs, "
            f"p99 {times[int(len(times) * 0.99)] / 1000:.2f} µs, "
            f"mean {statistics.fmean(times) / 1000:.2f} µs"
        )


if __name__ == "__main__":
    main()
