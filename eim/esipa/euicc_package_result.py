"""The eIM's side of an EuiccPackageResult (SGP.32 v1.2 §3.3 eUICC Package Download and Execution, steps after
ES10b.LoadEuiccPackage; §2.11.2.2 EuiccPackageResult; protocol brief §3.3), whatever ESipa function carried it
(ProvideEimPackageResult, TransferEimPackageResponse, the euiccPackageResultList of an IpaEuiccDataResponse).

How a result is matched and verified (docs/eim.md, "How results are verified"):

1. Matching. A result closes the operation its ``eimTransactionId`` names, never "the open operation of this
   EID". The field is OPTIONAL in EuiccPackageResultDataSigned / EuiccPackageErrorDataSigned; a SIGNED result
   without it is matched by EID + counterValue: the EID the result came with (eidValue or the binding's
   authenticated EID) and exactly one eUICC-package operation of that EID with exactly that counterValue (the
   eIM never gives two packages of one eUICC the same counterValue). An unsigned error without it names nothing.
   A result whose eimTransactionId is unknown is an orphan (below), never matched by counterValue.
2. Identity. The EID the result came with must be the operation's EID. The eUICC key is taken from the
   certificate known for the operation's EID and verified for that EID on this use (chain to a trusted CI, EID
   in the certificate: :class:`eim.packages.euicc_package.EuiccKeys`).
3. Verification, over the RECEIVED bytes: euiccSignEPR / euiccSignEPE with that key (association token
   appended), eimId = the association's, counterValue = the package's, eimTransactionId = the package's.
4. Unsigned errors (EuiccPackageErrorUnsigned: the eUICC did not accept the eimId or the eIM's signature) prove
   nothing by themselves. One ends its operation (failed) only when it came from a device the binding
   AUTHENTICATED as the operation's eUICC (``RequestContext.eid_hint`` = the operation's EID: MQTT topic under
   the broker ACL, CoAPS PSK identity, HTTP client authentication) AND its eimTransactionId names the
   operation AND its eimId is the association's. Otherwise it is audited (``result`` / ``unverified_error``),
   the operation stays in progress (its package is handed out again on the next poll, within its validity) and
   the IPA is not told success.
5. A result that fails any check changes nothing, is not acknowledged, is counted
   (``eim_results_refused_total{cause}``) and, when it names an operation or an eUICC, audited. A replay of an
   accepted result changes nothing and is acknowledged again.
6. An orphan (no operation named) is acknowledged, so the eUICC may delete it, only when it is signed and its
   signature verifies with the verified key of the EID it came with; nothing else changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.packages import psmo
from eim.packages.euicc_package import (
    EUICC_PACKAGE_ERROR_CODES,
    REPLAY_ERROR,
    EuiccPackageOutcome,
    ResultRejected,
    parse_euicc_package_result,
    verify_outcome,
)
from eim.store import ResultContext, ResultUpdate
from rsp.errors import RspError

if TYPE_CHECKING:
    from eim.esipa.results import Handled, ResultProcessor

log = logging.getLogger("eim.esipa")

PACKAGE_KINDS = (OpKind.PSMO, OpKind.ECO)
COUNTER_SCAN_LIMIT = 1000  # operations of one eUICC looked at when a signed result has no eimTransactionId


async def handle(
    rp: ResultProcessor,
    raw: bytes,
    eid: str | None,
    who: str,
    *,
    authenticated_eid: str | None = None,
    prefetched: tuple[EuiccPackageOutcome | RspError, ResultContext] | None = None,
) -> Handled:
    """Match, verify and record one EuiccPackageResult (``raw``: the BF51 as received).

    ``eid``: the EID the result came with (eidValue, else the binding's); ``authenticated_eid``: the EID the
    binding authenticated (``RequestContext.eid_hint``), which alone lets an unsigned error end an operation."""
    from eim.esipa.results import Handled

    context = None
    if prefetched is not None:
        outcome_or_error, context = prefetched
    else:
        try:
            outcome_or_error = parse_euicc_package_result(raw)
        except RspError as exc:
            outcome_or_error = exc
    if isinstance(outcome_or_error, RspError):
        return await rp.refuse("undecodable", f"undecodable EuiccPackageResult: {outcome_or_error}")
    outcome = outcome_or_error
    op: Operation | None = None
    if outcome.eim_transaction_id is not None:
        if context is None:
            context = await rp.store.result_context(None, outcome.eim_transaction_id)
        op = context.operation
    elif outcome.signed and eid is not None:
        op = await _by_counter(rp, eid, outcome.counter_value)
    if op is None:  # an unsigned error without eimTransactionId too: it names nothing, _orphan refuses it
        return await _orphan(
            rp,
            outcome,
            eid,
            context,  # pragma: no mutate - only saves _orphan a read of the same eUICC row
            who,
        )
    if op.kind not in PACKAGE_KINDS:
        return await rp.refuse(
            "no_operation", "eimTransactionId belongs to an operation that is not an eUICC package", op=op, who=who
        )
    if eid is not None and op.eid != eid:
        return await rp.refuse("eid", f"result for eUICC {op.eid} arrived with EID {eid}", op=op, who=who)
    # the operation's eUICC as the same read found it, else the store: the same row either way (no check here)
    euicc: Euicc | None = None
    if context is not None and context.operation is op:  # pragma: no mutate
        euicc = context.operation_euicc  # pragma: no mutate
    if euicc is None:  # pragma: no mutate
        euicc = await rp.store.get_euicc(op.eid)
    if euicc is None:
        return await rp.refuse("no_operation", "eUICC no longer registered", op=op, who=who)
    if not outcome.signed and authenticated_eid != op.eid:
        return await _unverified(
            rp,
            outcome,
            eid,  # pragma: no mutate - with an operation the audit names the operation's EID, not this one
            op,
            who,
            "unsigned error from a device not authenticated as the operation's eUICC",
        )
    try:
        key = rp.euicc_public_key(euicc) if outcome.signed else None
        verify_outcome(
            outcome,
            public_key=key,
            association_token=euicc.association_token,
            eim_id=euicc.eim_id,
            counter_value=op.counter_value,
            eim_transaction_id=op.eim_transaction_id,
        )
    except ResultRejected as exc:
        if not outcome.signed:
            return await _unverified(
                rp,
                outcome,
                eid,  # pragma: no mutate - with an operation the audit names the operation's EID, not this one
                op,
                who,
                exc.reason,
            )
        return await rp.refuse(exc.cause, exc.reason, op=op, who=who)
    update = _update_for(rp, op, outcome, who)
    changed = await rp._record(op, update)
    acks = [outcome.seq_number] if outcome.seq_number is not None else []
    return Handled(acks=acks, operation=changed or op)


async def _by_counter(rp: ResultProcessor, eid: str, counter_value: int | None) -> Operation | None:
    """The one eUICC-package operation of ``eid`` with exactly ``counter_value`` (signed results without
    eimTransactionId). The signature is then verified with ``eid``'s key like any other result."""
    if counter_value is None:
        return None
    found = [
        cand
        for cand in await rp.store.list_operations(
            eid=eid,
            limit=COUNTER_SCAN_LIMIT,  # pragma: no mutate - a bound on the work, not a check
        )
        if cand.kind in PACKAGE_KINDS and cand.counter_value is not None and cand.counter_value == counter_value
    ]
    return found[0] if len(found) == 1 else None


async def _unverified(
    rp: ResultProcessor, outcome: EuiccPackageOutcome, eid: str | None, op: Operation | None, who: str, reason: str
) -> Handled:
    """An unsigned error that may not end anything: audited as such, the operation stays as it is."""
    detail: dict[str, Any] = {"eimId": outcome.eim_id}
    if outcome.eim_transaction_id is not None:
        detail["eimTransactionId"] = outcome.eim_transaction_id.hex().upper()
    return await rp.refuse(
        "unverified_error", reason, op=op, eid=eid, who=who, outcome="unverified_error", detail=detail
    )


def _update_for(rp: ResultProcessor, op: Operation, outcome: EuiccPackageOutcome, who: str) -> ResultUpdate:
    now = rp.clock()
    common: dict[str, Any] = dict(
        operation_id=op.id, eid=op.eid, who=who, now=now, eim_transaction_id=op.eim_transaction_id
    )
    if outcome.kind == "result":
        entries, failure, profiles = psmo.describe_results(outcome.results)
        fields: dict[str, Any] = {"last_seq_number": outcome.seq_number}
        if profiles is not None:
            fields["profiles"] = profiles
        result = {"seqNumber": outcome.seq_number, "results": entries}
        if failure is None:
            return ResultUpdate(status=OpStatus.DONE, result=result, euicc_fields=fields, **common)
        return ResultUpdate(
            status=OpStatus.FAILED,
            result=result,
            result_code=failure,
            euicc_fields=fields,
            error=f"eUICC result {entries_error(entries)}",
            **common,
        )
    if outcome.kind == "error_signed":
        code = outcome.error_code
        name = EUICC_PACKAGE_ERROR_CODES.get(code, str(code))
        result = {"euiccPackageError": code, "name": name}
        if code == REPLAY_ERROR and op.attempts > 1:
            return ResultUpdate(
                status=OpStatus.IN_PROGRESS,
                result={**result, "hold": True},
                action="replay_of_rehanded_package",
                **common,
            )
        return ResultUpdate(
            status=OpStatus.FAILED,
            result=result,
            result_code=code,
            error=f"eUICC refused the package: {name}",
            **common,
        )
    return ResultUpdate(
        status=OpStatus.FAILED,
        result={"euiccPackageErrorUnsigned": True, "associationToken": outcome.association_token},
        error="eUICC refused the package without signing (eimId or eIM signature not accepted)",
        **common,
    )


async def _orphan(
    rp: ResultProcessor, outcome: EuiccPackageOutcome, eid: str | None, context: ResultContext | None, who: str
) -> Handled:
    """A result for no known operation: acknowledged only when the eUICC's signature proves it genuine."""
    from eim.esipa.results import Handled

    if not outcome.signed:
        return await _unverified(rp, outcome, eid, None, who, "no operation matches this unsigned error")
    if eid is None:  # nothing to audit: refuse() audits only what names an operation or an eUICC
        return await rp.refuse("no_operation", "no operation matches this result")
    # the eUICC the prefetch read for this same EID, else the store: the same row either way (no check here)
    euicc: Euicc | None = context.euicc if context is not None else None  # pragma: no mutate
    if euicc is None or euicc.eid != eid:  # pragma: no mutate
        euicc = await rp.store.get_euicc(eid)
    if euicc is None:  # an EID that is not registered: named to refuse() neither, so not audited either
        return await rp.refuse("no_operation", "no operation matches this result")
    try:
        verify_outcome(
            outcome,
            public_key=rp.euicc_public_key(euicc),
            association_token=euicc.association_token,
            eim_id=euicc.eim_id,
            counter_value=None,
            eim_transaction_id=None,
        )
    except ResultRejected as exc:
        return await rp.refuse(exc.cause, exc.reason, eid=eid, who=who)
    await rp.store.add_audit(
        who=who,
        action="result",
        outcome="orphan",
        eid=eid,
        detail={"counter_value": outcome.counter_value, "seqNumber": outcome.seq_number},
    )
    return Handled(acks=[outcome.seq_number] if outcome.seq_number is not None else [])


def entries_error(entries: list[dict[str, Any]]) -> str:
    for e in entries:
        if "code" in e and (e["code"] != 0 or e.get("type") == "processingTerminated"):
            return f"{e.get('type')}={e.get('name')}"
    return "failure"
