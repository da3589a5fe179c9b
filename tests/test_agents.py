"""AI agents through the agent API (issue 6), on SQLite and PostgreSQL.

Each agent request is signed with the agent's own certificate key over a real loopback
HTTP socket. Grants: auto-approved inside the owner's ceiling, pending outside it until
approved/denied or timed out, ended by themselves. Spawn: the lineage bounds hold, and
every refusal says why and leaves nothing behind (identities, credentials, audit records
and events counted before and after). Behaviour: a burst and a new site each open a
finding and quarantine the agent; the owner releases it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from sqlalchemy import func, select

import pki
from nhi_nac.agent_auth import sign_request
from nhi_nac.agents import AgentService
from nhi_nac.api.server import make_app
from nhi_nac.bootstrap_tokens import create_bootstrap_token
from nhi_nac.ca_service import CaService
from nhi_nac.config import AgentsConfig, Config, GovernanceConfig
from nhi_nac.domain import IdentityRef
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.segment_service import SegmentService, starter_map_text
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import (
    Admission,
    AgentGrant,
    AgentProofNonce,
    AuditRecord,
    Credential,
    Identity,
    NasClient,
    OutboxEvent,
    RadiusSession,
)

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
OWNER = "ops@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


@dataclass
class Agent:
    ref: str
    key: pki.PrivateKey
    cert: x509.Certificate


@dataclass
class Lab:
    inv: Inventory
    clock: Clock
    ca: CaService
    agents: AgentService
    client: TestClient  # type: ignore[type-arg]

    async def enroll(self, ref: str, validity: str | None = None) -> Agent:
        token, _ = await create_bootstrap_token(self.inv, IdentityRef.parse(ref), actor="t")
        e = pki.new_enrollment("p256")
        bundle = await self.ca.enroll(token, e.csr_pem,
                                      None if validity is None else _td(validity))
        return Agent(ref, e.key, x509.load_pem_x509_certificate(bundle.certificate_pem.encode()))

    async def call(self, agent: Agent, method: str, path: str, body: dict[str, Any] | None,
                   *, key: pki.PrivateKey | None = None, header: str | None = None,
                   sign_path: str | None = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        auth = header or sign_request(key or agent.key, agent.cert, method, sign_path or path,
                                      raw, self.clock())
        r = await self.client.request(method, path, data=raw or None, headers={
            "Authorization": auth, "Content-Type": "application/json"})
        return r.status, await r.json()

    async def grant(self, agent: Agent, label: str, duration: str = "30m") -> tuple[int, Any]:
        return await self.call(agent, "POST", "/agent/v1/grants",
                               {"label": label, "duration": duration})

    async def spawn(self, agent: Agent, name: str, scope: dict[str, str] | None = None,
                    lifetime: str | None = None) -> tuple[int, Any, pki.PrivateKey]:
        e = pki.new_enrollment("p256")
        body: dict[str, Any] = {"name": name, "scope": scope or {"env": "prod"},
                                "csr": e.csr_pem.decode()}
        if lifetime:
            body["lifetime"] = lifetime
        status, answer = await self.call(agent, "POST", "/agent/v1/spawn", body)
        return status, answer, e.key

    async def counts(self) -> tuple[int, ...]:
        async with self.inv.db.read() as s:
            return tuple([int(await s.scalar(select(func.count()).select_from(m)) or 0)
                          for m in (Identity, Credential, AuditRecord, OutboxEvent,
                                    AgentGrant)])


def _td(text: str) -> dt.timedelta:
    from nhi_nac.durations import parse_duration
    return parse_duration(text)


@pytest.fixture
async def lab(database: Database, tmp_path: Path) -> AsyncIterator[Lab]:
    clock = Clock()
    inv = Inventory(database, clock)
    config = Config(data_dir=str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    ca = CaService(inv, config)
    ca.init_hierarchy(T0 - dt.timedelta(minutes=5))
    agents = AgentService(inv, ca, AgentsConfig(max_grant="8h", pending_timeout="15m"))
    await inv.add_owner(OWNER, "Ops", "platform", actor="t")
    await inv.add_identity(NewIdentity.build("ai_agent", "planner", OWNER,
                                             scope={"env": "prod"}), actor="t")
    await agents.set_ceiling(IdentityRef.parse("ai_agent/planner"), {"zone": ["db", "web"]},
                             actor="t")
    server = TestServer(make_app(inv, ca=ca, agents=agents), host="127.0.0.1", port=0)
    async with TestClient(server) as client:
        yield Lab(inv, clock, ca, agents, client)


async def _events(inv: Inventory, prefix: str) -> list[dict[str, Any]]:
    async with inv.db.read() as s:
        rows = (await s.execute(select(OutboxEvent.type, OutboxEvent.payload)
                                .where(OutboxEvent.type.startswith(prefix))
                                .order_by(OutboxEvent.id))).all()
    return [{"type": t, **p} for t, p in rows]


async def test_grant_inside_the_ceiling_is_immediate_and_ends_by_itself(lab: Lab) -> None:
    agent = await lab.enroll("ai_agent/planner")
    status, g = await lab.grant(agent, "zone=db", "20m")
    assert status == 201, g
    assert (g["status"], g["decided_by"], g["label"]) == ("active", "policy", "zone=db")
    assert g["expires_at"].startswith((T0 + dt.timedelta(minutes=20)).isoformat()[:16])
    # Asking again while it lasts returns the same grant, not a second one.
    status, again = await lab.grant(agent, "zone=db", "20m")
    assert status == 201 and again["id"] == g["id"]
    assert [e["type"] for e in await _events(lab.inv, "agent.grant")] == [
        "agent.grant.requested", "agent.grant.approved"]
    lab.clock.advance(minutes=19)
    assert await lab.agents.expire_due() == []
    lab.clock.advance(minutes=1)
    ended = await lab.agents.expire_due()
    assert [(e.id, e.status) for e in ended] == [(g["id"], "expired")]
    assert (await _events(lab.inv, "agent.grant.expired"))[0]["identity"] == "ai_agent/planner"
    tree = await lab.agents.tree(IdentityRef.parse("ai_agent/planner"))
    assert tree[0].grants == () and tree[0].ceiling == {"zone": ["db", "web"]}
    audit = [a.action for a in await lab.inv.audit_entries(limit=10)]
    assert "agent.grant.request" in audit and "agent.grant.expired" in audit


async def test_grant_outside_the_ceiling_waits_for_the_owner(lab: Lab) -> None:
    agent = await lab.enroll("ai_agent/planner")
    status, g = await lab.grant(agent, "zone=pci", "1h")
    assert status == 201 and g["status"] == "pending" and g["expires_at"] is None
    assert "outside the ceiling" in g["reason"]
    lab.clock.advance(minutes=5)
    approved = await lab.agents.decide(g["id"], True, actor="cli:owner")
    assert approved.status == "active" and approved.decided_by == "cli:owner"
    assert approved.expires_at == lab.clock.now + dt.timedelta(hours=1)
    # Denied and timed-out requests never become active.
    _, denied = await lab.grant(agent, "zone=hr", "1h")
    assert (await lab.agents.decide(denied["id"], False, actor="cli:owner")).status == "denied"
    _, late = await lab.grant(agent, "zone=lab", "1h")
    lab.clock.advance(minutes=16)
    assert [(e.id, e.status) for e in await lab.agents.expire_due()] == [(late["id"],
                                                                          "timed_out")]
    with pytest.raises(Exception, match="not pending"):
        await lab.agents.decide(late["id"], True, actor="cli:owner")
    states = {g.label: g.status for g in await lab.agents.grants()}
    assert states == {"zone=pci": "active", "zone=hr": "denied", "zone=lab": "timed_out"}


async def test_grant_refusals_store_nothing(lab: Lab) -> None:
    agent = await lab.enroll("ai_agent/planner")
    before = await lab.counts()
    status, body = await lab.grant(agent, "zone=db", "9h")
    assert status == 400 and "at most 8h" in body["detail"]
    status, body = await lab.grant(agent, "env=prod", "1h")
    assert status == 409 and "already has env=prod" in body["detail"]
    status, body = await lab.grant(agent, "not a label", "1h")
    assert status == 400
    assert await lab.counts() == before


async def test_spawn_a_family_within_its_bounds(lab: Lab) -> None:
    parent = await lab.enroll("ai_agent/planner", "1h")
    status, child, key = await lab.spawn(parent, "worker", {"env": "prod"})
    assert status == 201, child
    assert (child["child"], child["parent"]) == ("ai_agent/worker", "ai_agent/planner")
    cert = x509.load_pem_x509_certificate(child["bundle"]["certificate_pem"].encode())
    assert cert.not_valid_after_utc <= parent.cert.not_valid_after_utc
    view = await lab.inv.get_identity(IdentityRef.parse("ai_agent/worker"))
    assert (view.owner, view.parent) == (OWNER, "ai_agent/planner")
    # The child holds a working certificate: it can spawn a grandchild in turn.
    worker = Agent("ai_agent/worker", key, cert)
    status, grand, _ = await lab.spawn(worker, "helper", {"env": "prod"}, "10m")
    assert status == 201, grand
    tree = await lab.agents.tree(IdentityRef.parse("ai_agent/planner"))
    assert [(n.depth, n.identity) for n in tree] == [
        (0, "ai_agent/planner"), (1, "ai_agent/worker"), (2, "ai_agent/helper")]
    assert tree[1].ceiling == {"zone": ["db", "web"]}  # inherited
    spawned = await _events(lab.inv, "agent.spawned")
    assert [e["identity"] for e in spawned] == ["ai_agent/worker", "ai_agent/helper"]
    actors = {a.actor for a in await lab.inv.audit_entries(limit=20, target="ai_agent/helper")}
    assert actors == {"agent:ai_agent/worker"}


async def test_escalation_attempts_are_refused_and_leave_nothing(lab: Lab) -> None:
    parent = await lab.enroll("ai_agent/planner", "30m")
    before = await lab.counts()

    async def refused(status: int, answer: Any, expect: str) -> None:
        assert status in (400, 401, 403, 409), (status, answer)
        assert expect in answer["detail"], answer
        assert await lab.counts() == before

    status, answer, _ = await lab.spawn(parent, "wide", {"env": "prod", "zone": "db"})
    await refused(status, answer, "wider than its parent")
    status, answer, _ = await lab.spawn(parent, "long", {"env": "prod"}, "2h")
    await refused(status, answer, "cannot outlive its parent")
    # Signed by another key, for another request, or replayed.
    stranger = pki.new_enrollment("p256").key
    body = {"label": "zone=db", "duration": "1m"}
    status, answer = await lab.call(parent, "POST", "/agent/v1/grants", body, key=stranger)
    await refused(status, answer, "signature does not verify")
    status, answer = await lab.call(parent, "POST", "/agent/v1/grants", body,
                                    sign_path="/agent/v1/spawn")
    await refused(status, answer, "another request")
    raw = json.dumps(body).encode()
    header = sign_request(parent.key, parent.cert, "POST", "/agent/v1/grants", raw,
                          lab.clock())
    status, answer = await lab.call(parent, "POST", "/agent/v1/grants", body, header=header)
    assert status == 201
    before = await lab.counts()
    status, answer = await lab.call(parent, "POST", "/agent/v1/grants", body, header=header)
    await refused(status, answer, "replay")
    status, answer = await lab.call(parent, "POST", "/agent/v1/grants", body, header="Bearer x")
    await refused(status, answer, "NHI-Agent")
    # An expired agent certificate can do nothing.
    lab.clock.advance(minutes=31)
    status, answer, _ = await lab.spawn(parent, "late", {"env": "prod"})
    await refused(status, answer, "not valid now")
    status, answer = await lab.grant(parent, "zone=web")
    await refused(status, answer, "not valid now")


async def test_a_proof_used_on_one_node_is_refused_on_another(lab: Lab) -> None:
    # A second node on the same database: its own app, its own in-memory replay guard.
    other = AgentService(lab.inv, lab.ca, AgentsConfig(max_grant="8h", pending_timeout="15m"))
    server = TestServer(make_app(lab.inv, ca=lab.ca, agents=other), host="127.0.0.1", port=0)
    parent = await lab.enroll("ai_agent/planner", "30m")
    e = pki.new_enrollment("p256")
    body = {"name": "worker", "scope": {"env": "prod"}, "csr": e.csr_pem.decode()}
    raw = json.dumps(body).encode()
    header = sign_request(parent.key, parent.cert, "POST", "/agent/v1/spawn", raw, lab.clock())
    status, answer = await lab.call(parent, "POST", "/agent/v1/spawn", body, header=header)
    assert status == 201, answer
    before = await lab.counts()
    async with TestClient(server) as client:
        r = await client.post("/agent/v1/spawn", data=raw, headers={
            "Authorization": header, "Content-Type": "application/json"})
        answer = await r.json()
        assert r.status == 401 and "replay" in answer["detail"], answer
        # A read-only request replayed to the other node is refused the same way.
        get = sign_request(parent.key, parent.cert, "GET", "/agent/v1/grants", b"",
                           lab.clock())
        status, _ = await lab.call(parent, "GET", "/agent/v1/grants", None, header=get)
        assert status == 200
        r = await client.get("/agent/v1/grants", headers={"Authorization": get})
        assert r.status == 401 and "replay" in (await r.json())["detail"]
    assert await lab.counts() == before

    async def remembered() -> int:
        async with lab.inv.db.read() as s:
            return int(await s.scalar(select(func.count()).select_from(AgentProofNonce)) or 0)

    assert await remembered() == 2
    # Once the proofs would be stale anyway, the next request forgets them.
    lab.clock.advance(minutes=4)
    status, _ = await lab.call(parent, "GET", "/agent/v1/grants", None)
    assert status == 200
    assert await remembered() == 1


async def test_revoked_agent_certificate_and_limits(lab: Lab) -> None:
    root = await lab.enroll("ai_agent/planner", "2h")
    # Depth: planner (0) -> a1 (1) -> a2 (2) -> a3 (3); a fourth level is refused.
    chain = [root]
    for name in ("a1", "a2", "a3"):
        status, answer, key = await lab.spawn(chain[-1], name, {"env": "prod"}, "30m")
        assert status == 201, answer
        chain.append(Agent(answer["child"], key, x509.load_pem_x509_certificate(
            answer["bundle"]["certificate_pem"].encode())))
    before = await lab.counts()
    status, answer, _ = await lab.spawn(chain[-1], "a4", {"env": "prod"}, "10m")
    assert status == 400 and "depth limit 3" in answer["detail"]
    assert await lab.counts() == before
    # Fan-out: at most 16 live children per parent.
    for i in range(15):
        status, answer, _ = await lab.spawn(root, f"w{i}", {"env": "prod"}, "5m")
        assert status == 201, answer
    before = await lab.counts()
    status, answer, _ = await lab.spawn(root, "w15", {"env": "prod"}, "5m")
    assert status == 400 and "limit 16" in answer["detail"]
    assert await lab.counts() == before
    # Revoking the root cascades to every descendant certificate in one operation ...
    serials = await lab.inv.revoke_certificates(IdentityRef.parse("ai_agent/planner"),
                                                "keyCompromise", actor="t")
    assert len(serials) == 1 + 3 + 15
    async with lab.inv.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Credential).where(
            Credential.status == "active")) == 0
    revoked = await _events(lab.inv, "certificate.revoked")
    assert {e["identity"] for e in revoked} >= {"ai_agent/a1", "ai_agent/a2", "ai_agent/a3"}
    assert {e["cascade_from"] for e in revoked if e["identity"] != "ai_agent/planner"} == {
        "ai_agent/planner"}
    # ... and a revoked agent certificate is refused.
    before = await lab.counts()
    status, answer = await lab.grant(chain[2], "zone=db")
    assert status == 403 and "revoked" in answer["detail"]
    assert await lab.counts() == before


async def test_burst_and_new_site_quarantine_the_agent(lab: Lab) -> None:
    cfg = AgentsConfig(burst_requests=8, window="10m")
    segments = SegmentService(lab.inv)
    await segments.apply(starter_map_text(), "starter.yaml", author="t")
    gov = Governance(lab.inv, GovernanceConfig(), segments.vlan_of, cfg)
    agent = await lab.enroll("ai_agent/planner")
    for i in range(9):  # a scripted burst: nine distinct access requests in a minute
        status, g = await lab.grant(agent, f"task=t{i}", "5m")
        assert status == 201 and g["status"] == "pending"
    result = await gov.scan(behaviour_only=True)
    assert result.opened == ("burst ai_agent/planner",)
    burst = next(f for f in await gov.findings() if f.type == "burst")
    assert burst.evidence["requests_in_window"] == 9 and burst.severity == "high"
    quarantined_at, reason = await lab.inv.quarantine_state(IdentityRef.parse("ai_agent/planner"))
    assert quarantined_at is not None and reason == "finding burst"
    await segments.refresh_overlays()
    hit = segments.lookup_for("ai_agent/planner", "ai_agent", {"env": "prod"}, None, None)
    assert hit is not None and hit.segment is not None and hit.segment.name == "quarantine"
    # A quarantined agent cannot widen its access or spawn.
    status, answer = await lab.grant(agent, "zone=db")
    assert status == 403 and "quarantined" in answer["detail"]
    # The owner releases it; the behaviour findings resolve once the window has passed.
    assert await lab.inv.release(IdentityRef.parse("ai_agent/planner"), actor="cli:owner") == [
        "ai_agent/planner"]
    lab.clock.advance(minutes=11)
    await lab.agents.expire_due()
    assert "burst ai_agent/planner" in (await gov.scan(behaviour_only=True)).resolved

    # New site: seen at HQ for days, then at a branch office.
    async with lab.inv.db.transaction() as s:
        for name, site in (("sw-hq", "hq"), ("sw-branch", "branch")):
            s.add(NasClient(name=name, address="192.0.2.1/32" if site == "hq"
                            else "192.0.2.2/32", secret="x" * 20, site=site,
                            vendor="generic", require_message_authenticator=True,
                            created_at=T0))
        for days in (3, 2, 1):
            s.add(Admission(at=lab.clock.now - dt.timedelta(days=days), nas="sw-hq", port="",
                            mac="", method="eap-tls", identity="ai_agent/planner",
                            decision="accept", vlan=300, reasons=[]))
    assert (await gov.scan(behaviour_only=True)).opened == ()
    async with lab.inv.db.transaction() as s:
        s.add(Admission(at=lab.clock.now, nas="sw-branch", port="", mac="", method="eap-tls",
                        identity="ai_agent/planner", decision="accept", vlan=300, reasons=[]))
    result = await gov.scan(behaviour_only=True)
    assert result.opened == ("new_site ai_agent/planner",)
    f = next(f for f in await gov.findings() if f.type == "new_site")
    assert (f.evidence["site"], f.evidence["known_sites"]) == ("branch", ["hq"])
    assert (await lab.inv.quarantine_state(IdentityRef.parse("ai_agent/planner")))[0] is not None
    events = [e["type"] for e in await _events(lab.inv, "identity.")]
    assert events.count("identity.quarantined") == 2 and "identity.released" in events


async def test_fan_out_and_the_widen_spawn_move_sequence(lab: Lab) -> None:
    cfg = AgentsConfig(fan_out_children=2, window="10m")
    gov = Governance(lab.inv, GovernanceConfig(), None, cfg)
    agent = await lab.enroll("ai_agent/planner")
    async with lab.inv.db.transaction() as s:
        for name, site in (("sw-hq", "hq"), ("sw-branch", "branch")):
            s.add(NasClient(name=name, address="192.0.2.1/32" if site == "hq"
                            else "192.0.2.2/32", secret="x" * 20, site=site,
                            vendor="generic", require_message_authenticator=True,
                            created_at=T0))
        s.add(Admission(at=lab.clock.now - dt.timedelta(days=1), nas="sw-hq", port="", mac="",
                        method="eap-tls", identity="ai_agent/planner", decision="accept",
                        vlan=300, reasons=[]))
    status, g = await lab.grant(agent, "zone=db", "30m")  # 1. widen its scope
    assert g["status"] == "active"
    lab.clock.advance(seconds=30)
    for i in range(3):  # 2. spawn, more than the fan-out threshold
        status, answer, _ = await lab.spawn(agent, f"w{i}", {"env": "prod"}, "10m")
        assert status == 201, answer
    assert (await gov.scan(behaviour_only=True)).opened == ("fan_out ai_agent/planner",)
    # (fan-out's default action quarantined the family; release it to see the rest)
    assert len(await lab.inv.release(IdentityRef.parse("ai_agent/planner"),
                                     actor="cli:owner")) == 4
    lab.clock.advance(seconds=30)
    async with lab.inv.db.transaction() as s:  # 3. connect from a new site
        s.add(Admission(at=lab.clock.now, nas="sw-branch", port="", mac="", method="eap-tls",
                        identity="ai_agent/planner", decision="accept", vlan=310,
                        reasons=[]))
    result = await gov.scan(behaviour_only=True)
    assert result.opened == ("new_site ai_agent/planner", "sequence ai_agent/planner")
    seq = next(f for f in await gov.findings() if f.type == "sequence")
    assert seq.evidence["widened_at"] < seq.evidence["spawned_at"] < seq.evidence["new_site_at"]
    tree = await lab.agents.tree(IdentityRef.parse("ai_agent/planner"))
    assert all(n.quarantined for n in tree) and len(tree) == 4


async def test_a_child_enrolled_by_token_never_outlives_its_parent(lab: Lab) -> None:
    await lab.inv.add_identity(NewIdentity.build("ai_agent", "kid", OWNER, scope={"env": "prod"},
                                                 parent="ai_agent/planner"), actor="t")
    before = await lab.counts()
    token, _ = await create_bootstrap_token(lab.inv, IdentityRef.parse("ai_agent/kid"),
                                            actor="t")
    e = pki.new_enrollment("p256")
    with pytest.raises(Exception, match="holds no valid certificate"):
        await lab.ca.enroll(token, e.csr_pem)
    assert (await lab.counts())[1] == before[1]  # no credential stored
    parent = await lab.enroll("ai_agent/planner", "20m")
    for validity, expect in ((dt.timedelta(minutes=30), "cannot outlive its parent"),):
        token, _ = await create_bootstrap_token(lab.inv, IdentityRef.parse("ai_agent/kid"),
                                                actor="t")
        with pytest.raises(Exception, match=expect):
            await lab.ca.enroll(token, pki.new_enrollment("p256").csr_pem, validity)
    token, _ = await create_bootstrap_token(lab.inv, IdentityRef.parse("ai_agent/kid"),
                                            actor="t")
    bundle = await lab.ca.enroll(token, pki.new_enrollment("p256").csr_pem)
    assert bundle.not_after <= parent.cert.not_valid_after_utc  # default 1 h, cut to 20 min


async def test_traffic_volume_and_an_unseen_hour(lab: Lab) -> None:
    cfg = AgentsConfig(window="10m", volume_bytes=10_000_000, off_hours_min_days=3)
    gov = Governance(lab.inv, GovernanceConfig(), None, cfg)
    now = lab.clock.now
    async with lab.inv.db.transaction() as s:
        s.add(NasClient(name="sw-hq", address="192.0.2.1/32", secret="x" * 20, site="hq",
                        vendor="generic", require_message_authenticator=True, created_at=T0))
        # Baseline: four days, always at this hour; sessions of at most 1 MB.
        for days in (4, 3, 2, 1):
            at = now - dt.timedelta(days=days)
            s.add(Admission(at=at, nas="sw-hq", port="", mac="", method="eap-tls",
                            identity="ai_agent/planner", decision="accept", vlan=300,
                            reasons=[]))
            s.add(RadiusSession(nas="sw-hq", nas_address="192.0.2.1",
                                acct_session_id=f"old-{days}", identity="ai_agent/planner",
                                status="stopped", started_at=at, updated_at=at,
                                input_octets=400_000, output_octets=600_000))
    assert (await gov.scan(behaviour_only=True)).opened == ()
    async with lab.inv.db.transaction() as s:
        s.add(RadiusSession(nas="sw-hq", nas_address="192.0.2.1", acct_session_id="now-1",
                            identity="ai_agent/planner", status="active", started_at=now,
                            updated_at=now, input_octets=2_000_000,
                            output_octets=48_000_000))
        s.add(Admission(at=now, nas="sw-hq", port="", mac="", method="eap-tls",
                        identity="ai_agent/planner", decision="accept", vlan=300,
                        reasons=[]))
    result = await gov.scan(behaviour_only=True)
    assert "volume ai_agent/planner" in result.opened
    volume = next(f for f in await gov.findings() if f.type == "volume")
    assert volume.evidence["octets_in_window"] == 50_000_000
    assert volume.evidence["largest_baseline_session"] == 1_000_000
    # The default action for a traffic spike is quarantine.
    assert (await lab.inv.quarantine_state(IdentityRef.parse("ai_agent/planner")))[0]
    # An admission at an hour never seen in four days of baseline: off_hours (notify).
    lab.clock.advance(hours=12)
    async with lab.inv.db.transaction() as s:
        s.add(Admission(at=lab.clock.now, nas="sw-hq", port="", mac="", method="eap-tls",
                        identity="ai_agent/planner", decision="accept", vlan=999,
                        reasons=[]))
    result = await gov.scan(behaviour_only=True)
    assert "off_hours ai_agent/planner" in result.opened
    assert "volume ai_agent/planner" in result.resolved  # out of the window now
    odd = next(f for f in await gov.findings() if f.type == "off_hours")
    assert odd.evidence["hours_utc"] == [lab.clock.now.hour]
    assert odd.evidence["baseline_hours_utc"] == [now.hour] and odd.severity == "medium"


async def test_owner_side_through_the_admin_api(lab: Lab) -> None:
    from nhi_nac import apitokens

    admin = {"Authorization": "Bearer " + await apitokens.create_token(
        lab.inv, "ops", "admin", actor="t")}
    auditor = {"Authorization": "Bearer " + await apitokens.create_token(
        lab.inv, "siem", "auditor", actor="t")}
    base = "/api/v1/identities/ai_agent/planner"
    r = await lab.client.put(base + "/ceiling", headers=admin,
                             json={"ceiling": {"zone": ["db"], "task": "report"}})
    assert r.status == 200, await r.text()
    assert (await r.json())["ceiling"] == {"zone": ["db"], "task": ["report"]}
    r = await lab.client.put(base + "/ceiling", headers=auditor, json={"ceiling": {}})
    assert r.status == 403
    agent = await lab.enroll("ai_agent/planner")
    _, pending = await lab.grant(agent, "zone=pci", "10m")
    r = await lab.client.get("/api/v1/agent-grants", headers=auditor,
                             params={"status": "pending"})
    assert [g["id"] for g in await r.json()] == [pending["id"]]
    r = await lab.client.post(f"/api/v1/agent-grants/{pending['id']}/approve", headers=admin)
    body = await r.json()
    assert r.status == 200 and body["status"] == "active" and body["decided_by"] == "api-token:ops"
    r = await lab.client.post(f"/api/v1/agent-grants/{pending['id']}/deny", headers=admin)
    assert r.status == 409  # decided already
    r = await lab.client.post(base + "/quarantine", headers=admin, json={"reason": "test"})
    assert (await r.json())["quarantined"] == ["ai_agent/planner"]
    r = await lab.client.get(base, headers=auditor)
    shown = await r.json()
    assert shown["quarantine_reason"] == "test" and shown["quarantined_at"]
    r = await lab.client.get(base + "/tree", headers=auditor)
    (node,) = await r.json()
    assert node["quarantined"] is True and node["grants"][0].startswith("zone=pci (active")
    r = await lab.client.post(base + "/release", headers=admin)
    assert (await r.json())["released"] == ["ai_agent/planner"]
    r = await lab.client.post(base + "/release", headers=admin)
    assert r.status == 409
