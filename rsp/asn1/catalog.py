"""Which message types exist at the top level of each interface (what `rsp decode --auto` considers).

Names are the specification's. Where SGP.32 redefines an SGP.22 type with the same tag, both are listed and the
SGP.32 one (``SGP32-`` prefix) comes first, so that ``--auto`` prefers it.
"""

from __future__ import annotations

# ESipa (SGP.32 §6.1): the two wrapper CHOICEs first, then the message of every function, request then response.
ESIPA_TYPES: tuple[str, ...] = (
    "EsipaMessageFromIpaToEim",
    "EsipaMessageFromEimToIpa",
    "InitiateAuthenticationRequestEsipa",
    "InitiateAuthenticationResponseEsipa",
    "AuthenticateClientRequestEsipa",
    "AuthenticateClientResponseEsipa",
    "GetBoundProfilePackageRequestEsipa",
    "GetBoundProfilePackageResponseEsipa",
    "CancelSessionRequestEsipa",
    "CancelSessionResponseEsipa",
    "HandleNotificationEsipa",
    "TransferEimPackageRequest",
    "TransferEimPackageResponse",
    "GetEimPackageRequest",
    "GetEimPackageResponse",
    "ProvideEimPackageResult",
    "ProvideEimPackageResultResponse",
)

# eIM packages and their results (carried inside ESipa; BF51/BF52/BF54 are also ES10b LoadEuiccPackage data).
EIM_PACKAGE_TYPES: tuple[str, ...] = (
    "EuiccPackageRequest",
    "EuiccPackageResult",
    "IpaEuiccDataRequest",
    "IpaEuiccDataResponse",
    "ProfileDownloadTriggerRequest",
    "ProfileDownloadTriggerResult",
    "EimAcknowledgements",
)

# ES10a/b/c (IPA -> eUICC, STORE DATA): SGP.32 ES10b first, then the SGP.22 functions the IPA still uses.
ES10_TYPES: tuple[str, ...] = (
    # SGP.32 ES10b
    "EuiccPackageRequest",  # LoadEuiccPackage request
    "EuiccPackageResult",  # LoadEuiccPackage response
    "GetEimConfigurationDataRequest",
    "GetEimConfigurationDataResponse",
    "GetCertsRequest",
    "GetCertsResponse",
    "AddInitialEimRequest",
    "AddInitialEimResponse",
    "ProfileRollbackRequest",
    "ProfileRollbackResponse",
    "ConfigureImmediateProfileEnablingRequest",
    "ConfigureImmediateProfileEnablingResponse",
    "ImmediateEnableRequest",
    "ImmediateEnableResponse",
    "EnableEmergencyProfileRequest",
    "EnableEmergencyProfileResponse",
    "DisableEmergencyProfileRequest",
    "DisableEmergencyProfileResponse",
    "ExecuteFallbackMechanismRequest",
    "ExecuteFallbackMechanismResponse",
    "ReturnFromFallbackRequest",
    "ReturnFromFallbackResponse",
    "GetConnectivityParametersRequest",
    "GetConnectivityParametersResponse",
    "SGP32-EuiccMemoryResetRequest",
    "SGP32-EuiccMemoryResetResponse",
    "SGP32-SetDefaultDpAddressRequest",
    "SGP32-SetDefaultDpAddressResponse",
    "SGP32-RetrieveNotificationsListRequest",
    "SGP32-RetrieveNotificationsListResponse",
    "IpaeActivationRequest",
    "IpaeActivationResponse",
    # SGP.22 ES10a
    "EuiccConfiguredAddressesRequest",
    "EuiccConfiguredAddressesResponse",
    "SetDefaultDpAddressRequest",
    "SetDefaultDpAddressResponse",
    # SGP.22 ES10b
    "GetEuiccInfo1Request",
    "EUICCInfo1",
    "GetEuiccInfo2Request",
    "SGP32-EUICCInfo2",
    "EUICCInfo2",
    "GetEuiccChallengeRequest",
    "GetEuiccChallengeResponse",
    "AuthenticateServerRequest",
    "SGP32-AuthenticateServerResponse",
    "AuthenticateServerResponse",
    "PrepareDownloadRequest",
    "SGP32-PrepareDownloadResponse",
    "PrepareDownloadResponse",
    "BoundProfilePackage",
    "SGP32-ProfileInstallationResult",
    "ProfileInstallationResult",
    "CancelSessionRequest",
    "SGP32-CancelSessionResponse",
    "CancelSessionResponse",
    "ListNotificationRequest",
    "ListNotificationResponse",
    "RetrieveNotificationsListRequest",
    "RetrieveNotificationsListResponse",
    "NotificationSentRequest",
    "NotificationSentResponse",
    "GetRatRequest",
    "GetRatResponse",
    "LoadCRLRequest",
    "LoadCRLResponse",
    # SGP.22 ES10c
    "ProfileInfoListRequest",
    "SGP32-ProfileInfoListResponse",
    "ProfileInfoListResponse",
    "EnableProfileRequest",
    "EnableProfileResponse",
    "DisableProfileRequest",
    "DisableProfileResponse",
    "DeleteProfileRequest",
    "DeleteProfileResponse",
    "EuiccMemoryResetRequest",
    "EuiccMemoryResetResponse",
    "GetEuiccDataRequest",
    "GetEuiccDataResponse",
    "SetNicknameRequest",
    "SetNicknameResponse",
)

# ES9+ (SGP.22 §6.7 ASN.1 binding) and ES11, as used by the IPA in direct download and by the eIM's ES9+' side.
ES9_TYPES: tuple[str, ...] = (
    "RemoteProfileProvisioningRequest",
    "RemoteProfileProvisioningResponse",
    "InitiateAuthenticationRequest",
    "InitiateAuthenticationResponse",
    "SGP32-AuthenticateClientRequest",
    "AuthenticateClientRequest",
    "AuthenticateClientResponseEs9",
    "GetBoundProfilePackageRequest",
    "GetBoundProfilePackageResponse",
    "HandleNotification",
    "CancelSessionRequestEs9",
    "CancelSessionResponseEs9",
    "AuthenticateClientResponseEs11",
)


def _unique(*groups: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        for name in group:
            if name not in out:
                out.append(name)
    return tuple(out)


# SGP.32 v1.0 forms that differ on the wire from v1.2 (schemas/sgp32v10.asn); listed last, so that a message that
# reads the same in both versions is named by its v1.2 type.
V10_ESIPA_TYPES: tuple[str, ...] = (
    "V10-EsipaMessageFromIpaToEim",
    "V10-EsipaMessageFromEimToIpa",
    "V10-InitiateAuthenticationRequestEsipa",
    "V10-HandleNotificationEsipa",
    "V10-TransferEimPackageResponse",
    "V10-ProvideEimPackageResult",
    "V10-ProvideEimPackageResultResponse",
    "V10-IpaEuiccDataRequest",
    "V10-IpaEuiccDataResponse",
    "V10-ProfileDownloadTriggerResult",
    "V10-RetrieveNotificationsListResponse",
)

TOP_LEVEL_TYPES: tuple[str, ...] = _unique(ESIPA_TYPES, EIM_PACKAGE_TYPES, ES10_TYPES, ES9_TYPES, V10_ESIPA_TYPES)

# Convenience names for ES10b functions whose request/response are an existing type.
ALIASES: dict[str, str] = {
    "LoadEuiccPackageRequest": "EuiccPackageRequest",
    "LoadEuiccPackageResponse": "EuiccPackageResult",
    "RemoveNotificationFromListRequest": "NotificationSentRequest",
    "RemoveNotificationFromListResponse": "NotificationSentResponse",
}
