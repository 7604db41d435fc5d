"""ES9+ functions of the SM-DP+ (SGP.22 v2.5 §5.6), one module per function, free of I/O.

Each function takes the :class:`~smdpp.es9plus.common.SmdpContext` and the decoded JSON request body and returns
the response body (without the header) or ``None`` (handleNotification: HTTP 204), or raises
:class:`~smdpp.errors.Es9Error`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smdpp.es9plus.authenticate_client import authenticate_client
from smdpp.es9plus.cancel_session import cancel_session
from smdpp.es9plus.common import SmdpContext
from smdpp.es9plus.get_bound_profile_package import get_bound_profile_package
from smdpp.es9plus.handle_notification import handle_notification
from smdpp.es9plus.initiate_authentication import initiate_authentication

FUNCTIONS: dict[str, Callable[[SmdpContext, dict[str, Any]], dict[str, Any] | None]] = {
    "initiateAuthentication": initiate_authentication,
    "authenticateClient": authenticate_client,
    "getBoundProfilePackage": get_bound_profile_package,
    "handleNotification": handle_notification,
    "cancelSession": cancel_session,
}

__all__ = ["FUNCTIONS", "SmdpContext"]
