"""ES10b.AddInitialEim - SGP.32 v1.2 §5.9: ``BF57 {A0 {30 EimConfigurationData ...}}``.

Only while no eIM is associated (else ``addInitialEimError associatedEimAlreadyExists(2)``). Every entry is
checked first (codes of euicc.eim_config; an entry without a signing key or a repeated eimId is
``commandError(7)``); if any fails nothing is added: ``BF57 {81 code}``. Otherwise ``BF57 {A0 {84 token | 05 00}
...}``, one per entry, in order: ``associationToken`` -1 makes the card generate a token (from a persistent
counter, never reused), returned as ``84``; any other entry answers ``addOk`` (``05 00``)."""

from __future__ import annotations

from euicc import der, eim_config
from euicc.context import Context
from euicc.eim_config import EimConfigError
from euicc.es10._common import children, fields
from rsp import tlv

TAG = 0xBF57


def error(code: int) -> bytes:
    return tlv.encode(TAG, der.integer(0x81, code))


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "AddInitialEim")
    if set(f) != {0xA0}:
        return error(eim_config.COMMAND_ERROR)
    entries = children(f[0xA0], "eimConfigurationDataList")
    if not entries or any(e.tag != 0x30 for e in entries):
        return error(eim_config.COMMAND_ERROR)
    if ctx.state.eims:
        return error(eim_config.ASSOCIATED_EIM_ALREADY_EXISTS)
    if len(entries) > eim_config.MAX_EIMS:
        return error(eim_config.INSUFFICIENT_MEMORY)
    try:
        parsed = [eim_config.parse(e, ctx) for e in entries]
        if len({p.eim_id for p in parsed}) != len(parsed):
            raise EimConfigError(eim_config.COMMAND_ERROR, "the same eimId twice")
        made = [eim_config.new_config(ctx, p) for p in parsed]
    except EimConfigError as exc:
        return error(exc.code)
    out = b""
    for cfg, generated in made:
        ctx.state.eims.append(cfg)
        out += der.integer(0x84, generated) if generated is not None else der.null()
    return tlv.encode(TAG, tlv.encode(0xA0, out))
