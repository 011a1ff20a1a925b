"""Payload models: version, UTC time stamps, unit-suffixed keys, readings without NaN, consistency checks."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from formation.feed.payloads import (
    MODELS,
    CabinetState,
    ChamberState,
    ChannelState,
    FeedEvent,
    LotGrading,
    OrchestratorStatus,
    example_payloads,
    parse_payload,
    state_counts,
)
from formation.feed.topics import TopicKind


def test_every_example_round_trips_through_json_and_its_kind_model() -> None:
    examples = example_payloads()
    assert set(examples) == set(TopicKind) == set(MODELS)
    for kind, payload in examples.items():
        raw = payload.to_json()
        data = json.loads(raw)
        assert data["v"] == 1
        assert data["ts"].endswith("Z")
        assert isinstance(parse_payload(kind, raw), MODELS[kind])
        assert parse_payload(kind, raw) == payload


def test_time_stamps_are_converted_to_utc_and_naive_ones_refused() -> None:
    cest = timezone(timedelta(hours=2))
    status = OrchestratorStatus(
        ts=datetime(2025, 6, 1, 12, 0, tzinfo=cest), state="online", version="1", started=datetime.now(UTC)
    )
    assert json.loads(status.to_json())["ts"] == "2025-06-01T10:00:00Z"
    with pytest.raises(ValidationError, match="time zone"):
        OrchestratorStatus(ts=datetime(2025, 6, 1), state="online", version="1", started=datetime.now(UTC))


def test_missing_readings_are_null_never_nan() -> None:
    ch = ChannelState(cabinet="c", channel=1, state="running", voltage_v=math.nan, temperature_c=math.inf)
    data = json.loads(ch.to_json())
    assert data["voltage_v"] is None and data["temperature_c"] is None
    assert "NaN" not in ch.to_json().decode()


def _cabinet(**changes: object) -> dict[str, object]:
    states = ["running", "done", "idle"]
    base: dict[str, object] = {
        "cabinet": "cab1",
        "channels": [1, 2, 3],
        "state": states,
        "step_index": [0, 3, None],
        "step_id": ["a", "b", None],
        "step_kind": ["charge", "rest", None],
        "cell_id": ["X1", "X2", None],
        "voltage_v": [3.4, math.nan, None],
        "current_a": [1.0, 0.0, None],
        "temperature_c": [25.0, 25.0, None],
        "counts": state_counts(states),
    }
    base.update(changes)
    return base


def test_cabinet_state_is_columnar_and_checks_its_columns() -> None:
    cab = CabinetState.model_validate(_cabinet())
    assert cab.counts == {"running": 1, "done": 1, "idle": 1}
    rows = cab.rows()
    assert rows[1] == {
        "channel": 2,
        "state": "done",
        "step_index": 3,
        "step_id": "b",
        "step_kind": "rest",
        "cell_id": "X2",
        "voltage_v": None,
        "current_a": 0.0,
        "temperature_c": 25.0,
    }
    with pytest.raises(ValidationError, match="voltage_v: 2 entries for 3 channels"):
        CabinetState.model_validate(_cabinet(voltage_v=[3.4, 3.3]))
    with pytest.raises(ValidationError, match="counts"):
        CabinetState.model_validate(_cabinet(counts={"running": 3}))
    with pytest.raises(ValidationError, match="listed twice"):
        CabinetState.model_validate(_cabinet(channels=[1, 1, 2]))
    with pytest.raises(ValidationError):
        CabinetState.model_validate(_cabinet(state=["running", "done", "exploded"]))


def test_unknown_fields_and_other_versions_are_refused() -> None:
    raw = json.loads(example_payloads()[TopicKind.CHAMBER].to_json())
    with pytest.raises(ValidationError):
        ChamberState.model_validate({**raw, "colour": "red"})
    with pytest.raises(ValidationError):
        ChamberState.model_validate({**raw, "v": 2})
    with pytest.raises(ValidationError):
        parse_payload(TopicKind.EVENTS, b"not json")


def test_event_kinds_and_severities_are_closed_sets() -> None:
    FeedEvent(event="run_end", code="done", message="run 3 done")
    with pytest.raises(ValidationError):
        FeedEvent(event="explosion", code="x", message="y")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FeedEvent(event="alarm", severity="panic", code="x", message="y")  # type: ignore[arg-type]


def test_lot_grading_computes_yields_and_refuses_inconsistent_counts() -> None:
    g = LotGrading.from_counts("L1", {"A": 3, "NG": 1})
    assert g.cells == 4 and g.yields_pct == {"A": 75.0, "NG": 25.0}
    assert LotGrading.from_counts("L0", {}).cells == 0
    with pytest.raises(ValidationError, match="add up"):
        LotGrading(lot="L1", cells=5, counts={"A": 3}, yields_pct={"A": 60.0})
    with pytest.raises(ValidationError, match="same grades"):
        LotGrading(lot="L1", cells=3, counts={"A": 3}, yields_pct={"B": 100.0})


def test_the_readme_shows_one_example_of_each_payload_as_the_models_make_it() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    for kind, payload in example_payloads().items():
        assert payload.to_json().decode() in readme, kind
