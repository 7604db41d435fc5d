"""ES9+ function execution status codes (SGP.22 v2.5 §5.6, status code tables of §5.6.1-§5.6.5).

Every failure of an ES9+ function is answered with HTTP 200 and a JSON header
``{"functionExecutionStatus": {"status": "Failed", "statusCodeData": {"subjectCode", "reasonCode", "message"}}}``.
:class:`Es9Error` carries one such pair; the named constructors below are the only ones the server raises, so the
table in ``docs/smdpp.md`` is this module.
"""

from __future__ import annotations

from dataclasses import dataclass


class Es9Error(Exception):
    """An ES9+ function failed with an SGP.22 subjectCode/reasonCode pair."""

    def __init__(self, subject_code: str, reason_code: str, message: str, subject_identifier: str | None = None):
        super().__init__(f"{subject_code}/{reason_code}: {message}")
        self.subject_code = subject_code
        self.reason_code = reason_code
        self.message = message
        self.subject_identifier = subject_identifier

    def status_code_data(self) -> dict[str, str]:
        data = {"subjectCode": self.subject_code, "reasonCode": self.reason_code, "message": self.message}
        if self.subject_identifier:
            data["subjectIdentifier"] = self.subject_identifier
        return data


@dataclass(frozen=True)
class StatusCode:
    subject: str
    reason: str
    meaning: str

    def error(self, message: str | None = None) -> Es9Error:
        return Es9Error(self.subject, self.reason, message or self.meaning)


# --- generic (the request itself) -----------------------------------------------------------------------------
# SGP.22 gives no function-specific code for a body that is not the function's JSON; we use the generic
# "Function - Invalid" / "Function - Mandatory Element Missing" pair of the common status codes.
REQUEST_INVALID = StatusCode("1.2", "2.1", "Function - Invalid: the request is not valid JSON of this function")
REQUEST_ELEMENT_MISSING = StatusCode("1.2", "2.2", "Function - Mandatory Element Missing")

# --- §5.6.1 InitiateAuthentication ----------------------------------------------------------------------------
SMDP_ADDRESS_REFUSED = StatusCode("8.8.1", "3.8", "Invalid SM-DP+ Address")
CI_PKID_NOT_SUPPORTED = StatusCode(
    "8.8.2", "3.1", "None of the proposed Public Key Identifiers is supported by the SM-DP+"
)
SVN_NOT_SUPPORTED = StatusCode(
    "8.8.3", "3.1", "The Specification Version Number indicated by the eUICC is not supported by the SM-DP+"
)
NO_DPAUTH_FOR_CI = StatusCode(
    "8.8.4", "3.7", "The SM-DP+ has no CERT.DPauth.SIG which chains to a CI key supported by the eUICC"
)

# --- §5.6.3 AuthenticateClient ---------------------------------------------------------------------------------
EUM_CERT_INVALID = StatusCode("8.1.2", "6.1", "EUM Certificate - Verification failed")
EUM_CERT_EXPIRED = StatusCode("8.1.2", "6.3", "EUM Certificate - Expired")
EUICC_CERT_INVALID = StatusCode("8.1.3", "6.1", "eUICC Certificate - Verification failed")
EUICC_CERT_EXPIRED = StatusCode("8.1.3", "6.3", "eUICC Certificate - Expired")
# SGP.22 §4.5.2.2: an EID outside the EUM's permitted range makes the certificate invalid; the pair and wording
# are those osmo-smdpp (pySim) answers, so interop tests see the same code from both SM-DP+ servers.
EID_OUT_OF_RANGE = StatusCode("8.1.4", "6.1", "EID is not within the permitted range of the EUM certificate")
EUICC_SIGNATURE_INVALID = StatusCode("8.1", "6.1", "eUICC - Verification failed (signature or challenge)")
CI_PK_UNKNOWN = StatusCode("8.11.1", "3.9", "CI Public Key - Unknown")
MATCHING_ID_REFUSED = StatusCode("8.2.6", "3.8", "Matching ID - Refused")
EID_REFUSED = StatusCode("8.1.1", "3.8", "EID - Refused: the download order is linked to another EID")
NO_ELIGIBLE_PROFILE = StatusCode("8.2.5", "4.3", "Profile Type - No eligible Profile for this eUICC/Device")
DOWNLOAD_ORDER_EXPIRED = StatusCode("8.8.5", "4.10", "Download order - Time to live expired")
DOWNLOAD_RETRIES_EXCEEDED = StatusCode("8.8.5", "6.4", "Download order - Maximum number of download attempts exceeded")
TRANSACTION_ID_UNKNOWN = StatusCode("8.10.1", "3.9", "TransactionId - Unknown: no ongoing RSP session")

# --- §5.6.2 GetBoundProfilePackage -----------------------------------------------------------------------------
CONFIRMATION_CODE_MISSING = StatusCode("8.2.7", "2.2", "Confirmation Code - Mandatory Element Missing")
CONFIRMATION_CODE_REFUSED = StatusCode("8.2.7", "3.8", "Confirmation Code - Refused")
CONFIRMATION_CODE_RETRIES_EXCEEDED = StatusCode(
    "8.2.7", "6.4", "Confirmation Code - Maximum number of retries exceeded"
)
BPP_REBINDING_REFUSED = StatusCode("8.2", "1.2", "Profile - Not allowed: BPP rebinding refused")
PREPARE_DOWNLOAD_ERROR = StatusCode("8.1", "4.2", "eUICC - Execution error reported in PrepareDownloadResponse")

# --- §5.6.5 CancelSession ---------------------------------------------------------------------------------------
SMDP_OID_INVALID = StatusCode("8.8", "3.10", "SM-DP+ - Invalid Association: smdpOid does not match CERT.DPauth")

ALL: tuple[StatusCode, ...] = tuple(v for v in globals().values() if isinstance(v, StatusCode))
