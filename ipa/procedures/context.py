"""What every procedure works with: card, eIM transport, state, configuration, progress reporting."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipa.config import IpaConfig
from ipa.es10 import EimConfiguration, Es10Client
from ipa.state import StateStore

if TYPE_CHECKING:
    from ipa.esipa import EsipaTransport  # imported when a procedure first talks to the eIM

log = logging.getLogger("ipa.procedures")

ProgressFn = Callable[[str, dict[str, Any]], None]


class ProcedureError(Exception):
    """A procedure failed. ``step`` names the step (ES10/ESipa/ES9+ function), ``code`` the eUICC or server code
    (with ``code_name``) when there is one."""

    def __init__(
        self, procedure: str, step: str, message: str, code: int | str | None = None, code_name: str | None = None
    ) -> None:
        self.procedure = procedure
        self.step = step
        self.code = code
        self.code_name = code_name
        super().__init__(f"{procedure}: {step}: {message}")


@dataclass
class IpaContext:
    config: IpaConfig
    es10: Es10Client
    store: StateStore
    eid: bytes = b""
    eim: EimConfiguration | None = None
    transport_factory: Callable[[], Awaitable[EsipaTransport]] | None = None
    es9_factory: Callable[[], Any] | None = None
    progress: ProgressFn | None = None
    clock: Callable[[], float] = time.time
    transport: EsipaTransport | None = None
    swept: bool = False  # the card's pending EPR list was checked for undelivered results since start

    def report(self, step: str, **data: Any) -> None:
        """Progress of a procedure (CLI progress lines, logs)."""
        log.info("%s %s", step, " ".join(f"{k}={v}" for k, v in data.items()))
        if self.progress is not None:
            self.progress(step, data)

    async def esipa(self) -> EsipaTransport:
        if self.transport is None:
            if self.transport_factory is None:
                from ipa.esipa import EsipaError

                raise EsipaError("ESipa", "no eIM configured (no transport)")
            self.transport = await self.transport_factory()
        return self.transport

    async def send(self, message_der: bytes) -> bytes | None:
        """Send one ESipa message; on a transport error the transport is closed so the next call reconnects."""
        from ipa.esipa import EsipaError

        t = await self.esipa()
        try:
            return await t.send(message_der)
        except EsipaError:
            raise
        except Exception as exc:  # a binding library error that escaped the adapter
            raise EsipaError("ESipa", f"{type(exc).__name__}: {exc}") from exc

    async def close_transport(self) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            try:
                await t.close()
            except Exception as exc:
                log.debug("closing the transport failed: %s", exc)

    @property
    def eim_id(self) -> str | None:
        return self.eim.eim_id if self.eim is not None else None

    async def set_state_change(self, cause: int) -> None:
        """Remember a local state change to announce with notifyStateChange + stateChangeCause."""
        self.store.state.state_change = cause
        await self.store.commit()
