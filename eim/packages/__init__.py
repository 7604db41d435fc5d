"""eIM packages, one module per kind: PSMO list and eCO list (signed EuiccPackageRequest BF51), profile download
trigger (BF54), eUICC data request (BF52).

:class:`PackageFactory` turns a queued operation into the exact DER handed to the IPA; it runs inside the store's
claim transaction (see :mod:`eim.store.logic`), so the counter value it consumes is persisted together with the
signed package.
"""

from __future__ import annotations

from typing import Any

from eim.model import Euicc, Operation, OpKind
from eim.packages import download, eco, euicc_data, psmo
from eim.packages.common import ParamError, new_transaction_id
from eim.packages.euicc_package import EimKey, euicc_package_request
from eim.store.logic import Built, PackageBuildError

__all__ = ["EimKey", "PackageFactory", "ParamError", "validate_params"]

_VALIDATORS = {
    OpKind.PSMO: psmo.validate,
    OpKind.ECO: eco.validate,
    OpKind.DOWNLOAD: download.validate,
    OpKind.EUICC_DATA: euicc_data.validate,
}


def validate_params(kind: OpKind, params: Any) -> dict[str, Any]:
    """Check an operation's parameters for its kind; raises :class:`ParamError` naming the bad field."""
    return _VALIDATORS[OpKind(kind)](params)


class PackageFactory:
    """Builds the package of an operation (pure, no I/O): the ``build`` callback of ``Store.claim_next``."""

    def __init__(self, key: EimKey) -> None:
        self.key = key

    def build(self, euicc: Euicc, op: Operation, next_counter: int) -> Built:
        txid = new_transaction_id()
        try:
            if op.kind is OpKind.PSMO:
                pkg = psmo.euicc_package(op.params)
            elif op.kind is OpKind.ECO:
                pkg = eco.euicc_package(op.params)
            elif op.kind is OpKind.DOWNLOAD:
                return Built(download.request(op.params, txid), txid)
            elif op.kind is OpKind.EUICC_DATA:
                return Built(euicc_data.request(op.params, txid, sgp32_version=euicc.sgp32_version), txid)
            else:  # pragma: no cover - OpKind is closed
                raise PackageBuildError(f"unknown operation kind {op.kind}")
        except (ParamError, KeyError, TypeError) as exc:
            raise PackageBuildError(f"parameters no longer valid: {exc}") from None
        signed = euicc_package_request(
            self.key, euicc.eid, next_counter, txid, pkg, euicc.association_token, eim_id=euicc.eim_id
        )
        return Built(signed, txid, next_counter)
