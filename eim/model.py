"""The eIM's records: eUICCs in the registry, operations, audit entries, batches.

Frozen dataclasses; the store returns them, the operations service and the API read them. Timestamps are
POSIX seconds (float, UTC). Binary fields are ``bytes``; JSON fields are plain dicts/lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OpStatus(StrEnum):
    """Operation life cycle (architecture doc "Operator REST API")."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({OpStatus.DONE, OpStatus.FAILED, OpStatus.EXPIRED, OpStatus.CANCELLED})
OPEN_STATUSES = frozenset({OpStatus.QUEUED, OpStatus.IN_PROGRESS})


class OpKind(StrEnum):
    """What an operation asks of the eUICC (one module per kind under ``eim/packages/``)."""

    PSMO = "psmo"  # EuiccPackageRequest BF51 with a psmoList
    ECO = "eco"  # EuiccPackageRequest BF51 with an ecoList
    DOWNLOAD = "download"  # ProfileDownloadTriggerRequest BF54
    EUICC_DATA = "euicc_data"  # IpaEuiccDataRequest BF52


@dataclass(frozen=True)
class Euicc:
    """One eUICC in the registry with its association to this eIM."""

    eid: str  # 32 hex digits, upper case
    eim_id: str
    association_token: int | None
    counter_value: int  # last counter value used in a signed package (next one is +1)
    trusted_ci: str | None = None  # CI subject key identifier (hex) the eUICC chains to; None = any configured CI
    euicc_certificate: bytes | None = None  # DER, once learned
    eum_certificate: bytes | None = None  # DER, once learned
    last_contact: float | None = None
    binding: str | None = None  # binding of the last contact: http | coap | mqtt
    profiles: list[dict[str, Any]] | None = None  # as last reported (listProfileInfo)
    ipa_capabilities: dict[str, Any] | None = None  # as last reported (IpaEuiccData A8)
    info: dict[str, Any] = field(default_factory=dict)  # other learned data (default SM-DP+, euiccInfo ...)
    note: str | None = None  # the operator's free text (PATCH /v1/euiccs/{eid})
    poll_interval_s: float | None = None  # expected poll interval; None = [fleet] poll_interval_s
    last_seq_number: int | None = None  # highest EPR seqNumber accepted
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    sgp32_version: str | None = None  # "1.0" once a message of the SGP.32 v1.0 form was accepted (eim.esipa.v10)
    enabled_iccid: str | None = None  # the enabled profile as last learned (eim.store.enabled_profile), or None
    enabled_smdp: str | None = None  # its SM-DP+ address (notificationAddress), when known


@dataclass(frozen=True)
class Operation:
    """One unit of work for one eUICC.

    ``package`` holds the exact DER handed to the IPA (BF51 / BF52 / BF54, without the BF4F wrapper) once the
    operation has been claimed; it is handed out again byte for byte while the result has not come.
    """

    id: str
    eid: str
    kind: OpKind
    params: dict[str, Any]
    status: OpStatus
    created_at: float
    updated_at: float
    not_before: float | None = None
    expires_at: float | None = None
    created_by: str = "operator"
    batch_id: str | None = None
    seq: int = 0  # global creation order; operations of one eUICC run in this order
    eim_transaction_id: bytes | None = None
    counter_value: int | None = None
    package: bytes | None = None
    attempts: int = 0  # how many times the package was handed out
    handed_out_at: float | None = None
    result: dict[str, Any] | None = None
    result_code: int | None = None  # the eUICC's (or IPA's) result code when failed
    error: str | None = None
    smdp_transaction_id: bytes | None = None  # indirect download: ES9+ transactionId


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    who: str
    action: str
    eid: str | None
    operation_id: str | None
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchItem:
    index: int
    eid: str
    operation_id: str | None  # None when the item was refused (error says why)
    error: str | None = None


@dataclass(frozen=True)
class Batch:
    id: str
    created_at: float
    created_by: str
    kind: OpKind
    params: dict[str, Any]
    items: list[BatchItem]


class NotificationStatus(StrEnum):
    """A queued notification (:class:`OutboundNotification`): waiting for (another) delivery attempt, or refused
    for good. Delivered notifications leave the queue."""

    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class NotificationToSend:
    """A notification the eIM takes responsibility for delivering to an SM-DP+ (ES9+ HandleNotification)."""

    notification: bytes  # PIR BF37 or otherSignedNotification 30, exactly as the IPA sent it
    address: str  # notificationAddress (the SM-DP+)
    kind: str  # "pir" | "other"
    eid: str | None = None
    operation_id: str | None = None  # the download operation a PIR closed
    seq_number: int | None = None


@dataclass(frozen=True)
class OutboundNotification:
    """One row of the eIM's notification outbox (``notification_outbox``)."""

    id: int
    digest: str  # SHA-256 of ``notification`` (hex): the same bytes are queued once
    eid: str | None
    operation_id: str | None
    kind: str
    seq_number: int | None
    address: str
    notification: bytes
    status: NotificationStatus
    created_at: float
    updated_at: float
    next_attempt_at: float
    attempts: int = 0  # delivery attempts started (counted when claimed)
    last_error: str | None = None
    lease_until: float | None = None  # claimed by ``leased_by`` until then
    leased_by: str | None = None


# ---------------------------------------------------------------------------------------------------- replace
_PLAIN_FIELDS: dict[type, frozenset[str] | None] = {}


def _plain_fields(cls: type) -> frozenset[str] | None:
    """The field names of a dataclass whose instances are just their ``__dict__`` (no ``__post_init__``, no
    ``__slots__``, every field set by ``__init__``); ``None`` for any other class."""
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields is None or hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        return None
    names = [n for n, f in fields.items() if f._field_type is dataclasses._FIELD]  # type: ignore[attr-defined]
    if len(names) != len(fields) or not all(fields[n].init for n in names):
        return None
    return frozenset(names)


def replace(obj: Any, /, **changes: Any) -> Any:
    """``dataclasses.replace`` for the records above, without the per-field ``__init__`` call (the store's claim
    and result paths make a few copies per request; ``dataclasses.replace`` costs ~3.5 µs on these 20-field
    records, this ~0.6 µs). Same result: a new instance of the same class, the given fields changed, the others
    shared; anything else (a class with ``__post_init__`` or slots, an unknown field name) goes to
    ``dataclasses.replace``, which also raises its ``TypeError`` for an unknown field."""
    cls = type(obj)
    try:
        names = _PLAIN_FIELDS[cls]
    except KeyError:
        names = _PLAIN_FIELDS[cls] = _plain_fields(cls)
    if names is None or not changes.keys() <= names:
        return dataclasses.replace(obj, **changes)
    new = object.__new__(cls)
    state = new.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return new


def build(cls: type, /, **fields: Any) -> Any:
    """``cls(**fields)`` for the records above, without the per-field ``__init__`` call (the store makes three
    operation and three eUICC records from rows per PSMO round trip; the 22-field ``__init__`` of a frozen
    dataclass costs ~5 µs, this ~1 µs). Only when every field is given and none is unknown, for a class whose
    instances are just their ``__dict__``; anything else goes to ``cls(**fields)`` (defaults, ``TypeError``)."""
    try:
        names = _PLAIN_FIELDS[cls]
    except KeyError:
        names = _PLAIN_FIELDS[cls] = _plain_fields(cls)
    if names is None or fields.keys() != names:
        return cls(**fields)
    new = object.__new__(cls)
    new.__dict__.update(fields)
    return new
