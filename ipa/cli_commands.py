"""The field-technician commands of ``ipa``, one ES10 / ESipa function or SGP.32 procedure each:

    ipa notification list | remove SEQ   ES10b ListNotification / RemoveNotificationFromList (SGP.22 v2.5)
    ipa notification process             ESipa.HandleNotification (:mod:`ipa.procedures.notification_delivery`)
    ipa download -a AC                   direct Profile Download (SGP.32 v1.2 §3.2.3.1)
    ipa eim list | add-initial FILE      ES10b GetEimConfigurationData / AddInitialEim (SGP.32 v1.2)

Loaded by :func:`ipa.cli.run_command` when one of them runs; output and exit codes follow docs/cli.md.
"""

from __future__ import annotations

from ipa import cli_report as report
from ipa.cli import Output
from ipa.cli import _with_agent as with_agent
from ipa.config import IpaConfig
from rsp import cli_contract as cc


async def notification(args, config: IpaConfig, out: Output) -> int:
    action = args.action
    if action == "list":
        metas = await with_agent(config, out, lambda a: a.es10.list_notification(), bootstrap=False, state=args.state)
        human = (
            "\n".join(
                f"{n.seq_number:>5}  {','.join(n.events):<8}  {n.iccid or '-':<20}  {n.address or '-'}" for n in metas
            )
            or "no pending notifications"
        )
        return out.success([n.to_json() for n in metas], human)
    if action == "remove":
        if args.seq is None:
            return out.error("notification remove: give the sequence number (SEQ)")
        code = await with_agent(
            config, out, lambda a: a.es10.remove_notification_from_list(args.seq), bootstrap=False, state=args.state
        )
        if code == 1:
            return out.error(
                f"RemoveNotificationFromList: nothingToDelete(1) for seq {args.seq}",
                {"step": "RemoveNotificationFromList", "code": 1, "codeName": "nothingToDelete(1)"},
            )
        return out.success({"seqNumber": args.seq, "removed": True}, f"removed notification {args.seq}")

    async def process(agent):
        from ipa.procedures.notification_delivery import deliver_notifications

        return await deliver_notifications(agent.ctx)

    delivered, pending = await with_agent(config, out, process, state=args.state)
    data = {"delivered": delivered, "pending": pending}
    if pending:
        return out.error(f"HandleNotification: {pending} notification(s) not delivered", data)
    return out.success(data, f"delivered {delivered} notification(s)")


async def download(args, config: IpaConfig, out: Output) -> int:
    from ipa.procedures import direct_profile_download
    from ipa.procedures.profile_download import DownloadFailed, parse_activation_code

    data = parse_activation_code(args.activation_code)

    async def dl(agent):
        try:
            return await direct_profile_download.download(agent.ctx, data, args.confirmation_code), None
        except DownloadFailed as exc:
            return None, exc

    import asyncio

    from ipa.codes import CancelSessionReason, code_name

    try:
        pir, err = await with_agent(config, out, dl, bootstrap=False, state=args.state)
    except asyncio.CancelledError:  # Ctrl-C: the procedure cancelled the session (card and SM-DP+) first
        cancel = out.cleanup.get("CancelSession", {})
        es9 = out.cleanup.get("cancelSession", {})
        where = out.where()
        return out.error(
            cc.step_message(f"{where['step'] or 'download'}{report.where_text(where)}", "interrupted")
            + (f"; session cancelled ({cancel['reason']})" if cancel else "; no session was open"),
            {**where, "cancelSessionReason": cancel.get("reason"), "smdpCancelled": es9.get("accepted", False)},
            exit=cc.EXIT_INTERRUPTED,
        )
    if err is not None:
        reason = code_name(CancelSessionReason, err.cancel_reason) if err.cancel_reason is not None else None
        where = out.where()
        return out.error(
            report.procedure_message(err) + (f"; session cancelled ({reason})" if reason else ""),
            {
                **where,
                "step": err.step,
                "code": err.code,
                "codeName": err.code_name,
                "cancelSessionReason": reason,
            },
            exit=report.download_exit(err),
        )
    return out.success(
        {"iccid": pir.iccid, "isdpAid": pir.aid, "seqNumber": pir.seq_number}, f"profile {pir.iccid} installed"
    )


async def eim(args, config: IpaConfig, out: Output) -> int:
    if args.action == "list":
        eims = await with_agent(
            config, out, lambda a: a.es10.get_eim_configuration_data(), bootstrap=False, state=args.state
        )
        human = "\n".join(f"{e.eim_id:<24} {e.fqdn or '-':<28} token={e.association_token}" for e in eims) or "no eIM"
        return out.success([e.to_json() for e in eims], human)
    if not args.file:
        return out.error("eim add-initial: give the provisioning FILE")
    from ipa.procedures.add_initial_eim import add_initial_eim, load_provisioning

    request = load_provisioning(args.file)
    result = await with_agent(config, out, lambda a: add_initial_eim(a.ctx, request), bootstrap=False, state=args.state)
    return out.success(
        {"associationToken": list(result.association_tokens)},
        f"eIM added, association token(s): {list(result.association_tokens)}",
    )
