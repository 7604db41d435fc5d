"""ISD-R functions, one module per ES10 function (SGP.22 v2.5 §5.7, SGP.32 v1.2 §5.9).

:func:`handler` gives the module's ``handle(ctx, request_tlv) -> response bytes`` for a request tag.
LoadBoundProfilePackage (no tag of its own) is dispatched by ``euicc.isdr``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from euicc.context import Context
    from rsp import tlv

Handler = Callable[["Context", "tlv.Tlv"], bytes]

#: request tag -> the module of that ES10 function. A module is imported when its command first arrives: a card
#: that answers GetEUICCInfo2 does not load the download and package modules and the crypto they import
#: (``ipa --card STATE chip info``, docs/performance.md 5b). tests/euicc/test_es10_registry.py checks that each
#: module's own ``TAG`` is the key it is listed under and that every module of this package is listed.
MODULES: dict[int, str] = {
    0xBF20: "get_euicc_info1",
    0xBF22: "get_euicc_info2",
    0xBF2E: "get_euicc_challenge",
    0xBF38: "authenticate_server",
    0xBF21: "prepare_download",
    0xBF41: "cancel_session",
    0xBF2D: "get_profiles_info",
    0xBF3C: "euicc_configured_addresses",
    0xBF3E: "get_euicc_data",
    0xBF43: "get_rat",
    0xBF28: "list_notification",
    0xBF2B: "retrieve_notifications_list",
    0xBF30: "remove_notification_from_list",
    0xBF51: "load_euicc_package",
    0xBF55: "get_eim_configuration_data",
    0xBF57: "add_initial_eim",
    0xBF56: "get_certs",
    0xBF58: "profile_rollback",
    0xBF59: "configure_immediate_profile_enabling",
    0xBF5A: "immediate_enable",
    0xBF5B: "enable_emergency_profile",
    0xBF5C: "disable_emergency_profile",
    0xBF5D: "execute_fallback_mechanism",
    0xBF5E: "return_from_fallback",
    0xBF64: "euicc_memory_reset",
    0xBF65: "set_default_dp_address",
    0xBF5F: "get_connectivity_parameters",
    0xBF42: "ipae_activation",
}
_handlers: dict[int, Handler] = {}


def handler(tag: int) -> Handler | None:
    """The ``handle(ctx, request_tlv)`` of the ES10 function with request tag ``tag``, or ``None``."""
    found = _handlers.get(tag)
    if found is None and tag in MODULES:
        found = _handlers[tag] = importlib.import_module(f"euicc.es10.{MODULES[tag]}").handle
    return found
