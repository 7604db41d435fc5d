"""ISD-R functions, one module per ES10 function (SGP.22 v2.5 §5.7, SGP.32 v1.2 §5.9).

``REGISTRY`` maps the request tag to the module's ``handle(ctx, request_tlv) -> response bytes``.
LoadBoundProfilePackage (no tag of its own) is dispatched by ``euicc.isdr``.
"""

from __future__ import annotations

from collections.abc import Callable

from euicc.context import Context
from euicc.es10 import (
    add_initial_eim,
    authenticate_server,
    cancel_session,
    configure_immediate_profile_enabling,
    disable_emergency_profile,
    enable_emergency_profile,
    euicc_configured_addresses,
    euicc_memory_reset,
    execute_fallback_mechanism,
    get_certs,
    get_connectivity_parameters,
    get_eim_configuration_data,
    get_euicc_challenge,
    get_euicc_data,
    get_euicc_info1,
    get_euicc_info2,
    get_profiles_info,
    get_rat,
    immediate_enable,
    ipae_activation,
    list_notification,
    load_euicc_package,
    prepare_download,
    profile_rollback,
    remove_notification_from_list,
    retrieve_notifications_list,
    return_from_fallback,
    set_default_dp_address,
)
from rsp import tlv

Handler = Callable[[Context, tlv.Tlv], bytes]

_MODULES = (
    get_euicc_info1,
    get_euicc_info2,
    get_euicc_challenge,
    authenticate_server,
    prepare_download,
    cancel_session,
    get_profiles_info,
    euicc_configured_addresses,
    get_euicc_data,
    get_rat,
    list_notification,
    retrieve_notifications_list,
    remove_notification_from_list,
    load_euicc_package,
    get_eim_configuration_data,
    add_initial_eim,
    get_certs,
    profile_rollback,
    configure_immediate_profile_enabling,
    immediate_enable,
    enable_emergency_profile,
    disable_emergency_profile,
    execute_fallback_mechanism,
    return_from_fallback,
    euicc_memory_reset,
    set_default_dp_address,
    get_connectivity_parameters,
    ipae_activation,
)

REGISTRY: dict[int, Handler] = {m.TAG: m.handle for m in _MODULES}
assert len(REGISTRY) == len(_MODULES), "two ES10 modules share a tag"
