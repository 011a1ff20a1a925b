"""The feed's payloads (docs/architecture.md §10a): one typed model per topic kind, serialised as JSON.

Every payload carries ``"v": 1`` (the payload version), ``"kind"`` (its topic kind) and ``"ts"`` (ISO-8601,
UTC, ``Z``), and names its quantities with their units (``voltage_v``, ``current_a``, ``temperature_c``). A
quantity without a valid reading (NaN, infinite, an open thermocouple) is ``null``, never a made-up number.

A cabinet's state is columnar: one list per quantity, index ``i`` of every list describing ``channels[i]``. It
is built straight from the supervisor's arrays, is a third of the size of one object per channel, and a display
walks it just as easily. :func:`parse_payload` validates a received payload against the model of its kind.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from formation.feed.topics import TopicKind

#: The payload version; it changes together with the ``v1`` topic level.
PAYLOAD_VERSION: Literal[1] = 1

#: Channel states: the run states of :class:`formation.states.RunState`, plus ``idle`` for a channel without a run.
ChannelStateName = Literal["idle", "pending", "running", "paused", "aborting", "done", "faulted", "aborted"]
CHANNEL_STATES: tuple[str, ...] = ChannelStateName.__args__  # type: ignore[attr-defined]
#: Alarm severities, as the store keeps them.
Severity = Literal["info", "warning", "critical"]
EventKind = Literal["alarm", "step", "run_end", "job_end"]


def finite_or_none(value: Any) -> Any:
    """NaN and ±inf become None (no valid reading); anything else is left for the type check."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (UTC)")
    return value.astimezone(UTC)


#: A reading: a finite float, or None for "no valid reading".
Reading = Annotated[float | None, BeforeValidator(finite_or_none)]
UtcTime = Annotated[datetime, AfterValidator(_utc)]


def utc_now() -> datetime:
    """The wall time now, in UTC (feed timestamps are wall time: a display compares them with its own clock)."""
    return datetime.now(UTC)


class FeedPayload(BaseModel):
    """Fields every payload shares: version, kind and time stamp."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = PAYLOAD_VERSION
    ts: UtcTime = Field(default_factory=utc_now)

    def to_json(self) -> bytes:
        """The payload as compact UTF-8 JSON."""
        return self.model_dump_json().encode()


class OrchestratorStatus(FeedPayload):
    """Whether the orchestrator publishing this line is online; the offline form is the MQTT will."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    version: str
    started: UtcTime
    host: str | None = None
    pid: int | None = None
    interval_s: float | None = Field(default=None, gt=0)


class CabinetState(FeedPayload):
    """Every channel of one cabinet, columnar: index ``i`` of each list is ``channels[i]``."""

    kind: Literal["cabinet"] = "cabinet"
    cabinet: str
    channels: list[int]
    state: list[ChannelStateName]
    step_index: list[int | None]
    step_id: list[str | None]
    step_kind: list[str | None]
    cell_id: list[str | None]
    voltage_v: list[Reading]
    current_a: list[Reading]
    temperature_c: list[Reading]
    #: How many channels are in each state (states with no channel are left out).
    counts: dict[ChannelStateName, int]

    @model_validator(mode="after")
    def _columns_agree(self) -> CabinetState:
        n = len(self.channels)
        for name in _CABINET_COLUMNS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} entries for {n} channels")
        if len(set(self.channels)) != n:
            raise ValueError("channels: a channel is listed twice")
        if dict(Counter(self.state)) != self.counts:
            raise ValueError("counts: do not match the channel states")
        return self

    def rows(self) -> list[dict[str, Any]]:
        """One dict per channel (for tables and tests), keys as in :class:`ChannelState`."""
        cols = {name: getattr(self, name) for name in ("channels", *_CABINET_COLUMNS)}
        return [
            {("channel" if k == "channels" else k): v[i] for k, v in cols.items()} for i in range(len(self.channels))
        ]


_CABINET_COLUMNS = (
    "state",
    "step_index",
    "step_id",
    "step_kind",
    "cell_id",
    "voltage_v",
    "current_a",
    "temperature_c",
)


def state_counts(states: list[str]) -> dict[str, int]:
    """Channels per state, in :data:`CHANNEL_STATES` order, states without a channel left out."""
    found = Counter(states)
    return {s: found[s] for s in CHANNEL_STATES if found[s]}


class ChannelState(FeedPayload):
    """One channel of a cabinet: published when its run state or step changes."""

    kind: Literal["channel"] = "channel"
    cabinet: str
    channel: int = Field(ge=0)
    state: ChannelStateName
    step_index: int | None = Field(default=None, ge=0)
    step_id: str | None = None
    step_kind: str | None = None
    cycle: int | None = Field(default=None, ge=0)
    cell_id: str | None = None
    run_id: int | None = None
    job_id: int | None = None
    voltage_v: Reading = None
    current_a: Reading = None
    temperature_c: Reading = None


class ChamberState(FeedPayload):
    """One chamber: set point, each sensor's temperature, open valves, band and stability."""

    kind: Literal["chamber"] = "chamber"
    chamber: str
    setpoint_c: float
    #: The control temperature (the sensors' vote); None without a healthy reading.
    temperature_c: Reading = None
    #: Each thermocouple by its DAQ channel (JSON object keys are strings); None for an open or failed one.
    temperatures_c: dict[str, Reading]
    heating_open: list[int]
    cooling_open: list[int]
    band_c: float = Field(gt=0)
    in_band: bool
    stable: bool
    fail_safe: bool = False
    #: Signed valve demand, −1 (full cooling) … +1 (full heating).
    demand: Reading = None


class FeedEvent(FeedPayload):
    """Something that happened: an alarm, a step transition, a run's or a job's end (never retained)."""

    kind: Literal["event"] = "event"
    #: What happened: alarm | step | run_end | job_end.
    event: EventKind
    severity: Severity = "info"
    code: str
    message: str
    cabinet: str | None = None
    channel: int | None = Field(default=None, ge=0)
    chamber: str | None = None
    cell_id: str | None = None
    run_id: int | None = None
    job_id: int | None = None
    step_id: str | None = None
    #: The publisher's running number for its events, so a subscriber can tell a gap from a quiet line.
    seq: int | None = Field(default=None, ge=0)


class LotGrading(FeedPayload):
    """A lot's grade counts and yields, published when it is graded."""

    kind: Literal["grading"] = "grading"
    lot: str
    cells: int = Field(ge=0)
    counts: dict[str, int]
    #: Share of the lot's cells in each grade, percent.
    yields_pct: dict[str, float]
    rules_sha256: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LotGrading:
        if sum(self.counts.values()) != self.cells:
            raise ValueError(f"counts: add up to {sum(self.counts.values())}, not to cells = {self.cells}")
        if set(self.yields_pct) != set(self.counts):
            raise ValueError("yields_pct: must name the same grades as counts")
        if any(n < 0 for n in self.counts.values()) or any(not 0 <= y <= 100 for y in self.yields_pct.values()):
            raise ValueError("counts/yields_pct: negative count or yield outside 0–100 %")
        return self

    @classmethod
    def from_counts(cls, lot: str, counts: dict[str, int], **extra: Any) -> LotGrading:
        """The summary of ``counts`` (grade → cells), yields computed from them."""
        cells = sum(counts.values())
        yields = {g: (100.0 * n / cells if cells else 0.0) for g, n in counts.items()}
        return cls(lot=lot, cells=cells, counts=dict(counts), yields_pct=yields, **extra)


class RackState(FeedPayload):
    """One ageing rack: its plan, stage and progress (the ageing room, issue 8, fills this in)."""

    kind: Literal["rack"] = "rack"
    rack: str
    chamber: str | None = None
    plan: str | None = None
    stage: str | None = None
    cells: int = Field(ge=0)
    setpoint_c: Reading = None
    elapsed_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    next_checkpoint: UtcTime | None = None

    @property
    def progress_pct(self) -> float:
        """Share of the plan's duration behind it, percent (capped at 100)."""
        return min(100.0, 100.0 * self.elapsed_s / self.duration_s)


#: The payload model of each topic kind.
MODELS: dict[TopicKind, type[FeedPayload]] = {
    TopicKind.STATUS: OrchestratorStatus,
    TopicKind.CABINET: CabinetState,
    TopicKind.CHANNEL: ChannelState,
    TopicKind.CHAMBER: ChamberState,
    TopicKind.RACK: RackState,
    TopicKind.GRADING: LotGrading,
    TopicKind.EVENTS: FeedEvent,
}


def parse_payload(kind: TopicKind, data: bytes | str) -> FeedPayload:
    """Validate a received payload against its kind's model; pydantic's ValidationError when it does not fit."""
    return MODELS[kind].model_validate_json(data)


def example_payloads() -> dict[TopicKind, FeedPayload]:
    """One small, valid payload of each kind (the README shows these)."""
    ts = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
    started = datetime(2025, 3, 14, 6, 0, 0, tzinfo=UTC)
    states: list[ChannelStateName] = ["running", "running", "done", "idle"]
    return {
        TopicKind.STATUS: OrchestratorStatus(
            ts=ts, state="online", version="0.1.0", started=started, host="formation-01", pid=4242, interval_s=5.0
        ),
        TopicKind.CABINET: CabinetState(
            ts=ts,
            cabinet="cab1",
            channels=[1, 2, 3, 4],
            state=states,
            step_index=[1, 1, 5, None],
            step_id=["form", "form", "rest-2", None],
            step_kind=["charge", "charge", "rest", None],
            cell_id=["C0001", "C0002", "C0003", None],
            voltage_v=[3.412, 3.409, 3.331, None],
            current_a=[28.0, 28.0, 0.0, None],
            temperature_c=[26.1, 26.3, 25.2, None],
            counts=state_counts(list(states)),  # type: ignore[arg-type]
        ),
        TopicKind.CHANNEL: ChannelState(
            ts=ts,
            cabinet="cab1",
            channel=3,
            state="done",
            step_index=5,
            step_id="rest-2",
            step_kind="rest",
            cycle=0,
            cell_id="C0003",
            run_id=17,
            job_id=2,
            voltage_v=3.331,
            current_a=0.0,
            temperature_c=25.2,
        ),
        TopicKind.CHAMBER: ChamberState(
            ts=ts,
            chamber="ageing-1",
            setpoint_c=45.0,
            temperature_c=44.87,
            temperatures_c={"101": 44.9, "102": 44.8, "103": 44.92, "104": None},
            heating_open=[301],
            cooling_open=[],
            band_c=0.5,
            in_band=True,
            stable=True,
            demand=0.21,
        ),
        TopicKind.EVENTS: FeedEvent(
            ts=ts,
            event="alarm",
            severity="critical",
            code="over_temperature",
            message="cell C0002 at 61.2 °C is above limits.max_cell_temperature_c 60 °C",
            cabinet="cab1",
            channel=2,
            cell_id="C0002",
            run_id=16,
            job_id=2,
            seq=41,
        ),
        TopicKind.GRADING: LotGrading.from_counts(
            "L2025-03-A",
            {"A": 230, "B": 18, "C": 5, "NG": 3},
            ts=ts,
            rules_sha256=hashlib.sha256(b"example rules").hexdigest(),
        ),
        TopicKind.RACK: RackState(
            ts=ts,
            rack="R07",
            chamber="ageing-1",
            plan="lfp-hot-then-room",
            stage="45C",
            cells=256,
            setpoint_c=45.0,
            elapsed_s=86_400.0,
            duration_s=864_000.0,
            next_checkpoint=datetime(2025, 3, 15, 6, 0, 0, tzinfo=UTC),
        ),
    }
