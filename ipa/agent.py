"""The IPA agent: wires card, state, eIM transport and procedures; the caller owns the loop.

    agent = Agent(config, channel)
    await agent.start()                 # open the card, read EID and eIM configuration, bootstrap, recover
    result = await agent.poll_once()    # one eIM Package Retrieval step (see ipa.procedures.eim_package_retrieval)
    delay = agent.next_delay(result)    # 0 after work, poll.interval when idle, backoff + jitter on failure
    ...
    await agent.close()

:meth:`Agent.run` is the daemon loop built from these (``ipa run``): it stops cleanly when ``stop`` is set (the CLI
sets it on SIGTERM/SIGINT), finishing the step in progress first so the state file stays consistent. With the MQTT
binding it also handles packages pushed by the eIM while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ipa.config import IpaConfig
from ipa.es10 import CardChanged, EimConfiguration, Es10Client
from ipa.procedures.context import IpaContext, ProgressFn
from ipa.state import StateStore

if TYPE_CHECKING:
    import asyncio

    from firmware_bridge.interfaces import ApduChannel
    from ipa.esipa import EsipaTransport
    from ipa.procedures.eim_package_retrieval import PollResult
    from ipa.status import StatusWriter

# The ESipa clients and the procedures of a poll are imported when the agent first polls (ipa.procedures.
# eim_package_retrieval, ipa.esipa): a one-shot command (``ipa chip info``) starts the agent to read the card and
# never loads them, and ``ipa run`` loads only its binding's stack (ipa.esipa.open_transport).

log = logging.getLogger("ipa.agent")


class Agent:
    def __init__(
        self,
        config: IpaConfig,
        channel: ApduChannel,
        *,
        transport_factory: Any = None,
        es9_factory: Any = None,
        state_path: str | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.config = config
        self.es10 = Es10Client(channel, config.device.block_size)
        self.store = StateStore(state_path if state_path is not None else (config.ipa.state_file or None))
        self._transport_factory = transport_factory
        self.ctx = IpaContext(
            config=config,
            es10=self.es10,
            store=self.store,
            progress=progress,
            es9_factory=es9_factory or self._default_es9,
        )
        self._lock_: Any = None  # an asyncio.Lock, made when first needed (one-shot commands run without asyncio)
        self.endpoint: Any = None  # the ESipa endpoint in use (binding, url), once a transport was opened
        self.last: PollResult | None = None
        self.card_changed: CardChanged | None = None

    @property
    def _lock(self) -> Any:
        if self._lock_ is None:
            import asyncio

            self._lock_ = asyncio.Lock()
        return self._lock_

    # ------------------------------------------------------------------ life cycle
    async def start(self, *, bootstrap: bool = True) -> None:
        await self.store.aload()
        await self.es10.open()
        self.ctx.eid = await self.es10.get_eid()
        log.info("eUICC %s", self.ctx.eid.hex().upper())
        await self.store.abind(self.ctx.eid)  # the state file is this card's, never another's
        self.es10.expected_eid = self.ctx.eid  # from now on every reopening checks the card is still this one
        eims = await self.es10.get_eim_configuration_data()
        if not eims and bootstrap and self.config.eim.provisioning_file:
            from ipa.procedures.add_initial_eim import add_initial_eim, load_provisioning

            log.info("no eIM configured: AddInitialEim from %s", self.config.eim.provisioning_file)
            await add_initial_eim(self.ctx, load_provisioning(self.config.eim.provisioning_file))
            eims = await self.es10.get_eim_configuration_data()
        self.ctx.eim = self._pick_eim(eims)
        self.ctx.transport_factory = self._transport_factory or self._default_transport
        if self.ctx.eim is None and not self.config.eim.url:
            log.info("no eIM configured on the eUICC and no eim.url: polling is not possible yet")

    def _pick_eim(self, eims: list[EimConfiguration]) -> EimConfiguration | None:
        if self.config.eim.id:
            for e in eims:
                if e.eim_id == self.config.eim.id:
                    return e
            log.warning("preferred eIM %r is not configured on the eUICC", self.config.eim.id)
        return eims[0] if eims else None

    async def _default_transport(self) -> EsipaTransport:
        from ipa.esipa import choose_binding, open_transport

        endpoint = choose_binding(self.config, self.ctx.eim)
        self.endpoint = endpoint
        log.info("ESipa over %s to %s", endpoint.binding, endpoint.url)
        return await open_transport(endpoint, self.config, self.ctx.eid, self.ctx.eim)

    def _default_es9(self):
        from ipa.es9 import Es9Client
        from ipa.esipa import tls_context

        c = self.config.es9
        from rsp import resolve

        return Es9Client(
            verify=tls_context(c.ca_file, None, c.insecure), timeout=c.timeout, resolve=resolve.parse(c.resolve)
        )

    async def close(self) -> None:
        await self.ctx.close_transport()
        with contextlib.suppress(Exception):
            await self.es10.close()
        await self.store.aclose()

    # ------------------------------------------------------------------ one step
    async def poll_once(self) -> PollResult:
        from ipa.procedures import eim_package_retrieval, fallback
        from ipa.procedures.eim_package_retrieval import Outcome, PollResult

        async with self._lock:
            try:
                result = await eim_package_retrieval.poll_once(self.ctx)
                await fallback.check(self.ctx)
            except CardChanged as exc:
                # another card behind the port: nothing was sent to it, nothing more will be; the eIM is told
                # nothing (it would read a result of another card as this one's). The daemon stops.
                log.error("%s: stopping, nothing sent to that card", exc)
                self.card_changed = exc
                await self.ctx.close_transport()
                result = PollResult(Outcome.FAILED, str(exc))
            except Exception as exc:  # a modem/channel error or a bug: log it, back off, keep serving
                log.exception("poll step failed: %s", exc)
                self.store.state.failures += 1
                await self.store.commit()
                await self.ctx.close_transport()
                result = PollResult(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
            if self.card_changed is None and self.es10.card_changed is not None:  # met inside a procedure
                self.card_changed = self.es10.card_changed
                log.error("%s: stopping, nothing sent to that card", self.card_changed)
                await self.ctx.close_transport()
                result = PollResult(Outcome.FAILED, str(self.card_changed))
        previous, self.last = self.last, result
        # at INFO only what changes: an idle poll after an idle poll is DEBUG (a quiet journal while nothing happens)
        quiet = result.outcome is Outcome.IDLE and previous is not None and previous.outcome is Outcome.IDLE
        (log.debug if quiet else log.info)("poll: %s %s", result.outcome.value, result.detail)
        return result

    def next_delay(self, result: PollResult | None = None) -> float:
        from ipa.procedures import eim_package_retrieval
        from ipa.procedures.eim_package_retrieval import Outcome

        r = result or self.last
        outcome = r.outcome if r else Outcome.IDLE
        return eim_package_retrieval.next_delay(self.config.poll, outcome, self.store.state.failures)

    async def handle_push(self, push) -> str:
        from ipa.procedures import eim_package_retrieval

        async with self._lock:
            t = self.ctx.transport
            return await eim_package_retrieval.handle_push(self.ctx, push, t.answer_push)  # type: ignore[union-attr]

    async def _reopen_for_push(self) -> EsipaTransport | None:
        """After a failure closed the transport, open a CoAP one again while waiting, so its push observation is
        renewed at once rather than at the next poll (which may be an hour away)."""
        if not self.config.eim.push or self.ctx.transport_factory is None:
            return None
        from ipa.esipa import choose_binding

        try:
            if choose_binding(self.config, self.ctx.eim).binding != "coap":
                return None
            return await self.ctx.esipa()
        except Exception as exc:  # no eIM configured yet, bad key: poll as before
            log.debug("no push transport: %s", exc)
            return None

    # ------------------------------------------------------------------ daemon loop
    async def run(self, stop: asyncio.Event, status: StatusWriter | None = None) -> None:
        """Poll until ``stop`` is set; handle pushed packages (MQTT) while waiting. ``status``: the daemon's status
        file (:mod:`ipa.status`), told every change of the daemon's view, and ``stopped`` at the end."""
        try:
            await self._report(status)
            while not stop.is_set():
                result = await self.poll_once()
                if self.card_changed is not None:
                    raise self.card_changed
                delay = self.next_delay(result)
                await self._report(status, result, delay)
                await self._wait(stop, delay, status)
            log.info("stopping: state saved, %d result(s) queued", len(self.store.state.results))
        finally:
            await self._report(status, state="stopped", stopped=time.time())

    async def _report(self, status: StatusWriter | None, result: PollResult | None = None, delay: float = 0.0, **kw):
        """Tell the status file what the daemon is doing (it writes only when that changed)."""
        if status is None:
            return
        st = self.store.state
        fields: dict[str, Any] = {
            "binding": self.endpoint.binding if self.endpoint is not None else None,
            "eimUrl": self.endpoint.url if self.endpoint is not None else None,
            "failures": st.failures,
            "queue": [{"kind": r.kind, "attempts": r.attempts, "seqNumbers": list(r.seq_numbers)} for r in st.results],
            "inflight": st.inflight.get("procedure") if st.inflight else None,
        }
        if result is not None:
            now = time.time()
            outcome = result.outcome.value
            fields["lastPoll"] = {"outcome": outcome, "detail": result.detail, "at": now}
            fields["state"] = {"work": "working", "idle": "idle", "failed": "backoff"}[outcome]
            fields["nextPoll"] = now + delay if outcome == "failed" else None
        fields.update(kw)
        await status.update(**fields)

    async def _wait(self, stop: asyncio.Event, delay: float, status: StatusWriter | None = None) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while not stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            t = self.ctx.transport or await self._reopen_for_push()
            waiters = [asyncio.ensure_future(stop.wait())]
            push_wait = None
            if t is not None and hasattr(t, "next_push"):
                push_wait = asyncio.ensure_future(t.next_push(remaining))
                waiters.append(push_wait)
            done, pending = await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await p
            if push_wait is not None and push_wait in done:
                from ipa.esipa import PackageWaiting

                push = push_wait.result()
                if isinstance(push, PackageWaiting):  # CoAP push: the eIM has a package, fetch it now
                    log.info("push: package waiting")
                    return
                if push is not None:
                    try:
                        what = await self.handle_push(push)
                        log.info("push: %s", what)
                    except CardChanged as exc:
                        self.card_changed = exc
                    except Exception as exc:  # keep serving: a failed push is retried by the eIM
                        log.error("pushed package failed: %s", exc)
                    if self.es10.card_changed is not None:
                        self.card_changed = self.es10.card_changed
                    await self._report(status)
                    return  # poll again at once after work (run() stops first if the card changed)
