"""Send one RFC 5176 request with :class:`~nhi_nac.coa.CoaSender` and print the result as
JSON (run inside a test namespace with ``ip netns exec``).

Usage: python -m tests.coa.das_client JSON   where JSON has address, port, secret,
action ("disconnect"|"reauthenticate"), vendor and the SessionIds fields.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys

from nhi_nac.coa import CoaAction, CoaLimits, CoaSender, CoaTarget, SessionIds


async def main(spec: dict[str, str]) -> None:
    nas_ip = spec.get("nas_ip_address")
    session = SessionIds(
        acct_session_id=spec.get("acct_session_id"),
        user_name=spec.get("user_name"),
        calling_station_id=spec.get("calling_station_id"),
        nas_ip_address=ipaddress.ip_address(nas_ip) if nas_ip else None,
        nas_identifier=spec.get("nas_identifier"),
    )
    target = CoaTarget(
        "hostapd",
        spec["address"],
        spec["secret"].encode(),
        session,
        vendor=spec.get("vendor", "generic"),
        port=int(spec["port"]),
    )
    limits = CoaLimits(initial_timeout=float(spec.get("initial_timeout", 0.5)))
    sender = CoaSender(limits, require_message_authenticator=True)
    result = await sender.send(target, CoaAction(spec.get("action", "disconnect")))
    print(
        json.dumps(
            {
                "outcome": result.outcome.value,
                "code": int(result.code),
                "error_cause": result.error_cause,
                "error_cause_name": result.error_cause_name,
                "attempts": result.attempts,
                "rtt": result.rtt,
                "counters": sender.counters,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
