"""Named result and error codes of ES10 (eUICC), ESipa (eIM) and ES9+ (SM-DP+), SGP.22 v2.5 / SGP.32 v1.2.

Every code the IPA can receive or send has a name here, so logs, CLI output and exceptions say
``ProfileRollback: rollbackNotAllowed(1)`` instead of ``1``.
"""

from __future__ import annotations

from enum import IntEnum


def code_name(enum: type[IntEnum], value: int) -> str:
    """``name(value)``, or ``unknown(value)`` for a value the enum does not list."""
    try:
        return f"{enum(value).name}({value})"
    except ValueError:
        return f"unknown({value})"


# ------------------------------------------------------------------ ESipa (SGP.32 §6.3)
class StateChangeCause(IntEnum):
    otherEim = 0
    fallback = 1
    emergencyProfile = 2
    local = 3
    reset = 4
    immediateEnableProfile = 5
    deviceChange = 6
    undefined = 127


class EimPackageError(IntEnum):
    noEimPackageAvailable = 1
    eidNotFound = 2
    invalidEid = 3
    missingEid = 4
    undefinedError = 127


class EimPackageResultErrorCode(IntEnum):
    invalidPackageFormat = 1
    unknownPackage = 2
    undefinedError = 127


class ProvideEimPackageResultError(IntEnum):
    eidNotFound = 2
    invalidEid = 3
    missingEid = 4
    undefinedError = 127


class InitiateAuthenticationErrorEsipa(IntEnum):
    invalidDpAddress = 1
    euiccVersionNotSupportedByDp = 2
    ciPKIdNotSupported = 3
    smdpAddressMismatch = 50
    smdpOidMismatch = 51
    invalidEimTransactionId = 52
    undefinedError = 127


class AuthenticateClientErrorEsipa(IntEnum):
    eumCertificateInvalid = 1
    eumCertificateExpired = 2
    euiccCertificateInvalid = 3
    euiccCertificateExpired = 4
    euiccSignatureInvalid = 5
    matchingIdRefused = 6
    eidMismatch = 7
    noEligibleProfile = 8
    ciPKUnknown = 9
    invalidTransactionId = 10
    insufficientMemory = 11
    pprNotAllowed = 50
    eventIdUnknown = 56
    undefinedError = 127


class GetBoundProfilePackageErrorEsipa(IntEnum):
    euiccSignatureInvalid = 1
    confirmationCodeMissing = 2
    confirmationCodeRefused = 3
    confirmationCodeRetriesExceeded = 4
    bppRebindingRefused = 5
    downloadOrderExpired = 6
    metadataMismatch = 50
    invalidTransactionId = 95
    undefinedError = 127


class CancelSessionErrorEsipa(IntEnum):
    invalidTransactionId = 1
    euiccSignatureInvalid = 2
    undefinedError = 127


class ProfileDownloadErrorReason(IntEnum):
    ecallActive = 104
    undefinedError = 127


# ------------------------------------------------------------------ ES10 (eUICC)
class CancelSessionReason(IntEnum):
    endUserRejection = 0
    postponed = 1
    timeout = 2
    pprNotAllowed = 3
    metadataMismatch = 4
    loadBppExecutionError = 5
    undefinedReason = 127


class AuthenticateErrorCode(IntEnum):
    invalidCertificate = 1
    invalidSignature = 2
    unsupportedCurve = 3
    noSessionContext = 4
    invalidOid = 5
    euiccChallengeMismatch = 6
    ciPKUnknown = 7
    undefinedError = 127


class DownloadErrorCode(IntEnum):
    invalidCertificate = 1
    invalidSignature = 2
    unsupportedCurve = 3
    noSessionContext = 4
    invalidTransactionId = 5
    undefinedError = 127


class BppCommandId(IntEnum):
    initialiseSecureChannel = 0
    configureISDP = 1
    storeMetadata = 2
    storeMetadata2 = 3
    replaceSessionKeys = 4
    loadProfileElements = 5


class BppErrorReason(IntEnum):
    incorrectInputValues = 1
    invalidSignature = 2
    invalidTransactionId = 3
    unsupportedCrtValues = 4
    unsupportedRemoteOperationType = 5
    unsupportedProfileClass = 6
    scp03tStructureError = 7
    scp03tSecurityError = 8
    installFailedDueToIccidAlreadyExistsOnEuicc = 9
    installFailedDueToInsufficientMemoryForProfile = 10
    installFailedDueToInterruption = 11
    installFailedDueToPEProcessingError = 12
    installFailedDueToDataMismatch = 13
    testProfileInstallFailedDueToInvalidNaaKey = 14
    pprNotAllowed = 15
    installFailedDueToUnknownError = 127


class EuiccPackageErrorCode(IntEnum):
    invalidEid = 3
    replayError = 4
    counterValueOutOfRange = 6
    sizeOverflow = 15
    ecallActive = 104
    undefinedError = 127


class EnableProfileResult(IntEnum):
    ok = 0
    iccidOrAidNotFound = 1
    profileNotInDisabledState = 2
    disallowedByPolicy = 3
    catBusy = 5
    rollbackNotAvailable = 20
    undefinedError = 127


class DisableProfileResult(IntEnum):
    ok = 0
    iccidOrAidNotFound = 1
    profileNotInEnabledState = 2
    disallowedByPolicy = 3
    catBusy = 5
    undefinedError = 127


class DeleteProfileResult(IntEnum):
    ok = 0
    iccidOrAidNotFound = 1
    profileNotInDisabledState = 2
    disallowedByPolicy = 3
    rollbackNotAvailable = 20
    returnFallbackProfile = 21
    undefinedError = 127


class RollbackProfileResult(IntEnum):
    ok = 0
    undefinedError = 127


class ProfileRollbackCmdResult(IntEnum):
    ok = 0
    rollbackNotAllowed = 1
    catBusy = 5
    commandError = 7
    undefinedError = 127


class ImmediateEnableResult(IntEnum):
    ok = 0
    immediateEnableNotAvailable = 1
    noSessionContext = 4
    catBusy = 5
    undefinedError = 127


class ConfigImmediateEnableResult(IntEnum):
    ok = 0
    insufficientMemory = 1
    associatedEimAlreadyExists = 2
    undefinedError = 127


class ExecuteFallbackMechanismResult(IntEnum):
    ok = 0
    profileNotInDisabledState = 2
    catBusy = 5
    fallbackNotAvailable = 6
    commandError = 7
    ecallActive = 104
    undefinedError = 127


class ReturnFromFallbackResult(IntEnum):
    ok = 0
    catBusy = 5
    fallbackNotAvailable = 6
    commandError = 7
    undefinedError = 127


class EnableEmergencyProfileResult(IntEnum):
    ok = 0
    profileNotInDisabledState = 2
    catBusy = 5
    ecallNotAvailable = 8
    undefinedError = 127


class DisableEmergencyProfileResult(IntEnum):
    ok = 0
    profileNotInEnabledState = 2
    catBusy = 5
    undefinedError = 127


class AddInitialEimError(IntEnum):
    insufficientMemory = 1
    associatedEimAlreadyExists = 2
    ciPKUnknown = 3
    invalidAssociationToken = 5
    counterValueOutOfRange = 6
    commandError = 7
    undefinedError = 127


class GetCertsError(IntEnum):
    invalidCiPKId = 1
    undefinedError = 127


class RemoveNotificationResult(IntEnum):
    ok = 0
    nothingToDelete = 1
    undefinedError = 127


class SetDefaultDpAddressResult(IntEnum):
    ok = 0
    undefinedError = 127


class ConnectivityParametersError(IntEnum):
    parametersNotAvailable = 1
    undefinedError = 127


class EuiccMemoryResetResult(IntEnum):
    ok = 0
    nothingToDelete = 1
    catBusy = 5
    ecallActive = 104
    undefinedError = 127


class IpaEuiccDataErrorCode(IntEnum):
    incorrectTagList = 1
    euiccCiPKIdNotFound = 5
    ecallActive = 104
    undefinedError = 127


class ProfileInfoListError(IntEnum):
    incorrectInputValues = 1
    profileChangeOngoing = 11
    undefinedError = 127


class ProfileState(IntEnum):
    disabled = 0
    enabled = 1


class ProfileClass(IntEnum):
    test = 0
    provisioning = 1
    operational = 2


# NotificationEvent BIT STRING (SGP.22): bit number -> name
NOTIFICATION_EVENTS = ("install", "enable", "disable", "delete")
