"""What every SCPI instrument driver shares: its session as an async context manager, identity, typed garbage."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import numpy as np

from formation.errors import InstrumentProtocolError
from formation.instruments.scpi import ScpiSession


class ScpiInstrument:
    """Base of the drivers: owns one :class:`ScpiSession` (opened on enter, closed on exit)."""

    def __init__(self, session: ScpiSession) -> None:
        self.session = session

    async def __aenter__(self) -> Self:
        await self.session.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.session.close()

    async def identify(self) -> str:
        """``*IDN?`` -> ``maker,model,serial,version``."""
        reply = await self.session.query("*IDN?")
        if reply.count(",") < 3:
            raise self._garbage(f"identity reply {reply!r}", "*IDN?")
        return reply

    def _floats(self, reply: str, count: int, cmd: str) -> np.ndarray:
        """Parse ``count`` comma-separated finite numbers, or raise InstrumentProtocolError naming ``cmd``."""
        try:
            values = np.array(reply.split(","), dtype=np.float64)
        except ValueError as exc:
            raise self._garbage(f"reply is not numeric: {reply[:80]!r}", cmd) from exc
        if values.size != count:
            raise self._garbage(f"{values.size} values for {count} channels", cmd)
        if not np.all(np.isfinite(values)):
            raise self._garbage("non-finite value (NaN or inf)", cmd)
        return values

    def _garbage(self, message: str, cmd: str) -> InstrumentProtocolError:
        """A reply that does not parse, with the instrument's context (the one way drivers report it)."""
        return InstrumentProtocolError(message, resource=self.session.resource, command=cmd, cabinet=self.session.name)
