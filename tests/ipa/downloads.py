"""Helpers shared by the IPA's profile-download tests (test_downloads, test_download_retry, test_ts48_published):
the eIM's trigger, the SM-DP+ order's state, and an agent started for a direct or a relayed (indirect) download."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ipa.agent import Agent
from rsp import tlv
from smdpp.orders import create_order
from tests.ipa.peer import Es9Relay


def trigger(ac: str, txid: bytes = b"\x11\x22") -> bytes:
    """ProfileDownloadTriggerRequest [84] carrying activation code ``ac`` and eIM transaction id ``txid``."""
    return tlv.encode(0xBF54, tlv.encode(0xA0, tlv.encode(0x80, ac.encode())) + tlv.encode(0x82, txid))


def order_state(smdp, ac: str) -> str:
    return smdp.ctx.store.get(ac.split("$")[2]).state


def new_ac(smdp, profile: str = "small", **kwargs: Any) -> str:
    """The activation code of a new order at the lab SM-DP+ ``smdp``."""
    return create_order(smdp.ctx.store, profile=profile, smdp_address=smdp.address, **kwargs).activation_code


@contextlib.asynccontextmanager
async def relayed(rig, smdp) -> AsyncIterator[tuple[Agent, Es9Relay]]:
    """The rig's agent, started, its eIM relaying ES9+ to ``smdp``; both closed on exit."""
    relay = Es9Relay(smdp.base_url, str(smdp.ca_bundle))
    rig.peer.relay = relay
    try:
        async with rig.started() as agent:
            yield agent, relay
    finally:
        await relay.close()


def direct_only(rig, smdp) -> None:
    """The IPA downloads from ``smdp`` itself (trusting its CA), never through the eIM."""
    rig.config.es9.ca_file = str(smdp.ca_bundle)
    rig.config.ipa.indirect_download = False


async def install_directly(make_rig, smdp, package: bytes):
    """``package`` imported at ``smdp``, ordered and downloaded directly by the IPA through a Quectel-model virtual
    modem (which starts with AT+CMEE=0, bare ERROR); returns the rig after the IPA's poll."""
    from smdpp import profiles

    imported = profiles.import_upp(smdp.ctx.config.data_dir, package, service_provider_name="GSMA")
    rig = await make_rig("http", profiles=False, device="modem", modem_model="EG25-G")
    direct_only(rig, smdp)
    async with rig.started() as agent:
        ac = new_ac(smdp, profile=imported.name)
        rig.peer.queue(trigger(ac))
        await agent.poll_once()
        assert order_state(smdp, ac) == "installed"
        assert [(n.kind, n.verified) for n in smdp.ctx.store.notifications()] == [("pir", True)]
    return rig
