"""RFC 5176 Dynamic Authorization: Disconnect-/CoA-Requests to the NAS of live sessions.

Sans-I/O messages (:mod:`messages`) and one asyncio shell (:mod:`sender`). Public
surface::

    from nhi_nac.coa import (
        CoaSender, CoaLimits, CoaTarget, SessionIds, CoaAction, CoaResult, CoaOutcome,
        ErrorCause, error_cause_name, build_request, decode_response,
    )
"""

from nhi_nac.coa.limits import COA_PORT, CoaLimits
from nhi_nac.coa.messages import (
    ERROR_CAUSE_NAMES,
    REAUTHENTICATE_VENDORS,
    CoaAction,
    CoaCode,
    CoaOutcome,
    CoaRequest,
    CoaResponse,
    CoaResult,
    CoaTarget,
    ErrorCause,
    SessionIds,
    build_request,
    decode_response,
    error_cause_name,
)
from nhi_nac.coa.sender import CoaSender, TokenBucket, retransmit_timeouts

__all__ = [
    "COA_PORT",
    "ERROR_CAUSE_NAMES",
    "REAUTHENTICATE_VENDORS",
    "CoaAction",
    "CoaCode",
    "CoaLimits",
    "CoaOutcome",
    "CoaRequest",
    "CoaResponse",
    "CoaResult",
    "CoaSender",
    "CoaTarget",
    "ErrorCause",
    "SessionIds",
    "TokenBucket",
    "build_request",
    "decode_response",
    "error_cause_name",
    "retransmit_timeouts",
]
