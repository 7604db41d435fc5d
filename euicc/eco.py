"""eIM Configuration Operations inside an eUICC Package (SGP.32 v1.2 §2.10.2).

=====================  =======  ==============================================================================
eCO (tag)              result   codes
=====================  =======  ==============================================================================
addEim ``A8``          ``A8``   ``{84 associationToken}`` when the card generated one (request token -1), else
                                ``{02 code}``: ok 0, insufficientMemory 1 (8 eIMs), associatedEimAlreadyExists 2,
                                ciPKUnknown 3, invalidAssociationToken 5, counterValueOutOfRange 6, commandError 7
deleteEim ``A9``       ``89``   ok 0, eimNotFound 1, lastEimDeleted 2 (deleted; no eIM is left), commandError 7
updateEim ``AA``       ``8A``   ok 0, eimNotFound 1, ciPKUnknown 3, counterValueOutOfRange 6 (also a counter
                                below the current one: counter values are never reused), commandError 7
listEim ``AB``         ``AB``   ``{A0 {30 {80 eimId, [82 eimIdType]} ...}}``
=====================  =======  ==============================================================================
"""

from __future__ import annotations

from euicc import der, eim_config
from euicc.context import Context
from euicc.eim_config import EimConfigError
from euicc.psmo import Damaged, PackageRun
from rsp import tlv
from rsp.errors import DecodeError


def add_eim(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    try:
        cfg = eim_config.parse(node, ctx)
        if ctx.state.eim(cfg.eim_id) is not None:
            raise EimConfigError(eim_config.ASSOCIATED_EIM_ALREADY_EXISTS, "eIM already associated")
        if len(ctx.state.eims) >= eim_config.MAX_EIMS:
            raise EimConfigError(eim_config.INSUFFICIENT_MEMORY, "no room for another eIM")
        new, generated = eim_config.new_config(ctx, cfg)
    except EimConfigError as exc:
        return tlv.encode(0xA8, der.integer(0x02, exc.code))
    ctx.state.eims.append(new)
    if generated is not None:
        return tlv.encode(0xA8, der.integer(0x84, generated))
    return tlv.encode(0xA8, der.integer(0x02, eim_config.OK))


def delete_eim(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    try:
        f = der.fields(node, "deleteEim")
        eim_id = der.decode_utf8(f[0x80].value)
    except (KeyError, DecodeError):
        return der.integer(0x89, eim_config.COMMAND_ERROR)
    e = ctx.state.eim(eim_id)
    if e is None:
        return der.integer(0x89, eim_config.EIM_NOT_FOUND)
    ctx.state.eims.remove(e)
    return der.integer(0x89, 2 if not ctx.state.eims else eim_config.OK)


def update_eim(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    try:
        cfg = eim_config.parse(node, ctx)
    except EimConfigError as exc:
        return der.integer(0x8A, exc.code)
    e = ctx.state.eim(cfg.eim_id)
    if e is None:
        return der.integer(0x8A, eim_config.EIM_NOT_FOUND)
    if cfg.counter is not None and cfg.counter < e.counter:
        return der.integer(0x8A, eim_config.COUNTER_VALUE_OUT_OF_RANGE)
    if cfg.fqdn is not None:
        e.fqdn = cfg.fqdn
    if cfg.id_type is not None:
        e.id_type = cfg.id_type
    if cfg.counter is not None:
        e.counter = cfg.counter
    if cfg.token is not None and cfg.token >= 0:
        e.association_token = cfg.token
    if cfg.public_key_data is not None:
        e.public_key_data = cfg.public_key_data
    if cfg.tls_data is not None:
        e.tls_data = cfg.tls_data
    if cfg.supported_protocol is not None:
        e.supported_protocol = cfg.supported_protocol
    if cfg.euicc_ci_pkid is not None:
        e.euicc_ci_pkid = cfg.euicc_ci_pkid
    if cfg.indirect:
        e.indirect_profile_download = True
    return der.integer(0x8A, eim_config.OK)


def list_eim(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    if node.value:
        raise Damaged("listEim carries data")
    items = b""
    for e in ctx.state.eims:
        body = der.utf8(0x80, e.eim_id)
        if e.id_type is not None:
            body += der.integer(0x82, e.id_type)
        items += tlv.encode(0x30, body)
    return tlv.encode(0xAB, tlv.encode(0xA0, items))


HANDLERS = {0xA8: add_eim, 0xA9: delete_eim, 0xAA: update_eim, 0xAB: list_eim}
