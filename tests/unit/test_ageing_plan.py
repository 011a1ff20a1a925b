"""Ageing plans (formation/ageing/plan.py): stages, checkpoints, the K window, and every refusal in one line."""

from __future__ import annotations

from typing import Any

import pytest

from formation.ageing import builtin_plans, check_setpoints, loads_plan, parse_plan, resolve_plan
from formation.errors import PlanError

DAY_S = 86400.0


def plan(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "p",
        "version": "1",
        "k_value": {"stage": "room", "after": "1d", "ocv_temp_coeff_mv_per_k": -0.1},
        "ageing": [
            {"id": "hot", "setpoint_c": 45.0, "duration": "3d", "checkpoints": ["0h", "3d"]},
            {"id": "room", "setpoint_c": 25.0, "duration": "7d", "checkpoints": ["1d", "2d", "4d", "7d"]},
        ],
    }
    data.update(changes)
    return data


def test_the_builtin_plan_is_3_days_hot_then_7_at_room_temperature() -> None:
    assert "ncm21700-hot-then-room" in builtin_plans()
    p = resolve_plan("ncm21700-hot-then-room")
    assert [(s.setpoint_c, s.duration_s / DAY_S) for s in p.stages] == [(45.0, 3.0), (25.0, 7.0)]
    assert p.duration_s == 10 * DAY_S
    assert [c.at_s / DAY_S for c in p.checkpoints()][:5] == [0.0, 1.0, 2.0, 3.0, 3.5]
    assert all(c.stage == 1 and c.at_s >= 4 * DAY_S for c in p.k_checkpoints())


def test_checkpoints_count_across_stages_and_the_stage_in_force_follows_the_clock() -> None:
    p = parse_plan(plan())
    assert [(c.k, c.stage, c.at_s / DAY_S) for c in p.checkpoints()] == [
        (0, 0, 0.0),
        (1, 0, 3.0),
        (2, 1, 4.0),
        (3, 1, 5.0),
        (4, 1, 7.0),
        (5, 1, 10.0),
    ]
    assert [c.k for c in p.k_checkpoints()] == [2, 3, 4, 5]
    assert [p.stage_at(d * DAY_S) for d in (0, 2.9, 3.0, 9.9, 12)] == [0, 0, 1, 1, 1]


def test_the_hash_ignores_spelling_and_the_canonical_form_reads_back() -> None:
    a = parse_plan(plan())
    b = parse_plan(plan(k_value={"stage": "room", "after": "24h", "ocv_temp_coeff_mv_per_k": -0.1}))
    assert a.sha256 == b.sha256
    assert parse_plan(a.to_canonical()) == a
    assert parse_plan(plan(version=2)).version == "2"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"ageing": []}, "ageing", "at least one [[ageing]] stage"),
        ({"extra": 1}, "extra", "unknown key"),
        ({"name": ""}, "name", "non-empty string"),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "5m", "checkpoints": ["0h"]}]},
            "ageing[0].duration",
            "outside 600",
        ),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "100d"}]},
            "ageing[0].duration",
            "longer than 90 days",
        ),
        (
            {"ageing": [{"id": "a", "setpoint_c": 250.0, "duration": "1d"}]},
            "ageing[0].setpoint_c",
            "outside -40–100 °C",
        ),
        ({"ageing": [{"id": "a", "setpoint_c": float("nan"), "duration": "1d"}]}, "ageing[0].setpoint_c", "finite"),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "1d", "checkpoints": ["2d"]}]},
            "ageing[0].checkpoints[0]",
            "outside the stage",
        ),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "1d", "checkpoints": ["2h", "1h"]}]},
            "ageing[0].checkpoints[1]",
            "not after",
        ),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "1d", "checkpoints": ["-1h"]}]},
            "ageing[0].checkpoints[0]",
            "",
        ),
        ({"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "1d"}]}, "ageing", "no checkpoint"),
        (
            {"ageing": [{"id": "a", "setpoint_c": 25.0, "duration": "1d", "checkpoints": ["0h"], "ramp": 1}]},
            "ageing[0].ramp",
            "unknown key",
        ),
        ({"k_value": {"stage": "cold"}}, "k_value.stage", "no stage 'cold'"),
        ({"k_value": {"stage": "room", "after": "8d"}}, "k_value.after", "not within stage 'room'"),
        ({"k_value": {"stage": "room", "min_points": 2}}, "k_value.min_points", "outside 3–500"),
        ({"k_value": {"stage": "room", "min_points": 5}}, "k_value", "K needs 5"),
        ({"k_value": {"stage": "room", "ocv_temp_coeff_mv_per_k": 9.0}}, "k_value.ocv_temp_coeff_mv_per_k", "outside"),
    ],
)
def test_bad_plans_name_the_field_and_the_reason(changes: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(plan(**changes), "plan.toml")
    assert info.value.field == field
    assert reason in info.value.reason
    assert "\n" not in str(info.value)


def test_duplicate_stage_ids_and_a_whole_plan_beyond_90_days_are_refused() -> None:
    stage = {"id": "a", "setpoint_c": 25.0, "duration": "50d", "checkpoints": ["0h", "50d"]}
    with pytest.raises(PlanError, match=r"ageing\[1\].id: duplicate stage id 'a'"):
        parse_plan(plan(ageing=[stage, stage], k_value={"stage": "a"}))
    with pytest.raises(PlanError, match=r"above 7\.776e"):
        parse_plan(plan(ageing=[stage, {**stage, "id": "b"}], k_value={"stage": "b", "min_points": 3, "after": "0h"}))


def test_toml_text_and_bad_toml() -> None:
    text = (
        """name = "t"\n[[ageing]]\nid = "a"\nsetpoint_c = 25.0\nduration = "2d"\ncheckpoints = ["0h", "1d", "2d"]\n"""
    )
    assert loads_plan(text).k_window.stage == "a"
    with pytest.raises(PlanError, match="not valid TOML"):
        loads_plan("name = ", "x.toml")


def test_set_points_are_checked_against_the_rack_chamber() -> None:
    p = parse_plan(plan())
    check_setpoints(p, "ch1", 10.0, 60.0)
    with pytest.raises(PlanError, match=r"ageing\[0\].setpoint_c: 45 °C is outside 10–40 °C of chamber ch1"):
        check_setpoints(p, "ch1", 10.0, 40.0)
    with pytest.raises(PlanError, match="needs a chamber"):
        check_setpoints(p, None, None, None)
