"""The ``nhi-nac`` command line.

Admin commands work on the database directly (like a local admin tool), each change
audited with the actor ``cli:<user>``. Output is a table for people or JSON with
``--json``; any error prints one line to stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

import pki
from nhi_nac import agent_client, apitokens
from nhi_nac.agents import GRANT_STATES, parse_label
from nhi_nac.app import Services, build, event_loop_factory, initialise, serve
from nhi_nac.bootstrap_tokens import create_bootstrap_token
from nhi_nac.ca_metrics import describe_ca
from nhi_nac.ca_service import CERTIFICATE_STATES
from nhi_nac.config import Config, load_config
from nhi_nac.domain import IdentityKind, IdentityRef, IdentityStatus, format_scope, parse_scope
from nhi_nac.durations import parse_duration
from nhi_nac.enforcement import coa_status
from nhi_nac.enroll_client import (
    Unreachable,
    enroll,
    ensure_not_revoked,
    renew,
    renew_loop,
    renewal_due,
    retrying,
)
from nhi_nac.errors import InvalidInput, NhiError
from nhi_nac.events import tail_events
from nhi_nac.governance import SEVERITY
from nhi_nac.importer import import_identities, parse_import
from nhi_nac.inventory import NewIdentity
from nhi_nac.logs import configure_logging
from nhi_nac.report import FRAMEWORKS, RENDERERS, compliance_report
from nhi_nac.segment_service import SegmentMapRefused, problem_json
from nhi_nac.views import IdentityView, to_json

EXIT_ERROR = 1
EXIT_AUDIT_FAILED = 3
#: The CA (or API) could not be reached or cannot serve now: try again later
#: (sysexits.h EX_TEMPFAIL). A refusal exits EXIT_ERROR.
EXIT_TEMPFAIL = 75


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) if c is not None else "-" for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(to_json(data), indent=2))
    else:
        print(human())


def _status_text(status: str, revocation_reason: str | None) -> str:
    """A credential's status, with the reason of a revocation: ``revoked (keyCompromise)``."""
    return f"{status} ({revocation_reason})" if revocation_reason else status


def _identity_text(v: IdentityView) -> str:
    lines = [
        f"identity     {v.ref}",
        f"status       {v.status}",
        f"owner        {v.owner} ({v.owner_status})",
        f"scope        {format_scope(v.scope) or '-'}",
        f"macs         {', '.join(v.macs) or '-'}",
        f"mab          {'allowed' if v.allow_mab else 'no'}",
        f"parent       {v.parent or '-'}", f"created      {v.created_at.isoformat()}",
        f"last rotated {v.last_rotated_at.isoformat() if v.last_rotated_at else '-'}",
        f"expires      {v.expires_at.isoformat() if v.expires_at else '-'}",
        f"last seen    {v.last_seen_at.isoformat() if v.last_seen_at else '-'}",
        f"retired      {v.retired_at.isoformat() if v.retired_at else '-'}",
    ]
    if v.credentials:
        lines.append("credentials:")
        lines.append(_table([(c.type, c.serial, c.fingerprint[:16],
                              _status_text(c.status, c.revocation_reason),
                              c.expires_at.isoformat() if c.expires_at else None)
                             for c in v.credentials],
                            ("type", "serial", "fingerprint", "status", "expires")))
    return "\n".join(lines)


# -- command handlers: each takes (args, services) -------------------------------------

async def cmd_owner_add(a: argparse.Namespace, s: Services) -> int:
    o = await s.inventory.add_owner(a.email, a.name, a.team or "", actor=_actor())
    _emit(a, o, lambda: f"owner {o.email} added")
    return 0


async def cmd_owner_list(a: argparse.Namespace, s: Services) -> int:
    owners = await s.inventory.list_owners()
    _emit(a, owners, lambda: _table([(o.email, o.name, o.team, o.status, o.identities)
                                     for o in owners],
                                    ("email", "name", "team", "status", "identities")))
    return 0


async def cmd_owner_offboard(a: argparse.Namespace, s: Services) -> int:
    r = await s.inventory.offboard_owner(a.email, a.reassign_to, actor=_actor())

    def human() -> str:
        if r.reassigned_to:
            return (f"owner {r.owner} departed; {len(r.reassigned)} identities reassigned to "
                    f"{r.reassigned_to}")
        text = f"owner {r.owner} departed; {len(r.orphaned)} identities left orphaned"
        return "\n".join([text, *("  " + ref for ref in r.orphaned)])
    _emit(a, r, human)
    return 0


async def cmd_identity_add(a: argparse.Namespace, s: Services) -> int:
    new = NewIdentity.build(kind=a.kind, name=a.name, owner=a.owner, scope=parse_scope(a.scope),
                            macs=a.mac, parent=a.parent, allow_mab=a.allow_mab,
                            description=a.description or "",
                            expires_at=(s.inventory.clock() + parse_duration(a.expires_in))
                            if a.expires_in else None)
    v = await s.inventory.add_identity(new, actor=_actor())
    _emit(a, v, lambda: f"identity {v.ref} added (owner {v.owner})")
    return 0


async def cmd_identity_list(a: argparse.Namespace, s: Services) -> int:
    rows = await s.inventory.list_identities(kind=a.kind, scope=parse_scope(a.scope),
                                             status=a.status, owner=a.owner, limit=a.limit)
    _emit(a, rows, lambda: _table([(v.ref, v.status, v.owner, format_scope(v.scope),
                                    ",".join(v.macs)) for v in rows],
                                  ("identity", "status", "owner", "scope", "macs")))
    return 0


async def cmd_identity_show(a: argparse.Namespace, s: Services) -> int:
    ref = IdentityRef.parse(a.ref)
    v = await s.inventory.get_identity(ref)
    since, reason = await s.inventory.quarantine_state(ref)
    quarantine = f"since {since.isoformat()} ({reason})" if since else "no"
    _emit(a, {**to_json(v), "quarantined_at": to_json(since), "quarantine_reason": reason},
          lambda: _identity_text(v) + f"\nquarantined  {quarantine}")
    return 0


def _status_cmd(status: str) -> Callable[[argparse.Namespace, Services], Awaitable[int]]:
    async def cmd(a: argparse.Namespace, s: Services) -> int:
        v = await s.inventory.set_status(IdentityRef.parse(a.ref), status, actor=_actor())
        _emit(a, v, lambda: f"identity {v.ref} is now {v.status}")
        return 0
    return cmd


async def cmd_nas_add(a: argparse.Namespace, s: Services) -> int:
    secret = a.secret
    if secret == "-":
        secret = sys.stdin.readline().strip()
    n = await s.inventory.add_nas(a.name, a.address, secret, a.vendor, a.site or "",
                                  not a.allow_missing_message_authenticator, actor=_actor())
    _emit(a, n, lambda: f"NAS {n.name} ({n.address}) added")
    return 0


async def cmd_nas_list(a: argparse.Namespace, s: Services) -> int:
    rows = await s.inventory.list_nas()
    _emit(a, rows, lambda: _table([(n.name, n.address, n.vendor, n.site,
                                    "required" if n.require_message_authenticator else "RELAXED")
                                   for n in rows],
                                  ("name", "address", "vendor", "site", "message-auth")))
    return 0


async def cmd_nas_remove(a: argparse.Namespace, s: Services) -> int:
    await s.inventory.remove_nas(a.name, actor=_actor())
    _emit(a, {"removed": a.name}, lambda: f"NAS {a.name} removed")
    return 0


async def cmd_import(a: argparse.Namespace, s: Services) -> int:
    path = Path(a.file)
    try:
        data = path.read_bytes()  # noqa: ASYNC240 - a one-shot CLI, nothing else runs
    except OSError as exc:
        raise NhiError(f"{path}: {exc.strerror}") from None
    owners, rows = parse_import(data, path.name)
    report = await import_identities(s.inventory, owners, rows, actor=_actor(), source=path.name)
    _emit(a, report, lambda: f"imported {report.created} identities from {path.name}")
    return 0


async def cmd_audit_verify(a: argparse.Namespace, s: Services) -> int:
    verdict = await s.inventory.verify_audit()
    _emit(a, {"ok": verdict.ok, "records": verdict.records, "bad_seq": verdict.bad_seq,
              "reason": verdict.reason}, verdict.describe)
    return 0 if verdict.ok else EXIT_AUDIT_FAILED


async def cmd_audit_show(a: argparse.Namespace, s: Services) -> int:
    rows = await s.inventory.audit_entries(limit=a.limit, target=a.target)
    _emit(a, rows, lambda: _table([(e.seq, e.at.isoformat(timespec="seconds"), e.actor, e.action,
                                    e.target) for e in rows],
                                  ("seq", "at", "actor", "action", "target")))
    return 0


async def cmd_token_create(a: argparse.Namespace, s: Services) -> int:
    token = await apitokens.create_token(s.inventory, a.name, a.role, actor=_actor())
    _emit(a, {"name": a.name, "role": a.role, "token": token}, lambda: token)
    return 0


async def cmd_token_revoke(a: argparse.Namespace, s: Services) -> int:
    await apitokens.revoke_token(s.inventory, a.name, actor=_actor())
    _emit(a, {"revoked": a.name}, lambda: f"API token {a.name} revoked")
    return 0


async def cmd_token_list(a: argparse.Namespace, s: Services) -> int:
    rows = await apitokens.list_tokens(s.inventory)
    _emit(a, rows, lambda: _table([(r["name"], r["role"], r["created_at"], r["revoked_at"])
                                   for r in rows], ("name", "role", "created", "revoked")))
    return 0


async def cmd_bootstrap_create(a: argparse.Namespace, s: Services) -> int:
    token, expires = await create_bootstrap_token(s.inventory, IdentityRef.parse(a.ref),
                                                  parse_duration(a.ttl), actor=_actor())
    _emit(a, {"identity": a.ref, "token": token, "expires_at": expires}, lambda: token)
    return 0


async def cmd_governance_scan(a: argparse.Namespace, s: Services) -> int:
    await s.segments.refresh()
    await s.segments.refresh_overlays()
    result = await s.governance.scan()

    def human() -> str:
        lines = [f"governance scan: {result.describe()}"]
        lines += [f"  opened   {x}" for x in result.opened]
        lines += [f"  resolved {x}" for x in result.resolved]
        return "\n".join(lines)
    _emit(a, result, human)
    return 0


async def cmd_governance_due(a: argparse.Namespace, s: Services) -> int:
    rows = await s.governance.due(parse_duration(a.within))
    _emit(a, rows, lambda: _table([(d.due_at.isoformat(timespec="seconds"), d.identity, d.type,
                                    d.serial or d.fingerprint[:16], d.reason) for d in rows],
                                  ("due", "identity", "type", "credential", "because")))
    return 0


async def cmd_events_tail(a: argparse.Namespace, s: Services) -> int:
    await tail_events(s.db, a.limit, a.follow, lambda line: print(line, flush=True))
    return 0


async def cmd_report_compliance(a: argparse.Namespace, s: Services) -> int:
    report = await compliance_report(s.db, a.framework, s.inventory.clock())
    text = RENDERERS[a.format](report)
    if a.output:
        Path(a.output).write_text(text)  # noqa: ASYNC240 - a one-shot CLI
        print(f"wrote {a.output}")
    else:
        sys.stdout.write(text)
    return 0


def _read_map(path: str) -> tuple[str, str]:
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except (OSError, UnicodeDecodeError) as exc:
        raise NhiError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None


async def cmd_segments_show(a: argparse.Namespace, s: Services) -> int:
    current = await s.segments.current_text()
    if current is None:
        raise NhiError("no segment map applied yet (nhi-nac init applies the starter map)")
    counts = await s.segments.identities_per_segment()
    data = {"version": current[0], "text": current[1], "identities_per_segment": counts}

    def human() -> str:
        lines = [f"# segment map version {current[0]}", current[1].rstrip(), "",
                 "# identities per segment:"]
        lines += [f"#   {name}: {n}" for name, n in sorted(counts.items())]
        return "\n".join(lines)
    _emit(a, data, human)
    return 0


async def cmd_segments_validate(a: argparse.Namespace, s: Services) -> int:
    text, name = _read_map(a.file)
    v = await s.segments.validate(text, name)
    _emit(a, {"ok": v.ok, "problems": [problem_json(p) for p in v.problems]},
          lambda: "\n".join([str(p) for p in v.problems] + [
              f"{name}: valid" if v.ok else f"{name}: {len(v.errors)} errors"]))
    return 0 if v.ok else EXIT_ERROR


async def _preview_or_refuse(s: Services, path: str) -> tuple[str, str, list[str]]:
    text, name = _read_map(path)
    p = await s.segments.preview(text, name)
    if p.diff is None:
        for problem in p.validation.problems:
            print(problem, file=sys.stderr)
        raise SegmentMapRefused(p.validation.problems)
    return text, name, p.lines()


async def cmd_segments_diff(a: argparse.Namespace, s: Services) -> int:
    _, _, lines = await _preview_or_refuse(s, a.file)
    _emit(a, {"summary": lines}, lambda: "\n".join(lines))
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise NhiError("not confirmed: run interactively or pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


async def cmd_segments_apply(a: argparse.Namespace, s: Services) -> int:
    text, name, lines = await _preview_or_refuse(s, a.file)
    if not a.json:
        print("\n".join(lines))
    if not a.yes and not _confirm("Apply this segment map?"):
        raise NhiError("not applied")
    info = await s.segments.apply(text, name, author=_actor(), comment=a.comment or "")
    _emit(a, info, lambda: f"segment map version {info.version} applied")
    return 0


async def cmd_segments_history(a: argparse.Namespace, s: Services) -> int:
    rows = await s.segments.history()
    _emit(a, rows, lambda: _table([(v.version, v.applied_at.isoformat(timespec="seconds"),
                                    v.author, v.summary.get("moved", 0), v.comment)
                                   for v in rows],
                                  ("version", "applied", "author", "moved", "comment")))
    return 0


async def cmd_segments_rollback(a: argparse.Namespace, s: Services) -> int:
    if not a.yes and not _confirm(f"Re-apply segment map version {a.version}?"):
        raise NhiError("not rolled back")
    info = await s.segments.rollback(a.version, author=_actor())
    _emit(a, info, lambda: f"version {a.version} re-applied as version {info.version}")
    return 0


async def cmd_ca_init(a: argparse.Namespace, s: Services) -> int:
    now = s.inventory.clock()
    done = list(a.set_up)
    if a.trust_domain and a.trust_domain != s.config.ca.trust_domain:
        raise InvalidInput(f"trust domain {a.trust_domain} differs from the configured "
                           f"ca.trust_domain {s.config.ca.trust_domain}")
    done += await s.ca.make_room(now, a.replace)
    done += s.ca.init_hierarchy(now, a.key_type, a.trust_domain)
    await _publish_new_ca(a, s, done)
    return 0


async def _publish_new_ca(a: argparse.Namespace, s: Services, done: list[str],
                          published: str = "published by the new CA (a running nhi-nac "
                                           "serve issues from it once restarted)") -> None:
    """After ``ca init``, ``ca import`` or ``ca renew``: the service's own certificates
    and a CRL from the CA now on disk."""
    done += s.ca.issue_service_certificates(s.inventory.clock(), force=True)
    crl = await s.ca.publish_crl()
    done.append(f"CRL {crl.number} {published}")
    _emit(a, {"done": done}, lambda: "\n".join(done))


async def cmd_ca_fingerprint(a: argparse.Namespace, s: Services) -> int:
    root = s.ca.issuing_ca().root
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    _emit(a, {"sha256": fingerprint}, lambda: fingerprint)
    return 0


async def cmd_ca_show(a: argparse.Namespace, s: Services) -> int:
    d = await describe_ca(s.ca, s.inventory.clock())

    def human() -> str:
        key = ("here, in " + str(s.ca.dir / "root.key") if d["root_key"] == "here"
               else "offline (ca export-root --offline)")
        lines = [f"trust domain  {d['trust_domain']}", f"root sha256   {d['root_sha256']}",
                 f"root key      {key}"]
        lines.append(_table([(label, c["subject"], c["key"],
                              c["not_after"].strftime("%Y-%m-%dT%H:%M:%SZ"), c["days_left"])
                             if c else (label, "(missing)", None, None, None)
                             for label, c in d["certificates"].items()],
                            ("certificate", "subject", "key", "not after", "days left")))
        crl = d["crl"]
        lines.append("crl           " + (
            f"number {crl['number']}, {crl['entries']} entries, next update "
            f"{crl['next_update']:%Y-%m-%dT%H:%M:%SZ}, at {crl['url']}" if crl else "none yet"))
        lines.append(f"ocsp          {d['ocsp_url']}")
        lines.append("issued        " + ", ".join(f"{n} {state}"
                                                 for state, n in d["issued"].items()))
        if d["warning"]:
            lines.append(f"warning: {d['warning']}")
        return "\n".join(lines)
    _emit(a, d, human)
    return 0


async def cmd_ca_export_root(a: argparse.Namespace, s: Services) -> int:
    s.ca.export_root(Path(a.output), a.offline)
    note = " and removed it from this machine" if a.offline else ""
    _emit(a, {"written": a.output, "offline": a.offline},
          lambda: f"wrote the encrypted root key to {a.output}{note}")
    return 0


async def cmd_ca_import(a: argparse.Namespace, s: Services) -> int:
    def read(path: str) -> bytes:
        return Path(path).read_bytes()  # noqa: ASYNC240 - a one-shot CLI
    passphrase = read(a.key_passphrase_file).strip() if a.key_passphrase_file else None
    done = list(a.set_up)
    done += await s.ca.import_issuing(read(a.cert), read(a.key), read(a.chain),
                                      s.inventory.clock(), passphrase, a.replace)
    await _publish_new_ca(a, s, done)
    return 0


async def cmd_ca_renew(a: argparse.Namespace, s: Services) -> int:
    if a.chain and not a.cert:
        raise NhiError("--chain goes with --cert")
    if a.cert and a.root_key:
        raise NhiError("give --root-key (renew here) or --cert (renewed elsewhere), not both")
    cert = Path(a.cert).read_bytes() if a.cert else None  # noqa: ASYNC240 - one-shot CLI
    chain = Path(a.chain).read_bytes() if a.chain else None  # noqa: ASYNC240
    done = s.ca.renew_issuing(s.inventory.clock(),
                              root_key=Path(a.root_key) if a.root_key else None,
                              cert_pem=cert, chain_pem=chain)
    await _publish_new_ca(a, s, done, "published; a running nhi-nac serve uses the "
                                      "renewed CA within seconds")
    return 0


async def cmd_cert_list(a: argparse.Namespace, s: Services) -> int:
    rows = await s.ca.certificates(IdentityRef.parse(a.identity) if a.identity else None,
                                   parse_duration(a.expiring_within) if a.expiring_within
                                   else None, status=a.status)
    _emit(a, rows, lambda: _table([(c.serial, c.identity, c.profile,
                                    _status_text(c.status, c.revocation_reason),
                                    c.not_after.isoformat(timespec="seconds") if c.not_after
                                    else None) for c in rows],
                                  ("serial", "identity", "profile", "status", "not after")))
    return 0


async def cmd_cert_show(a: argparse.Namespace, s: Services) -> int:
    view, pem = await s.ca.certificate(a.serial)
    _emit(a, {**to_json(view), "pem": pem},
          lambda: "\n".join([f"{k:<18}{v}" for k, v in to_json(view).items()] + [pem]))
    return 0


async def cmd_cert_revoke(a: argparse.Namespace, s: Services) -> int:
    if bool(a.serial) == bool(a.identity):
        raise NhiError("give a SERIAL or --identity KIND/NAME")
    # By identity: its certificates and every descendant's, in one transaction.
    revoked = await s.ca.revoke(serial=a.serial or None, identity=IdentityRef.parse(a.identity)
                                if a.identity else None, reason=a.reason, actor=_actor())
    # "as REASON": also true of one revoked before whose reason was raised to it.
    _emit(a, {"revoked": revoked}, lambda: f"revoked {len(revoked)} certificate(s) as "
          f"{pki.parse_reason(a.reason).value}; CRL re-signed")
    return 0


async def cmd_cert_release(a: argparse.Namespace, s: Services) -> int:
    if bool(a.serial) == bool(a.identity):
        raise NhiError("give a SERIAL or --identity KIND/NAME")
    if a.serial:
        serial = await s.ca.release(a.serial, actor=_actor())
        _emit(a, {"released": [serial]}, lambda: f"released {serial} from hold; CRL re-signed")
        return 0
    released = await s.ca.release_identity(IdentityRef.parse(a.identity), actor=_actor())
    _emit(a, {"released": released},
          lambda: f"released {len(released)} certificate(s) from hold; CRL re-signed"
          if released else f"no certificate of {a.identity} or its descendants is on hold")
    return 0


async def cmd_agent_tree(a: argparse.Namespace, s: Services) -> int:
    ref = IdentityRef.parse(a.ref)
    family = await s.inventory.family(ref)
    nodes = {n.identity: n for n in await s.agents.tree(ref)}

    def line(depth: int, v: IdentityView) -> str:
        n = nodes.get(v.ref)
        until = n.certificate_not_after if n else None
        life = f" cert until {until.isoformat(timespec='minutes')}" if until else ""
        extra = ""
        if n and n.ceiling:
            extra += " ceiling " + ",".join(f"{k}={'|'.join(vs)}" for k, vs in n.ceiling.items())
        if n and n.grants:
            extra += " grants " + "; ".join(n.grants)
        if n and n.quarantined:
            extra += " QUARANTINED"
        return (f"{'  ' * depth}{'└─ ' if depth else ''}{v.ref} [{v.status}] "
                f"owner {v.owner} scope {format_scope(v.scope) or '-'}{life}{extra}")
    _emit(a, [{"depth": d, **to_json(v), **{k: to_json(getattr(nodes[v.ref], k))
                                            for k in ("ceiling", "grants", "quarantined")
                                            if v.ref in nodes}} for d, v in family],
          lambda: "\n".join(line(d, v) for d, v in family))
    return 0


async def cmd_agent_ceiling(a: argparse.Namespace, s: Services) -> int:
    ceiling: dict[str, list[str]] = {}
    for item in a.labels:
        key, value = parse_label(item)
        ceiling.setdefault(key, []).append(value)
    done = await s.agents.set_ceiling(IdentityRef.parse(a.ref), ceiling, actor=_actor())
    _emit(a, {"identity": a.ref, "ceiling": done},
          lambda: f"ceiling of {a.ref}: " + (", ".join(
              f"{k}={'|'.join(v)}" for k, v in done.items()) or "none (every grant asks)"))
    return 0


async def cmd_agent_grants(a: argparse.Namespace, s: Services) -> int:
    rows = await s.agents.grants(IdentityRef.parse(a.identity) if a.identity else None,
                                 a.status)
    _emit(a, rows, lambda: _table(
        [(g.id, g.identity, g.label, g.status, f"{g.duration_seconds}s",
          g.expires_at.isoformat(timespec="seconds") if g.expires_at else None,
          g.decided_by, g.reason) for g in rows],
        ("id", "identity", "label", "status", "for", "expires", "by", "reason")))
    return 0


def _decide_cmd(approve: bool) -> Callable[[argparse.Namespace, Services], Awaitable[int]]:
    async def cmd(a: argparse.Namespace, s: Services) -> int:
        g = await s.agents.decide(a.id, approve, actor=_actor())
        _emit(a, g, lambda: f"grant {g.id} ({g.identity} {g.label}) is {g.status}"
              + (f" until {g.expires_at.isoformat(timespec='seconds')}" if g.expires_at
                 else ""))
        return 0
    return cmd


async def cmd_identity_quarantine(a: argparse.Namespace, s: Services) -> int:
    done = await s.inventory.quarantine(IdentityRef.parse(a.ref), a.reason, actor=_actor())
    _emit(a, {"quarantined": done}, lambda: f"quarantined: {', '.join(done) or 'nothing new'}")
    return 0


async def cmd_identity_release(a: argparse.Namespace, s: Services) -> int:
    done = await s.inventory.release(IdentityRef.parse(a.ref), actor=_actor())
    _emit(a, {"released": done}, lambda: f"released: {', '.join(done)}")
    return 0


def _agent_client(a: argparse.Namespace) -> int:
    if a.sub == "request":
        answer = agent_client.request_grant(a.server, a.dir, a.label, a.duration, a.ca_file)
        _emit(a, answer, lambda: f"grant {answer['id']} {answer['label']}: {answer['status']}"
              f" ({answer['reason']})")
        return 0
    scope = parse_scope(a.scope)
    answer = agent_client.spawn(a.server, a.dir, a.name, scope, a.out, a.lifetime,
                                a.key_type, a.ca_file)
    _emit(a, answer, lambda: f"spawned {answer['child']} under {answer['parent']}: "
          f"certificate {answer['bundle']['serial']} until "
          f"{answer['bundle']['not_after']} in {a.out}")
    return 0


async def cmd_coa_status(a: argparse.Namespace, s: Services) -> int:
    rows = await coa_status(s.db, a.limit)
    _emit(a, rows, lambda: _table([(r["at"], r["kind"], r["identity"], r["nas"], r["session"],
                                    r["status"], r["error_cause"], r["attempts"],
                                    r["trigger"]) for r in rows],
                                  ("at", "kind", "identity", "nas", "session", "status",
                                   "error-cause", "tries", "trigger")))
    return 0


async def cmd_findings_list(a: argparse.Namespace, s: Services) -> int:
    rows = await s.governance.findings(a.type, None if a.all else "open")
    _emit(a, rows, lambda: _table([(f.id, f.type, f.severity, f.state, f.subject,
                                    f.first_seen.isoformat(timespec="seconds")) for f in rows],
                                  ("id", "type", "severity", "state", "subject", "since")))
    return 0


async def cmd_findings_show(a: argparse.Namespace, s: Services) -> int:
    f = await s.governance.show(a.id)
    _emit(a, f, lambda: "\n".join(f"{k:<16}{v}" for k, v in to_json(f).items()))
    return 0


async def cmd_findings_ack(a: argparse.Namespace, s: Services) -> int:
    f = await s.governance.acknowledge(a.id, actor=_actor())
    _emit(a, f, lambda: f"finding {f.id} acknowledged")
    return 0


# -- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --config and --json may stand before or after the subcommand; the subcommands'
    # copies default to SUPPRESS so they do not overwrite a value given earlier.
    p = argparse.ArgumentParser(prog="nhi-nac",
                                description="Network admission and internal CA for NHIs")
    p.add_argument("--config", help="TOML file (default: $NHI_NAC_CONFIG)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("init", parents=[common], help="create the data directory and database")
    sub.add_parser("serve", parents=[common], help="run the service")
    sub.add_parser("config", parents=[common], help="print the effective configuration")

    owner = sub.add_parser("owner", help="human owners").add_subparsers(dest="sub", required=True)
    o = owner.add_parser("add", parents=[common], help="add a human owner")
    o.add_argument("email", help="the owner's email address (their key)")
    o.add_argument("--name", required=True, help="display name")
    o.add_argument("--team", help="team or department")
    o.set_defaults(fn=cmd_owner_add)
    owner.add_parser("list", parents=[common], help="every owner and their status").set_defaults(
        fn=cmd_owner_list)
    o = owner.add_parser("offboard", parents=[common],
                         help="an owner leaves: reassign their identities, or leave them "
                              "orphaned (a finding)")
    o.add_argument("email")
    o.add_argument("--reassign-to", metavar="EMAIL",
                   help="active owner who takes over every identity")
    o.set_defaults(fn=cmd_owner_offboard)

    ident = sub.add_parser("identity", help="the inventory").add_subparsers(dest="sub",
                                                                              required=True)
    i = ident.add_parser("add", parents=[common], help="add an identity to the inventory")
    i.add_argument("kind", help=", ".join(IdentityKind))
    i.add_argument("name", help="unique within its kind")
    i.add_argument("--owner", help="owner email (required)")
    i.add_argument("--scope", action="append", default=[], metavar="K=V",
                   help="a scope label (repeat); the segment map places the identity by "
                        "them, dns=NAME allows a DNS name in its certificate")
    i.add_argument("--mac", action="append", default=[], help="MAC address (repeat)")
    i.add_argument("--parent", metavar="KIND/NAME",
                   help="the identity that created it (an agent's sub-agent)")
    i.add_argument("--allow-mab", action="store_true", help="allow MAC-auth-bypass")
    i.add_argument("--description", help="free text")
    i.add_argument("--expires-in", metavar="DURATION", help="lifetime of the identity, e.g. 90d")
    i.set_defaults(fn=cmd_identity_add)
    i = ident.add_parser("list", parents=[common], help="identities, filtered")
    i.add_argument("--kind", help=", ".join(IdentityKind))
    i.add_argument("--scope", action="append", default=[], metavar="K=V",
                   help="only identities with this label (repeat: all of them)")
    i.add_argument("--status", help=", ".join(IdentityStatus))
    i.add_argument("--owner", metavar="EMAIL", help="only this owner's")
    i.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    i.set_defaults(fn=cmd_identity_list)
    for name, fn, text in (
            ("show", cmd_identity_show, "one identity, its labels and credentials"),
            ("suspend", _status_cmd("suspended"), "refuse admission until reactivated"),
            ("retire", _status_cmd("retired"),
             "end its life for good: its certificates are revoked (cessationOfOperation)"),
            ("reactivate", _status_cmd("active"), "make a suspended identity active again"),
            ("quarantine", cmd_identity_quarantine,
             "put it and its descendants on the segment map's fallback (quarantine)"),
            ("release", cmd_identity_release, "lift the quarantine (it and its descendants)")):
        i = ident.add_parser(name, parents=[common], help=text)
        i.add_argument("ref", metavar="KIND/NAME")
        i.set_defaults(fn=fn)
    ident.choices["quarantine"].add_argument("--reason", default="quarantined by an admin",
                                             help="why (kept on the identity and audited)")

    nas = sub.add_parser("nas", help="RADIUS clients").add_subparsers(dest="sub", required=True)
    n = nas.add_parser("add", parents=[common], help="add a RADIUS client (switch, AP)")
    n.add_argument("name")
    n.add_argument("--address", required=True, metavar="IP_OR_CIDR",
                   help="source address(es) its requests come from")
    n.add_argument("--secret", required=True, help="shared secret, or - to read it from stdin")
    n.add_argument("--vendor", default="generic",
                   choices=["generic", "cisco", "aruba", "juniper", "hostapd"],
                   help="for enforcement: a cisco NAS re-authenticates a session by CoA, the "
                        "others get a Disconnect-Request")
    n.add_argument("--site", help="where it stands (free text)")
    n.add_argument("--allow-missing-message-authenticator", action="store_true",
                   help="UNSAFE (Blast-RADIUS): accept Access-Requests without it")
    n.set_defaults(fn=cmd_nas_add)
    nas.add_parser("list", parents=[common], help="RADIUS clients").set_defaults(
        fn=cmd_nas_list)
    n = nas.add_parser("remove", parents=[common], help="remove a RADIUS client")
    n.add_argument("name")
    n.set_defaults(fn=cmd_nas_remove)

    imp = sub.add_parser("import", parents=[common], help="bulk import from CSV or JSON")
    imp.add_argument("file", help="a .csv or .json file of owners and identities")
    imp.set_defaults(fn=cmd_import)

    aud = sub.add_parser("audit", help="the audit chain").add_subparsers(dest="sub", required=True)
    aud.add_parser("verify", parents=[common],
                   help="check the hash chain end to end").set_defaults(fn=cmd_audit_verify)
    x = aud.add_parser("show", parents=[common], help="recent audit records, newest first")
    x.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    x.add_argument("--target", help="only records about this, e.g. workload/web1")
    x.set_defaults(fn=cmd_audit_show)

    boot = sub.add_parser("token", help="enrollment (bootstrap) tokens").add_subparsers(
        dest="sub", required=True)
    b = boot.add_parser("create", parents=[common],
                        help="a single-use token for one identity's first enrollment")
    b.add_argument("ref", metavar="KIND/NAME")
    b.add_argument("--ttl", default="15m", help="lifetime, e.g. 15m (max 24h)")
    b.set_defaults(fn=cmd_bootstrap_create)

    gov = sub.add_parser("governance", help="findings scan").add_subparsers(dest="sub",
                                                                          required=True)
    gov.add_parser("scan", parents=[common],
                   help="look for orphaned, stale, unused, unmanaged and out-of-scope "
                        "identities now").set_defaults(fn=cmd_governance_scan)
    g = gov.add_parser("due", parents=[common], help="credentials due for rotation")
    g.add_argument("--within", default="30d", metavar="DURATION",
                   help="due within this long (30d)")
    g.set_defaults(fn=cmd_governance_due)
    ev = sub.add_parser("events", help="the event stream").add_subparsers(dest="sub",
                                                                        required=True)
    e = ev.add_parser("tail", parents=[common], help="recent events, then follow new ones")
    e.add_argument("--limit", type=int, default=20, help="recent events shown first")
    e.add_argument("--no-follow", dest="follow", action="store_false",
                   help="print the recent events and stop")
    e.set_defaults(fn=cmd_events_tail)
    fnd = sub.add_parser("findings", help="governance findings").add_subparsers(
        dest="sub", required=True)
    f = fnd.add_parser("list", parents=[common], help="open findings")
    f.add_argument("--type", choices=sorted(SEVERITY), help="only this type")
    f.add_argument("--all", action="store_true", help="include resolved findings")
    f.set_defaults(fn=cmd_findings_list)
    for name, fn, text in (("show", cmd_findings_show, "one finding"),
                           ("ack", cmd_findings_ack,
                            "acknowledge a finding (it stays until its cause is gone)")):
        f = fnd.add_parser(name, parents=[common], help=text)
        f.add_argument("id", type=int)
        f.set_defaults(fn=fn)

    seg = sub.add_parser("segments", help="segment maps").add_subparsers(dest="sub",
                                                                        required=True)
    seg.add_parser("show", parents=[common], help="the segment map in force").set_defaults(
        fn=cmd_segments_show)
    for name, fn, text in (
            ("validate", cmd_segments_validate, "check a map file; errors give line and reason"),
            ("diff", cmd_segments_diff, "which identities a map file would move, and where")):
        x = seg.add_parser(name, parents=[common], help=text)
        x.add_argument("file", help="a segment map (YAML)")
        x.set_defaults(fn=fn)
    x = seg.add_parser("apply", parents=[common],
                       help="validate a map file and put it in force (a new version)")
    x.add_argument("file", help="a segment map (YAML)")
    x.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    x.add_argument("--comment", help="why (kept in the history and the audit trail)")
    x.set_defaults(fn=cmd_segments_apply)
    seg.add_parser("history", parents=[common], help="every version applied").set_defaults(
        fn=cmd_segments_history)
    x = seg.add_parser("rollback", parents=[common],
                       help="put an earlier version in force again (as a new version)")
    x.add_argument("version", type=int)
    x.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    x.set_defaults(fn=cmd_segments_rollback)

    ca = sub.add_parser("ca", help="the internal CA").add_subparsers(dest="sub", required=True)
    c = ca.add_parser("init", parents=[common],
                      help="create a root and an issuing CA (nhi-nac init does this once)")
    c.add_argument("--trust-domain", help="SPIFFE trust domain (default: ca.trust_domain)")
    c.add_argument("--key-type", choices=["p256", "p384", "ed25519", "rsa3072"],
                   help="CA key type (default: ca.key_type, p256)")
    c.add_argument("--replace", action="store_true",
                   help="set aside the CA there (init made one) if it has issued nothing")
    c.set_defaults(fn=cmd_ca_init)
    c = ca.add_parser("fingerprint", parents=[common],
                      help="SHA-256 of the root CA certificate (for enroll --root-fingerprint)")
    c.set_defaults(fn=cmd_ca_fingerprint)
    c = ca.add_parser("show", parents=[common],
                      help="the CA at a glance: its certificates and when they end, where "
                           "the root key is, the CRL, what was issued")
    c.set_defaults(fn=cmd_ca_show)
    c = ca.add_parser("export-root", parents=[common],
                      help="copy the root key (still encrypted) to a new file")
    c.add_argument("-o", "--output", required=True, help="the new file (0600)")
    c.add_argument("--offline", action="store_true", help="remove the root key from here")
    c.set_defaults(fn=cmd_ca_export_root)
    c = ca.add_parser("renew", parents=[common],
                      help="extend the issuing CA's life: same name and key, certified "
                           "again by the root (what it issued stays valid)")
    c.add_argument("--root-key", metavar="FILE",
                   help="the root key 'ca export-root' wrote, if it is not here")
    c.add_argument("--cert", metavar="FILE",
                   help="a renewal signed elsewhere (a CA brought in with 'ca import')")
    c.add_argument("--chain", metavar="FILE",
                   help="with --cert: the certificates above it, if they changed")
    c.set_defaults(fn=cmd_ca_renew)
    c = ca.add_parser("import", parents=[common], help="bring your own issuing CA")
    c.add_argument("--cert", required=True, help="the issuing CA's certificate (PEM)")
    c.add_argument("--key", required=True, help="its private key (PEM, maybe encrypted)")
    c.add_argument("--chain", required=True, help="certificates above it, up to the root")
    c.add_argument("--key-passphrase-file", help="passphrase of an encrypted --key")
    c.add_argument("--replace", action="store_true",
                   help="set aside the CA there (init made one) if it has issued nothing")
    c.set_defaults(fn=cmd_ca_import)
    cert = sub.add_parser("cert", help="issued certificates").add_subparsers(dest="sub",
                                                                           required=True)
    c = cert.add_parser("list", parents=[common], help="certificates issued to identities")
    c.add_argument("--identity", metavar="KIND/NAME", help="only this identity's")
    c.add_argument("--expiring-within", metavar="DURATION",
                   help="only valid ones that end within this long (e.g. 7d), soonest first")
    c.add_argument("--status", choices=CERTIFICATE_STATES,
                   help="only these: valid, expired, revoked (for good) or held (on hold)")
    c.set_defaults(fn=cmd_cert_list)
    c = cert.add_parser("show", parents=[common], help="one certificate, with its PEM")
    c.add_argument("serial", help="hexadecimal (as cert list prints it)")
    c.set_defaults(fn=cmd_cert_show)
    c = cert.add_parser("revoke", parents=[common],
                        help="revoke a certificate, or an identity's (and its descendants')")
    c.add_argument("serial", nargs="?")
    c.add_argument("--identity", metavar="KIND/NAME",
                   help="every valid certificate of it and its descendants")
    c.add_argument("--reason", default="unspecified",
                   help="RFC 5280 reason, e.g. keyCompromise; a revoked certificate can be "
                        "raised to keyCompromise, and a certificateHold made permanent")
    c.set_defaults(fn=cmd_cert_revoke)
    c = cert.add_parser("release", parents=[common],
                        help="take a certificate off hold (revoked as certificateHold)")
    c.add_argument("serial", nargs="?")
    c.add_argument("--identity", metavar="KIND/NAME",
                   help="every held certificate of it and its descendants")
    c.set_defaults(fn=cmd_cert_release)
    e = sub.add_parser("enroll", parents=[common], help="enroll this host (workload side)")
    e.add_argument("--server", required=True, help="base URL of the nhi-nac API")
    e.add_argument("--token", help="bootstrap token (not with --renew)")
    e.add_argument("--out", required=True, help="directory for key.pem, cert.pem, ...")
    e.add_argument("--renew", action="store_true", help="renew with the current certificate")
    e.add_argument("--loop", action="store_true", help="keep renewing, by 2/3 of each lifetime")
    e.add_argument("--if-due", action="store_true",
                   help="with --renew: only once the renewal time (60-67%% of the "
                        "lifetime) has come")
    e.add_argument("--key-type", default="p256", choices=["p256", "p384", "ed25519",
                                                          "rsa3072"],
                   help="the key generated here, on first enrollment (p256)")
    e.add_argument("--validity", help="requested lifetime, e.g. 24h (within the profile)")
    e.add_argument("--dns", action="append", metavar="NAME",
                   help="a DNS name for the certificate besides its SPIFFE ID (repeat for "
                        "more; only names the identity's scope lists are granted). A "
                        "renewal keeps the current certificate's names unless given")
    e.add_argument("--retry-for", metavar="DURATION",
                   help="while the CA cannot be reached or answers 5xx/408/425/429, try "
                        "again for up to this long (e.g. 50m), after growing, randomised "
                        "delays; then exit 75. A refusal exits 1 at once")
    e.add_argument("--ca-file", help="CA bundle to trust for an https:// server")
    e.add_argument("--root-fingerprint",
                   help="first enrollment over https://: trust the server's root CA if its "
                        "SHA-256 fingerprint is this (nhi-nac ca fingerprint)")

    coa = sub.add_parser("coa", help="RFC 5176 enforcement").add_subparsers(dest="sub",
                                                                           required=True)
    c = coa.add_parser("status", parents=[common], help="requests sent and their answers")
    c.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    c.set_defaults(fn=cmd_coa_status)

    agent = sub.add_parser("agent", help="AI agents").add_subparsers(dest="sub", required=True)
    g = agent.add_parser("tree", parents=[common], help="an identity and its descendants")
    g.add_argument("ref", metavar="KIND/NAME")
    g.set_defaults(fn=cmd_agent_tree)
    g = agent.add_parser("ceiling", parents=[common],
                         help="set the owner-approved ceiling (no labels: clear it)")
    g.add_argument("ref", metavar="KIND/NAME")
    g.add_argument("labels", nargs="*", metavar="KEY=VALUE",
                   help="allowed label values; repeat a key for several values")
    g.set_defaults(fn=cmd_agent_ceiling)
    g = agent.add_parser("grants", parents=[common], help="dynamic grants")
    g.add_argument("--identity", metavar="KIND/NAME", help="only this identity's")
    g.add_argument("--status", choices=GRANT_STATES, help="only grants in this state")
    g.set_defaults(fn=cmd_agent_grants)
    for name, approve in (("approve", True), ("deny", False)):
        g = agent.add_parser(name, parents=[common], help=f"{name} a pending grant")
        g.add_argument("id", type=int)
        g.set_defaults(fn=_decide_cmd(approve))
    g = agent.add_parser("request", parents=[common],
                         help="(agent side) ask for a time-boxed scope label")
    g.add_argument("label", metavar="KEY=VALUE")
    g.add_argument("--for", dest="duration", required=True, help="how long, e.g. 30m")
    g = agent.add_parser("spawn", parents=[common], help="(agent side) create a sub-agent")
    g.add_argument("--name", required=True, help="the sub-agent's name")
    g.add_argument("--scope", action="append", default=[], metavar="K=V",
                   help="a label (repeat); within the parent's own scope")
    g.add_argument("--out", required=True, help="directory for the child's key and cert")
    g.add_argument("--lifetime", help="child certificate lifetime (<= the parent's)")
    g.add_argument("--key-type", default="p256", choices=["p256", "p384", "ed25519",
                                                          "rsa3072"],
                   help="the child's key, generated here (p256)")
    for g in (agent.choices["request"], agent.choices["spawn"]):
        g.add_argument("--server", required=True, help="base URL of the nhi-nac API")
        g.add_argument("--dir", required=True,
                       help="the agent's enrollment directory (key.pem, cert.pem)")
        g.add_argument("--ca-file", help="CA bundle to trust for an https:// server")

    rep = sub.add_parser("report", help="reports").add_subparsers(dest="sub", required=True)
    r = rep.add_parser("compliance", parents=[common],
                       help="evidence for a framework's controls, from the inventory and audit")
    r.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS),
                   help="the controls to report on")
    r.add_argument("--format", default="html", choices=sorted(RENDERERS),
                   help="html (default; print it to PDF from a browser), json or csv")
    r.add_argument("-o", "--output", help="file to write (default: stdout)")
    r.set_defaults(fn=cmd_report_compliance)

    tok = sub.add_parser("api-token", help="API tokens").add_subparsers(dest="sub", required=True)
    t = tok.add_parser("create", parents=[common],
                       help="a bearer token for the HTTP API (printed once)")
    t.add_argument("name")
    t.add_argument("--role", required=True, choices=["admin", "auditor", "enroller"],
                   help="admin changes anything, auditor reads, enroller mints bootstrap "
                        "tokens")
    t.set_defaults(fn=cmd_token_create)
    t = tok.add_parser("revoke", parents=[common], help="stop accepting an API token")
    t.add_argument("name")
    t.set_defaults(fn=cmd_token_revoke)
    tok.add_parser("list", parents=[common], help="API tokens (never their secret)").set_defaults(
        fn=cmd_token_list)
    return p


def _enroll(a: argparse.Namespace) -> int:
    if a.renew and a.if_due and not renewal_due(a.out):
        # A revoked certificate fails the unit now, not at its renewal time.
        ensure_not_revoked(a.server, a.out, a.ca_file)
        _emit(a, {"renewed": False}, lambda: f"not due yet: {a.out}/cert.pem is fresh")
        return 0
    retry_for = parse_duration(a.retry_for).total_seconds() if a.retry_for else 0.0
    if a.renew:
        bundle = retrying(lambda: renew(a.server, a.out, a.validity, a.ca_file,
                                        a.dns or None), retry_for)
    elif a.token:
        bundle = retrying(lambda: enroll(a.server, a.token, a.out, a.key_type, a.validity,
                                         a.ca_file, a.root_fingerprint, a.dns or ()),
                          retry_for)
    elif not a.loop:
        raise NhiError("give --token TOKEN (first enrollment) or --renew")
    else:
        bundle = {}
    if bundle:
        _emit(a, bundle, lambda: f"enrolled {bundle['identity']}: certificate "
              f"{bundle['serial']} until {bundle['not_after']} in {a.out}")
    if a.loop:
        renew_loop(a.server, a.out, a.ca_file)
    return 0


async def _run_command(args: argparse.Namespace, config: Config) -> int:
    services = build(config)
    try:
        await services.db.check_schema()
        code: int = await args.fn(args, services)
        return code
    finally:
        await services.close()


#: What a shell reports for a process that SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a failure could only be printed
        return code
    except BrokenPipeError:
        # The reader went away (`nhi-nac audit show | head`): no traceback. Python flushes
        # stdout again at exit, so point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging(config.log.format, config.log.level)
        if args.command == "init":
            for line in asyncio.run(initialise(config)):
                print(line)
            return 0
        if args.command == "serve":
            with asyncio.Runner(loop_factory=event_loop_factory(config.event_loop)) as runner:
                runner.run(serve(config))
            return 0
        if args.command == "enroll":
            return _enroll(args)
        args.set_up = []
        if args.command == "ca" and args.sub in ("init", "import"):
            # A set-up command on a fresh machine: the database first, without a CA
            # (what init would do; nothing when it is there already).
            args.set_up = asyncio.run(initialise(config, with_ca=False))
        if args.command == "agent" and args.sub in ("request", "spawn"):
            return _agent_client(args)
        if args.command == "config":
            print(json.dumps(to_json(config), indent=2))
            return 0
        return asyncio.run(_run_command(args, config))
    except Unreachable as exc:
        print(f"nhi-nac: {exc.message}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except NhiError as exc:
        print(f"nhi-nac: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
