"""FeedSink: what the line needs from a feed — sync, non-blocking ``publish_*`` calls that never raise.

:class:`~formation.feed.publisher.FeedPublisher` is the implementation; the orchestrator depends only on this
protocol, and a line without a feed passes None (every hook is then a no-op).
"""

from __future__ import annotations

from typing import Protocol

from formation.feed.payloads import CabinetState, ChamberState, ChannelState, FeedEvent, LotGrading, RackState


class FeedSink(Protocol):
    """Takes the line's state and events; must return at once and never raise into the caller."""

    #: Seconds (wall) between two aggregated cabinet states.
    interval_s: float

    def publish_cabinet(self, payload: CabinetState) -> None:
        """A cabinet's aggregated state (retained)."""

    def publish_channel(self, payload: ChannelState) -> None:
        """One channel's state after a change of run state or step (retained)."""

    def publish_chamber(self, payload: ChamberState) -> None:
        """A chamber's state (retained)."""

    def publish_rack(self, payload: RackState) -> None:
        """An ageing rack's state (retained)."""

    def publish_grading(self, payload: LotGrading) -> None:
        """A lot's grading summary (retained)."""

    def publish_event(self, event: FeedEvent) -> None:
        """An alarm, step transition or run/job end (never dropped while the process lives)."""
