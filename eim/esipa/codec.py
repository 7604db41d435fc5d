"""The eIM's ESipa answers, assembled as TLVs around bytes that must not be re-encoded (packages, relay answers).

Byte-exact forms (protocol brief §2.2, §2.3):
``noEimPackageAvailable`` = ``BF4F 03 02 01 01``; acknowledgements of seq 20 = ``BF50 06 BF53 03 80 01 14``;
``emptyResponse`` = ``BF50 02 30 00``; ``provideEimPackageResultError undefinedError`` = ``BF50 03 02 01 7F``.
"""

from __future__ import annotations

from collections.abc import Iterable

from eim.packages.common import integer_tlv
from rsp import tlv

# GetEimPackageResponse eimPackageError
NO_PACKAGE, EID_NOT_FOUND, INVALID_EID, MISSING_EID, UNDEFINED = 1, 2, 3, 4, 127
# provideEimPackageResultError uses the same numbers (2, 3, 4, 127)


def get_eim_package_response(package: bytes) -> bytes:
    """``BF4F <package>``: one BF4F around the BF51/BF52/BF54 TLV (the use-site tag replaces the CHOICE's)."""
    return tlv.encode(0xBF4F, package)


def get_eim_package_error(code: int) -> bytes:
    return tlv.encode(0xBF4F, integer_tlv(0x02, code))


#: ``noEimPackageAvailable``, the idle poll's answer, encoded once
NO_PACKAGE_ANSWER = get_eim_package_error(NO_PACKAGE)


def acknowledgements(seq_numbers: Iterable[int]) -> bytes:
    """EimAcknowledgements ``BF53 { 80 seq ... }``."""
    return tlv.encode(0xBF53, b"".join(integer_tlv(0x80, s) for s in seq_numbers))


def provide_result_response(seq_numbers: list[int]) -> bytes:
    """``BF50 BF53 {...}`` when there is something to delete, else ``emptyResponse`` ``BF50 30 00``."""
    if seq_numbers:
        return tlv.encode(0xBF50, acknowledgements(seq_numbers))
    return tlv.encode(0xBF50, tlv.encode(0x30, b""))


def provide_result_error(code: int) -> bytes:
    return tlv.encode(0xBF50, integer_tlv(0x02, code))


def transfer_acknowledgements(seq_numbers: list[int]) -> bytes:
    """TransferEimPackageRequest carrying eimAcknowledgements: ``BF4E BF53 {...}``."""
    return tlv.encode(0xBF4E, acknowledgements(seq_numbers))


# Error answers of the relayed functions (automatic tags: the INTEGER alternative is 81, or 82 in BF3B).
def initiate_authentication_error(code: int) -> bytes:
    return tlv.encode(0xBF39, integer_tlv(0x81, code))


def authenticate_client_error(code: int) -> bytes:
    return tlv.encode(0xBF3B, integer_tlv(0x82, code))


def get_bound_profile_package_error(code: int) -> bytes:
    return tlv.encode(0xBF3A, integer_tlv(0x81, code))


def cancel_session_error(code: int) -> bytes:
    return tlv.encode(0xBF41, integer_tlv(0x81, code))


# relayed-function error codes used by the dispatcher itself
IA_INVALID_EIM_TRANSACTION_ID = 52
IA_UNDEFINED = 127
AC_INVALID_TRANSACTION_ID = 10
AC_UNDEFINED = 127
GBPP_INVALID_TRANSACTION_ID = 95
GBPP_UNDEFINED = 127
CS_INVALID_TRANSACTION_ID = 1
CS_UNDEFINED = 127


def undefined_error(tag: int) -> bytes | None:
    """The ``undefinedError`` answer of the ESipa function whose request starts with ``tag``; ``None`` for the
    functions that have no error answer (HandleNotification, TransferEimPackageResponse) and unknown tags."""
    if tag == 0xBF4F:
        return get_eim_package_error(UNDEFINED)
    if tag == 0xBF50:
        return provide_result_error(UNDEFINED)
    if tag == 0xBF39:
        return initiate_authentication_error(IA_UNDEFINED)
    if tag == 0xBF3B:
        return authenticate_client_error(AC_UNDEFINED)
    if tag == 0xBF3A:
        return get_bound_profile_package_error(GBPP_UNDEFINED)
    if tag == 0xBF41:
        return cancel_session_error(CS_UNDEFINED)
    return None
