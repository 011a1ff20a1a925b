"""SIMC tuning of a first-order-plus-dead-time chamber (docs/domain.md, section 8).

K_c = τ / (K (τ_c + θ)), T_i = min(τ, 4 (τ_c + θ)), with τ_c = θ for tight control.
"""

from __future__ import annotations

from formation.chamber._checks import positive
from formation.chamber.pid import PidTuning


def simc_tuning(gain_c: float, tau_s: float, dead_time_s: float, tau_c_s: float | None = None) -> PidTuning:
    """PI gains for a chamber whose temperature moves ``gain_c`` °C per unit demand, with ``tau_s`` and ``dead_time_s``.

    ``tau_c_s`` is the desired closed-loop time constant (default: the dead time). For a sampled loop add half
    the control period to the dead time; time-proportioning adds roughly half a valve cycle on one valve's share.
    """
    gain = positive("gain_c", gain_c)
    tau = positive("tau_s", tau_s)
    theta = positive("dead_time_s", dead_time_s)
    tau_c = theta if tau_c_s is None else positive("tau_c_s", tau_c_s)
    kc = tau / (gain * (tau_c + theta))
    ti_s = min(tau, 4.0 * (tau_c + theta))
    return PidTuning(kc=kc, ti_s=ti_s)
