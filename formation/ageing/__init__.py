"""The ageing room's pure core: ageing plans (stages, checkpoints, the K window) and K by regression.

    plan = resolve_plan("ncm21700-hot-then-room")   # PlanError (exit 2) names the bad field
    fit = fit_k(t_s, ocv_v, temperature_c, reference_c=25.0, ocv_temp_coeff_mv_per_k=-0.1)

The I/O shell that runs a plan on a rack (tester, chamber, timers, store) is ``formation.orchestrator.ageing``.
"""

from formation.ageing.kvalue import KFit, fit_k
from formation.ageing.plan import (
    AgeingPlan,
    Checkpoint,
    KWindow,
    Stage,
    builtin_plans,
    check_setpoints,
    load_plan,
    loads_plan,
    parse_plan,
    resolve_plan,
)

__all__ = [
    "AgeingPlan",
    "Checkpoint",
    "KFit",
    "KWindow",
    "Stage",
    "builtin_plans",
    "check_setpoints",
    "fit_k",
    "load_plan",
    "loads_plan",
    "parse_plan",
    "resolve_plan",
]
