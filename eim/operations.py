"""Operations: what operators ask of eUICCs, queued per eUICC and handed out in order.

An operation is created ``queued`` (REST API / CLI), becomes ``in_progress`` when its package is handed to the
IPA (poll: GetEimPackage; push: TransferEimPackage over MQTT; a CoAP push only wakes the device through
``wakers``, which then fetches with GetEimPackage), and ends ``done``, ``failed`` (with the eUICC's
result code), ``expired`` (validity window over before a result came) or ``cancelled``. Every change leaves an
audit entry (who, when, what, outcome) in the store.

Ordering: one eUICC's operations run one at a time in creation order; the next is handed out only once the
previous one has ended. A package whose result never came is handed out again, byte for byte (same counter
value, same eimTransactionId, same signature), while the operation is still valid.

A download operation may not name an SM-DP+ the eIM must never contact (``eim.smdp_addresses``: link-local /
cloud metadata IP literals always, loopback and private IP literals unless ``[relay] allow_private_addresses`` or
a lab eIM on loopback): ``ParamError`` naming ``activationCode``.

Signed packages need the eUICC's certificate to verify the result. When a PSMO/eCO operation is created for an
eUICC whose certificate is not known yet, an eUICC data request (certificates + IPA capabilities) is queued in
front of it automatically (``auto_learn_certificates``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eim.interfaces import PackagePusher, PushWaker
from eim.model import Batch, BatchItem, Euicc, Operation, OpKind, OpStatus
from eim.packages import PackageFactory, ParamError, download, validate_params
from eim.packages.common import normalise_eid
from eim.smdp_addresses import SmdpAddressPolicy
from eim.store import Claim, ClaimOutcome, Store
from eim.store.logic import new_id

log = logging.getLogger("eim.operations")

MAX_BATCH = 10000


class NotFound(LookupError):
    """An unknown eUICC, operation or batch."""


class Conflict(Exception):
    """A request that contradicts the current state (e.g. cancelling a finished operation)."""


@dataclass(frozen=True)
class OperationSettings:
    default_validity_s: float = 7 * 24 * 3600.0
    max_validity_s: float = 365 * 24 * 3600.0
    default_download_mode: str = "indirect"
    auto_learn_certificates: bool = True
    push_retry_s: float = 300.0  # a pushed package without answer is pushed again after this long
    # which SM-DP+ addresses a download may name (eim.smdp_addresses); None: link-local/metadata ones are refused
    smdp_addresses: SmdpAddressPolicy | None = None
    max_handouts: int = 3  # hand-outs whose results were refused before the operation fails (0 = no limit)
    relay_retry_initial_s: float = 5.0  # SM-DP+ unreachable: the package is handed out again after this long,
    relay_retry_max_s: float = 300.0  # doubling per failed hand-out up to this (within the validity window)


class OperationService:
    """Creates, lists and cancels operations; claims packages for the ESipa side; pushes to MQTT eUICCs."""

    def __init__(
        self,
        store: Store,
        factory: PackageFactory,
        settings: OperationSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self.factory = factory
        self.settings = settings or OperationSettings()
        self.clock = clock
        self.metrics = metrics
        self.pusher: PackagePusher | None = None  # MQTT: claims and pushes the package itself
        self.wakers: list[PushWaker] = []  # CoAP observers (or a bus to other workers): "package waiting"
        self._push_tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ registry
    async def register_euicc(
        self,
        eid: str,
        *,
        eim_id: str | None = None,
        association_token: int | None = None,
        counter_value: int = 0,
        trusted_ci: str | None = None,
        labels: dict[str, str] | None = None,
        who: str = "operator",
    ) -> tuple[Euicc, bool]:
        """Register an eUICC (idempotent for the same EID: returns the existing one and ``False``)."""
        eid = normalise_eid(eid)
        euicc = Euicc(
            eid=eid,
            eim_id=eim_id or self.factory.key.eim_id,
            association_token=association_token,
            counter_value=counter_value,
            trusted_ci=trusted_ci.upper() if trusted_ci else None,
            labels=dict(labels or {}),
            created_at=self.clock(),
        )
        created = await self.store.add_euicc(euicc, who=who)
        stored = await self.store.get_euicc(eid)
        assert stored is not None
        return stored, created

    async def get_euicc(self, eid: str) -> Euicc:
        e = await self.store.get_euicc(eid)
        if e is None:
            raise NotFound(f"eUICC {eid} is not registered")
        return e

    # ------------------------------------------------------------------ operations
    def _window(self, validity_s: float | None, not_before: float | None, now: float) -> tuple[float | None, float]:
        if validity_s is None:
            validity_s = self.settings.default_validity_s
        if not (0 < validity_s <= self.settings.max_validity_s):
            raise ParamError("validity_s", f"must be between 0 and {self.settings.max_validity_s:.0f} seconds")
        start = max(now, not_before) if not_before is not None else now
        return not_before, start + validity_s

    def _prepare(self, euicc: Euicc, kind: OpKind, params: dict[str, Any]) -> dict[str, Any]:
        if kind is OpKind.DOWNLOAD:
            feats = (euicc.ipa_capabilities or {}).get("ipaFeatures")
            explicit = "mode" in params  # the operator asked for this mode
            params = {**params, "mode": download.choose_mode(params, feats, self.settings.default_download_mode)}
            if download.eim_holds_data(params, explicit=explicit, feats=feats):
                params["eimHoldsData"] = True
        return params

    def _new_op(
        self,
        eid: str,
        kind: OpKind,
        params: dict[str, Any],
        now: float,
        not_before: float | None,
        expires_at: float,
        who: str,
        batch_id: str | None = None,
    ) -> Operation:
        return Operation(
            id=new_id(),
            eid=eid,
            kind=kind,
            params=params,
            status=OpStatus.QUEUED,
            created_at=now,
            updated_at=now,
            not_before=not_before,
            expires_at=expires_at,
            created_by=who,
            batch_id=batch_id,
        )

    async def _needs_certificates(self, euicc: Euicc, kind: OpKind) -> bool:
        if not self.settings.auto_learn_certificates or kind not in (OpKind.PSMO, OpKind.ECO):
            return False
        if euicc.euicc_certificate is not None:
            return False
        pending = await self.store.list_operations(eid=euicc.eid, kind=OpKind.EUICC_DATA, limit=50)
        return not any(o.status in (OpStatus.QUEUED, OpStatus.IN_PROGRESS) and o.created_by == "eim" for o in pending)

    def _check_smdp_address(self, kind: OpKind, params: dict[str, Any]) -> None:
        """A download may not name an SM-DP+ the eIM must never contact (link-local/metadata; loopback and
        private IP literals unless allowed): ``ParamError`` naming the field."""
        address = params.get("smdpAddress") if kind is OpKind.DOWNLOAD else None
        if not isinstance(address, str):
            return
        policy = self.settings.smdp_addresses or SmdpAddressPolicy.of(allow_private=True)
        why = policy.refusal(address)
        if why is not None:
            field_name = "activationCode" if "activationCode" in params else "smdpAddress"
            raise ParamError(field_name, f"SM-DP+ address refused: {why}")

    def _learn_op(self, eid: str, now: float, expires_at: float) -> Operation:
        params = validate_params(OpKind.EUICC_DATA, {})
        return self._new_op(eid, OpKind.EUICC_DATA, params, now, None, expires_at, "eim")

    async def create(
        self,
        eid: str,
        kind: OpKind | str,
        params: Any,
        *,
        validity_s: float | None = None,
        not_before: float | None = None,
        who: str = "operator",
    ) -> Operation:
        """Queue one operation; raises :class:`ParamError` (bad input) or :class:`NotFound` (unknown eUICC)."""
        try:
            kind = OpKind(kind)
        except ValueError:
            raise ParamError("kind", f"must be one of {', '.join(k.value for k in OpKind)}") from None
        params = validate_params(kind, params)
        self._check_smdp_address(kind, params)
        euicc = await self.store.get_euicc(eid)
        if euicc is None:
            raise NotFound(f"eUICC {eid} is not registered")
        now = self.clock()
        nb, expires_at = self._window(validity_s, not_before, now)
        ops = []
        if await self._needs_certificates(euicc, kind):
            ops.append(self._learn_op(eid, now, expires_at))
        ops.append(self._new_op(eid, kind, self._prepare(euicc, kind, params), now, nb, expires_at, who))
        saved = await self.store.add_operations(ops, who=who)
        if self.metrics:
            for o in saved:
                self.metrics.operation_created(o.kind.value)
        self.kick(euicc)
        return saved[-1]

    async def create_batch(
        self,
        eids: list[Any],
        kind: OpKind | str,
        params: Any,
        *,
        validity_s: float | None = None,
        not_before: float | None = None,
        who: str = "operator",
        item_params: list[dict[str, Any]] | None = None,
    ) -> Batch:
        """Queue the same operation for many eUICCs; each item gets an operation or an error of its own.
        ``item_params``: per-EID parameters (one dict per EID, merged over ``params``), all validated before
        anything is stored: a bad one is a :class:`ParamError` naming ``rows[i].<field>``."""
        try:
            kind = OpKind(kind)
        except ValueError:
            raise ParamError("kind", f"must be one of {', '.join(k.value for k in OpKind)}") from None
        if not isinstance(eids, list) or not eids:
            raise ParamError("eids", "must be a non-empty list of EIDs")
        if len(eids) > MAX_BATCH:
            raise ParamError("eids", f"at most {MAX_BATCH} EIDs per batch")
        per_item: list[dict[str, Any]] | None = None
        if item_params is None:
            params = validate_params(kind, params)
            self._check_smdp_address(kind, params)
        else:
            per_item = self._item_params(kind, params, item_params, len(eids))
        now = self.clock()
        nb, expires_at = self._window(validity_s, not_before, now)
        batch_id = new_id()
        items: list[BatchItem] = []
        ops: list[Operation] = []
        seen: set[str] = set()
        kicks: list[Euicc] = []
        for i, raw in enumerate(eids):
            try:
                eid = normalise_eid(raw)
            except ParamError as exc:
                items.append(BatchItem(i, str(raw)[:64], None, exc.reason))
                continue
            if eid in seen:
                items.append(BatchItem(i, eid, None, "duplicate EID in this batch"))
                continue
            seen.add(eid)
            euicc = await self.store.get_euicc(eid)
            if euicc is None:
                items.append(BatchItem(i, eid, None, f"eUICC {eid} is not registered"))
                continue
            if await self._needs_certificates(euicc, kind):
                ops.append(replace(self._learn_op(eid, now, expires_at), batch_id=batch_id))
            p = per_item[i] if per_item is not None else params
            op = self._new_op(eid, kind, self._prepare(euicc, kind, p), now, nb, expires_at, who, batch_id)
            ops.append(op)
            items.append(BatchItem(i, eid, op.id))
            kicks.append(euicc)
        batch = Batch(id=batch_id, created_at=now, created_by=who, kind=kind, params=params, items=items)
        saved = await self.store.add_batch(batch, ops, who=who)
        if self.metrics:
            for o in ops:
                self.metrics.operation_created(o.kind.value)
        for e in kicks:
            self.kick(e)
        return saved

    def _item_params(self, kind: OpKind, shared: Any, rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        if not isinstance(shared, dict):
            raise ParamError("params", "must be an object")
        if len(rows) != n:
            raise ParamError("rows", "one parameter set per EID")
        out = []
        for i, row in enumerate(rows):
            try:
                p = validate_params(kind, {**shared, **row})
                self._check_smdp_address(kind, p)
            except ParamError as exc:
                raise ParamError(f"rows[{i}].{exc.field}", exc.reason) from None
            out.append(p)
        return out

    async def get(self, op_id: str) -> Operation:
        op = await self.store.get_operation(op_id)
        if op is None:
            raise NotFound(f"operation {op_id} not found")
        return op

    async def cancel(self, op_id: str, *, who: str = "operator") -> Operation:
        before = await self.store.get_operation(op_id)
        op = await self.store.cancel_operation(op_id, who=who, now=self.clock())
        if op is None:
            raise NotFound(f"operation {op_id} not found")
        if op.status is not OpStatus.CANCELLED:
            raise Conflict(f"operation {op_id} is already {op.status.value}")
        if self.metrics and before is not None and before.status is not OpStatus.CANCELLED:
            self.metrics.operation_finished(op.kind.value, op.status.value)
        return op

    async def get_batch(self, batch_id: str) -> tuple[Batch, dict[str, Operation]]:
        batch = await self.store.get_batch(batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found")
        ops = {o.id: o for o in await self.store.list_operations(batch_id=batch_id, limit=MAX_BATCH * 2)}
        return batch, ops

    # ------------------------------------------------------------------ hand-out (ESipa side)
    async def claim(self, eid: str, binding: str | None) -> Claim:
        """The package for ``eid``'s next operation (or why there is none)."""
        claim = await self.store.claim_next(eid, self.clock(), self.factory.build, binding=binding)
        self._count_closed(claim)
        return claim

    def _count_closed(self, claim: Claim) -> None:
        for o in claim.closed:
            if o.status is OpStatus.FAILED:
                log.warning(
                    "operation failed",
                    extra={"operation": o.id, "eid": o.eid, "kind": o.kind.value, "reason": o.error},
                )
        if self.metrics:
            for o in claim.closed:
                self.metrics.operation_finished(o.kind.value, o.status.value)

    async def note_refusal(
        self, op_id: str | None, code: int, reason: str, *, eid: str | None = None, who: str = "ipa"
    ) -> Operation | None:
        """A result for ``op_id`` (or ``eid``'s handed-out package) was answered with ESipa error ``code``.

        Counted once per hand-out; after ``max_handouts`` such hand-outs the operation ends ``failed`` with this
        refusal and is not handed out again (:mod:`eim.store.retries`). Never raises for a store failure: the
        refusal answer still goes to the IPA."""
        try:
            op = await self.store.note_refusal(
                op_id,
                eid=eid,
                code=code,
                reason=reason,
                now=self.clock(),
                max_handouts=self.settings.max_handouts,
                who=who,
            )
        except Exception as exc:  # the answer matters more than the bookkeeping
            log.warning("refusal not recorded", extra={"operation": op_id, "error": str(exc)})
            return None
        if op is not None and op.status is OpStatus.FAILED:
            log.warning(
                "operation failed: results refused",
                extra={"operation": op.id, "eid": op.eid, "code": code, "refusals": (op.result or {}).get("refusals")},
            )
            if self.metrics:
                self.metrics.operation_finished(op.kind.value, op.status.value)
            euicc = await self.store.get_euicc(op.eid)
            if euicc is not None:
                self.kick(euicc)
        return op

    async def defer(self, op_id: str, function: str, reason: str) -> Operation | None:
        """The SM-DP+ could not be reached for ``op_id``'s download: its package is handed out again after a
        capped backoff (``relay_retry_initial_s`` doubling up to ``relay_retry_max_s``), within its validity."""
        op = await self.store.defer_operation(
            op_id,
            function=function,
            reason=reason,
            now=self.clock(),
            initial_s=self.settings.relay_retry_initial_s,
            max_s=self.settings.relay_retry_max_s,
        )
        if op is not None:
            retry = (op.result or {}).get("retry", {})
            log.warning(
                "SM-DP+ not reachable: download handed out again later",
                extra={"operation": op.id, "eid": op.eid, "function": function, "retry_at": retry.get("at")},
            )
        return op

    async def expire(self) -> int:
        n = await self.store.expire_operations(self.clock())
        if n and self.metrics:
            self.metrics.operations_expired(n)
        return n

    # ------------------------------------------------------------------ push (MQTT)
    def kick(self, euicc: Euicc) -> None:
        """Wake the eUICC's push observers (CoAP), and push the next package now when the eUICC is reached over
        MQTT and a pusher is set."""
        for waker in self.wakers:
            try:
                waker.wake(euicc.eid)
            except Exception as exc:  # a push wake-up is best effort: the device polls anyway
                log.warning("push wake-up failed", extra={"error": str(exc)})
        if self.pusher is None or euicc.binding != "mqtt":
            return
        try:
            task = asyncio.get_running_loop().create_task(self.push(euicc.eid))
        except RuntimeError:
            return
        self._push_tasks.add(task)
        task.add_done_callback(self._push_tasks.discard)

    async def push(self, eid: str) -> bool:
        """Claim the next operation of ``eid`` and push it as a TransferEimPackageRequest. ``True`` if pushed.

        A package already handed out is pushed again only after ``push_retry_s`` (same bytes)."""
        if self.pusher is None:
            return False
        from rsp import tlv

        now = self.clock()
        head = await self.store.list_operations(eid=eid, status=OpStatus.IN_PROGRESS, limit=1)
        if head and head[0].handed_out_at is not None and now - head[0].handed_out_at < self.settings.push_retry_s:
            return False
        claim = await self.store.claim_next(eid, now, self.factory.build, binding=None)
        self._count_closed(claim)
        if claim.outcome is not ClaimOutcome.PACKAGE or claim.operation is None:
            return False
        try:
            await self.pusher.push(eid, tlv.encode(0xBF4E, claim.operation.package or b""))
        except Exception as exc:  # the broker is down: the package stays in progress, re-pushed later
            log.warning("push failed", extra={"operation": claim.operation.id, "error": str(exc)})
            return False
        if self.metrics:
            self.metrics.package_pushed(claim.operation.kind.value)
        return True

    async def push_pending(self, limit: int = 100) -> int:
        """One sweep: push to every MQTT eUICC with queued work (several workers may sweep at once)."""
        if self.pusher is None:
            return 0
        n = 0
        now = self.clock()
        eids = await self.store.eids_with_queued_work(
            binding="mqtt", now=now, limit=limit, stale_before=now - self.settings.push_retry_s
        )
        for eid in eids:
            if await self.push(eid):
                n += 1
        return n

    def push_status(self, euicc: Euicc) -> dict[str, Any] | None:
        """How the eUICC is reachable by push now (``GET /v1/euiccs/{eid}``), or ``None`` (poll only)."""
        for waker in self.wakers:
            status = waker.status(euicc.eid)
            if status is not None:
                return status
        if self.pusher is not None and euicc.binding == "mqtt":
            return {"binding": "mqtt", "since": None}  # the broker queues for a sleeping device
        return None

    async def has_work(self, eid: str) -> bool:
        """An operation of ``eid`` is queued or handed out (a push registration answers "package waiting")."""
        for status in (OpStatus.IN_PROGRESS, OpStatus.QUEUED):
            if await self.store.list_operations(eid=eid, status=status, limit=1):
                return True
        return False

    async def is_registered(self, eid: str) -> bool:
        return await self.store.get_euicc(eid) is not None

    async def drain(self) -> None:
        """Wait for the pushes started by :meth:`kick` (tests, orderly shutdown)."""
        while self._push_tasks:
            await asyncio.gather(*list(self._push_tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for t in list(self._push_tasks):
            t.cancel()
        if self._push_tasks:
            await asyncio.gather(*self._push_tasks, return_exceptions=True)
