"""Bookkeeping for packages that came back unusable and for relay failures worth another try (both backends).

Two records live in an in-progress operation's ``result`` (JSON), so an operator sees them while it runs:

- ``refusals`` ``{count, attempt, code, reason, at}``: results the eIM could not accept for this operation (the
  ESipa error code it answered and why). ``count`` goes up at most once per hand-out (``attempt`` is the
  operation's ``attempts`` when it was last counted): an IPA that sends the same refused result ten times, or a
  forger who sends a hundred, counts once until the eIM hands the package out again. When ``count`` reaches
  ``max_handouts`` the operation ends ``failed`` with the last refusal (its ESipa code as ``result_code``, its
  reason in ``error``) and is never handed out again - without this an IPA whose results are refused is given the
  same package on every poll until the validity window ends.
- ``retry`` ``{count, attempt, at, function, reason}``: the SM-DP+ could not be reached during the relayed
  download of this hand-out (connection refused, timeout). The package is not handed out again before ``at``
  (``initial_s`` doubling per hand-out that failed so, at most ``max_s``); the validity window still ends it.

Each runs as one transaction under the eUICC row's lock, like every other change to an eUICC's operations
(:mod:`eim.store.logic`), and leaves an audit entry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eim.model import Operation, OpStatus
from eim.store.logic import Gen, Logic, Q, Retry, _dumps, row_to_op

MAX_REASON = 300


def _locked_operation(logic: Logic, op_id: str | None, eid: str | None) -> Gen:
    """The operation ``op_id`` (or, without one, the package ``eid`` has been handed and not answered yet), read
    after locking its eUICC's row. ``None`` when there is none."""
    if op_id is not None:
        r = yield Q("SELECT eid FROM operations WHERE id = ?", (op_id,), "one")
        if r is None:
            return None
        eid = r["eid"]
    if eid is None:
        return None
    yield Q("SELECT eid FROM euiccs WHERE eid = ?" + logic._lock(), (eid,), "one")
    if op_id is not None:
        r = yield Q("SELECT * FROM operations WHERE id = ?", (op_id,), "one")
    else:
        r = yield Q(
            "SELECT * FROM operations WHERE eid = ? AND status = 'in_progress' AND package IS NOT NULL"
            " ORDER BY seq LIMIT 1",
            (eid,),
            "one",
        )
    return None if r is None else row_to_op(r)


def _count_once_per_handout(op: Operation, key: str) -> tuple[dict[str, Any], dict[str, Any], bool, int]:
    """A copy of ``op.result``, its record ``key`` as it was, whether this hand-out was counted in it already, and
    the count with this hand-out (up at most once per hand-out)."""
    result: dict[str, Any] = dict(op.result or {})
    before = result.get(key) if isinstance(result.get(key), dict) else {}
    counted = before.get("attempt") == op.attempts
    count = int(before.get("count", 0)) + (0 if counted else 1)
    return result, before, counted, count


def _update_in_progress(op: Operation, assignments: str, params: tuple[Any, ...]) -> Gen:
    """``UPDATE operations SET <assignments>`` on ``op`` while it is still in progress; :class:`Retry` (the whole
    transaction again) when it is not any more."""
    n = yield Q(f"UPDATE operations SET {assignments} WHERE id = ? AND status = 'in_progress'", (*params, op.id))
    if n != 1:
        raise Retry


def _audit(logic: Logic, op: Operation, now: float, who: str, action: str, outcome: str, detail: dict[str, Any]) -> Q:
    """The audit entry for ``op``'s change."""
    return logic._audit(at=now, who=who, action=action, outcome=outcome, eid=op.eid, operation_id=op.id, detail=detail)


def note_refusal(
    logic: Logic,
    op_id: str | None,
    eid: str | None,
    code: int,
    reason: str,
    now: float,
    max_handouts: int,
    who: str,
) -> Gen:
    """Record that a result for ``op_id`` (or ``eid``'s handed-out package) was refused with ESipa ``code``.

    Returns the operation as changed (``failed`` once the refusals reach ``max_handouts``; 0 = no limit), or
    ``None`` when there is no handed-out operation in progress to note it on."""
    op: Operation | None = yield from _locked_operation(logic, op_id, eid)
    if op is None or op.status is not OpStatus.IN_PROGRESS or op.package is None:
        return None
    reason = reason[:MAX_REASON]
    result, _, _, count = _count_once_per_handout(op, "refusals")
    result["refusals"] = {"count": count, "attempt": op.attempts, "code": code, "reason": reason, "at": now}
    final = max_handouts > 0 and count >= max_handouts
    if final:
        error = f"result refused after {count} hand-out(s) of the package: ESipa code {code}: {reason}"
        yield from _update_in_progress(
            op,
            "status = 'failed', updated_at = ?, result = ?, result_code = ?, error = ?",
            (now, _dumps(result), code, error),
        )
    else:
        error = op.error
        yield from _update_in_progress(op, "updated_at = ?, result = ?", (now, _dumps(result)))
    detail = {"code": code, "reason": reason, "hand_outs": op.attempts, "refusals": count, "max_handouts": max_handouts}
    yield _audit(logic, op, now, who, "result_refused", "failed" if final else "rejected", detail)
    if not final:
        return replace(op, updated_at=now, result=result)
    return replace(op, status=OpStatus.FAILED, updated_at=now, result=result, result_code=code, error=error)


def defer(
    logic: Logic,
    op_id: str,
    function: str,
    reason: str,
    now: float,
    initial_s: float,
    max_s: float,
    who: str,
) -> Gen:
    """The relay could not reach the SM-DP+ for ``op_id``'s current hand-out: hand its package out again no
    sooner than the backoff allows. Returns the operation as changed, or ``None`` (not in progress)."""
    op: Operation | None = yield from _locked_operation(logic, op_id, None)
    if op is None or op.status is not OpStatus.IN_PROGRESS or op.package is None:
        return None
    reason = reason[:MAX_REASON]
    result, before, counted, count = _count_once_per_handout(op, "retry")
    at = now + min(max_s, initial_s * 2 ** max(0, count - 1))
    if counted:
        at = max(at, float(before.get("at", 0)))
    result["retry"] = {"count": count, "attempt": op.attempts, "at": at, "function": function, "reason": reason}
    yield from _update_in_progress(op, "updated_at = ?, result = ?", (now, _dumps(result)))
    detail = {"function": function, "reason": reason, "retry_at": at, "retries": count}
    yield _audit(logic, op, now, who, "relay_retry", "in_progress", detail)
    return replace(op, updated_at=now, result=result)


def retry_pending(op: Operation, now: float) -> bool:
    """True while a deferred package must not be handed out again (see :func:`defer`)."""
    retry = (op.result or {}).get("retry")
    return isinstance(retry, dict) and float(retry.get("at", 0)) > now


def deferred_this_hand_out(op: Operation) -> bool:
    """True when the current hand-out of ``op`` met an SM-DP+ that could not be reached."""
    retry = (op.result or {}).get("retry")
    return isinstance(retry, dict) and retry.get("attempt") == op.attempts
