"""The eIM's side of an IPA that could not use a package: ``eimPackageResultResponseError`` of
ProvideEimPackageResult and ``eimPackageError`` of TransferEimPackageResponse (SGP.32 v1.2 §6.3.2 ESipa functions,
"ProvideEimPackageResult" / "TransferEimPackage"; protocol brief §2.3).

Both are unsigned: one fails its operation only when the binding authenticated the operation's EID and it names
the operation (docs/eim.md, "How results are verified"); otherwise it is audited as an unverified error and
nothing changes. Entry point: :meth:`eim.esipa.results.ResultProcessor.package_error`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eim.model import OpStatus
from eim.store import ResultUpdate

if TYPE_CHECKING:
    from eim.esipa.results import Handled, ResultProcessor

ERROR_NAMES = {1: "invalidPackageFormat", 2: "unknownPackage", 127: "undefinedError"}


async def handle(
    rp: ResultProcessor,
    txid: bytes | None,
    code: int,
    eid: str | None,
    *,
    authenticated_eid: str | None,
    pushed: bool = False,
) -> Handled:
    """Fail the operation ``txid`` names with ``code``, or refuse.

    ``pushed``: the TransferEimPackageResponse ``eimPackageError``, whose ASN.1 has no eimTransactionId; it answers
    the package pushed to that eUICC, i.e. the one operation of the authenticated EID in progress (none or several:
    it names nothing)."""
    from eim.esipa.results import Handled

    name = ERROR_NAMES.get(code, str(code))
    op = None
    if pushed:
        if authenticated_eid is not None:
            ops = await rp.store.list_operations(eid=authenticated_eid, status=OpStatus.IN_PROGRESS, limit=2)
            op = ops[0] if len(ops) == 1 else None
    elif txid is not None:
        op = await rp.store.find_operation_by_eim_transaction_id(txid)
    detail = {"eimPackageError": code, "name": name}
    if op is None:
        known = eid if eid is not None and await rp.store.get_euicc(eid) is not None else None
        return await rp.refuse(
            "unverified_error",
            "no operation matches this error",
            eid=known,
            outcome="unverified_error",
            detail=detail,
        )
    if eid is not None and op.eid != eid:
        return await rp.refuse("eid", f"error for eUICC {op.eid} arrived with EID {eid}", op=op)
    if authenticated_eid != op.eid:
        return await rp.refuse(
            "unverified_error",
            "unsigned error from a device not authenticated as the operation's eUICC",
            op=op,
            outcome="unverified_error",
            detail=detail,
        )
    update = ResultUpdate(
        operation_id=op.id,
        eid=op.eid,
        who="ipa",
        now=rp.clock(),
        eim_transaction_id=op.eim_transaction_id,
        status=OpStatus.FAILED,
        result={"eimPackageError": code, "name": name},
        result_code=code,
        error=f"the IPA could not use the package: {name}",
    )
    return Handled(operation=await rp._record(op, update) or op)
