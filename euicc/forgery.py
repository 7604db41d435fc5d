"""Test-only lies of the software eUICC: a card that signs what it should not (SGP.32 v1.2 §5.9.1 step 6 done
wrong on purpose).

A real eUICC signs its EuiccPackageResult / EuiccPackageErrorSigned over the eimId, counterValue and
eimTransactionId of the package it ran, with its own key. The eIM must refuse any result where one of these does
not hold (docs/eim.md, "How results are verified"); to prove each of its checks, the tests need a card that
breaks exactly one rule. Set ``card.ctx.forgery = Forgery(...)``: the card still runs the package and keeps its
state as usual, only the signed result it answers with carries the lie. The setting is volatile (never written
to the state file) and nothing in the product sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class Forgery:
    """What a lying card changes in the results it signs (``None`` / 0 / False: tell the truth)."""

    counter_offset: int = 0  # sign counterValue + offset instead of the package's counterValue
    eim_transaction_id: bytes | None = None  # sign this eimTransactionId instead of the package's
    drop_transaction_id: bool = False  # leave eimTransactionId out of the signed result
    eim_id: str | None = None  # sign this eimId instead of the package's
    signing_key: ec.EllipticCurvePrivateKey | None = None  # sign with this key (e.g. another card's)

    def __repr__(self) -> str:  # never show a key
        key = "<key>" if self.signing_key is not None else None
        return (
            f"Forgery(counter_offset={self.counter_offset}, eim_transaction_id={self.eim_transaction_id!r}, "
            f"drop_transaction_id={self.drop_transaction_id}, eim_id={self.eim_id!r}, signing_key={key})"
        )
