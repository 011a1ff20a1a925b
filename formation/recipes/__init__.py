"""Recipes: the TOML/JSON (and PyBaMM text) recipe language, its validation, and the built-in library.

Pure: nothing here does I/O beyond reading the recipe file it is given.

    recipe = resolve_recipe("ncm21700-formation")      # or a path to a .toml / .json file
    recipe.sha256                                      # content hash recorded with every run
    for step in recipe.steps:
        match step:
            case ChargeStep(current=current, cv_voltage_v=cv_v, until=until): ...
            case DcirStep(rest_s=rest_s, current=current, sample_at_s=sample_at_s): ...
            case AgeStep(duration_s=duration_s, ocv_at_s=ocv_at_s): ...
            case ChamberStep(setpoint_c=setpoint_c, wait=wait): ...    # a host step: no instrument program
    chamber_setpoints(recipe)                          # every chamber temperature asked for, in step order
"""

from formation.recipes.flow import MAX_CYCLE_COUNT, FlowMark, LoopMark, TagMark
from formation.recipes.library import (
    RecipeFormat,
    builtin_recipes,
    load_builtin,
    load_recipe,
    loads_recipe,
    resolve_recipe,
)
from formation.recipes.model import (
    CHAMBER_MAX_C,
    CHAMBER_MIN_C,
    CHAMBER_WAIT_DEFAULT_S,
    AgeStep,
    ChamberStep,
    ChargeStep,
    DcirDirection,
    DcirMethod,
    DcirStep,
    DischargeStep,
    HoldStep,
    Limits,
    PrecheckStep,
    Recipe,
    RecordRule,
    RestStep,
    Step,
    Until,
    WaitStep,
    chamber_setpoints,
    describe_step,
)
from formation.recipes.parse import UNSUPPORTED_KINDS, parse_recipe
from formation.recipes.pybamm import parse_experiment_step
from formation.recipes.units import CurrentSpec, format_duration, parse_current, parse_duration_s

__all__ = [
    "CHAMBER_MAX_C",
    "CHAMBER_MIN_C",
    "CHAMBER_WAIT_DEFAULT_S",
    "MAX_CYCLE_COUNT",
    "UNSUPPORTED_KINDS",
    "AgeStep",
    "ChamberStep",
    "ChargeStep",
    "CurrentSpec",
    "DcirDirection",
    "DcirMethod",
    "DcirStep",
    "DischargeStep",
    "FlowMark",
    "HoldStep",
    "Limits",
    "LoopMark",
    "PrecheckStep",
    "Recipe",
    "RecipeFormat",
    "RecordRule",
    "RestStep",
    "Step",
    "TagMark",
    "Until",
    "WaitStep",
    "builtin_recipes",
    "chamber_setpoints",
    "describe_step",
    "format_duration",
    "load_builtin",
    "load_recipe",
    "loads_recipe",
    "parse_current",
    "parse_duration_s",
    "parse_experiment_step",
    "parse_recipe",
    "resolve_recipe",
]
