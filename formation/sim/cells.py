"""Vectorised equivalent-circuit cell population (pure: numpy only, no I/O, no clock).

One numpy array per quantity across all cells. Sign convention: current > 0 charges the cell.

Per cell: OCV(SOC, T) from the chemistry's table (plus a hysteresis branch for LFP), a series resistance R0 and
three RC pairs (a fast one for the seconds-scale DCIR, a slow one so relaxation curves keep creeping for minutes,
a long one so the OCV still moves hours into a rest), all resistances scaled by a steep low-SOC factor and an
Arrhenius temperature factor; a first-charge SEI budget consumed as a charge efficiency < 1, mostly in the first
10–20 % of SOC, larger for a faster or hotter first charge; self-discharge = a temperature-dependent leak plus a
decaying SEI-growth current (:mod:`formation.sim.selfdischarge`); and a lumped thermal node (Joule + entropic
heat) cooling to the ambient.

Within one :meth:`CellPopulation.step` the circuit parameters are frozen at their start-of-step values and the
RC states and the thermal node are integrated exactly (exponentials); only the OCV is read at the end-of-step
SOC. :meth:`CellPopulation.current_for_voltage_a` inverts that same map, so a CV hold lands on its target.
At open circuit every state is integrated exactly (RC and thermal exponentials, SOC linear in the leak), so a
long rest may take long steps without changing its relaxation curve or its self-discharge drift.

``capacity_ah`` is the true 0–100 % capacity of the OCV curve. A standard discharge reaches its cut-off a
few % above 0 % SOC (R rises steeply there), so the presets' ``capacity_factor`` (≈ 1.03) is tuned so that the
standard capacity check (CC-CV to the upper limit, taper C/20, C/5 discharge) delivers the nominal capacity.
The same few % make the measured first-cycle efficiency ≈ 0.97 × (1 − SEI fraction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from formation.sim.ocv import OcvCurve, ocv_curve
from formation.sim.presets import (
    DEFECT_KINDS,
    MICROSHORT,
    PRESET_CAPACITY_TOLERANCE,
    PRESETS,
    CellPreset,
    chemistry_family,
    matching_presets,
)
from formation.sim.selfdischarge import SeiGrowth, formation_loss_factor, hysteresis_step

__all__ = [
    "DEFECT_KINDS",
    "MICROSHORT",
    "PRESETS",
    "PRESET_CAPACITY_TOLERANCE",
    "CellPopulation",
    "CellPreset",
    "chemistry_family",
    "matching_presets",
]

_KELVIN = 273.15
_T_REF_K = 298.15
_S_PER_H = 3600.0
_NEWTON_CORRECTIONS = 2
_H_PER_DAY = 24.0


def _clipped_normal(rng: np.random.Generator, n: int, sigma: float, clip_sigma: float) -> np.ndarray:
    """Multiplicative spread 1 + N(0, sigma), clipped at ±clip_sigma·sigma."""
    return 1.0 + sigma * np.clip(rng.standard_normal(n), -clip_sigma, clip_sigma)


#: exp(-dt/τ) of the three RC pairs and of the thermal node.
_Decays = tuple[np.ndarray, np.ndarray, np.ndarray, float | np.ndarray]


class CellPopulation:
    """State of ``n`` cells of one preset; deterministic under ``seed``."""

    def __init__(
        self,
        preset: CellPreset,
        n: int,
        *,
        seed: int = 0,
        formed: bool = False,
        initial_soc: float | np.ndarray = 0.0,
        ambient_c: float = 25.0,
        defect_fraction: float = 0.03,
        microshort_fraction: float = 0.0,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        for name, value in (("defect_fraction", defect_fraction), ("microshort_fraction", microshort_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.preset = preset
        self.n = n
        self.nominal_capacity_ah = preset.nominal_capacity_ah
        self.ocv_curve: OcvCurve = ocv_curve(preset.chemistry, preset.ocv_soc_offset)
        # R(soc) = c_r · (1 + a_r · exp(-soc / b)): computed directly, cheaper than a table lookup.
        e_5 = math.exp(-0.05 / preset.r_low_soc_scale)
        e_50 = math.exp(-0.5 / preset.r_low_soc_scale)
        self._a_r = (preset.r_low_soc_ratio - 1.0) / (e_5 - preset.r_low_soc_ratio * e_50)
        self._c_r = 1.0 / (1.0 + self._a_r * e_50)

        # Draw order is fixed: changing it changes every seeded population.
        rng = np.random.default_rng(seed)
        clip = preset.spread_clip_sigma
        capacity_ah = (
            preset.nominal_capacity_ah * preset.capacity_factor * _clipped_normal(rng, n, preset.capacity_sigma, clip)
        )
        r_scale = _clipped_normal(rng, n, preset.resistance_sigma, clip)
        tau1_s = preset.tau1_s * _clipped_normal(rng, n, preset.tau_sigma, clip)
        tau2_s = preset.tau2_s * _clipped_normal(rng, n, preset.tau_sigma, clip)
        leak_a = preset.leak_median_a * np.exp(preset.leak_sigma_log * rng.standard_normal(n))
        sei_fraction = rng.uniform(preset.sei_fraction_min, preset.sei_fraction_max, n)

        defect = np.full(n, "", dtype=object)
        n_defective = round(defect_fraction * n)
        defective = rng.choice(n, size=n_defective, replace=False) if n_defective else np.array([], int)
        kinds = rng.integers(0, len(DEFECT_KINDS), size=n_defective)
        severity = rng.uniform(0.0, 1.0, size=n_defective)
        for cell, kind, u in zip(defective.tolist(), kinds.tolist(), severity.tolist(), strict=True):
            name = DEFECT_KINDS[kind]
            defect[cell] = name
            if name == "leak":
                lo, hi = math.log(preset.defect_leak_min_a), math.log(preset.defect_leak_max_a)
                leak_a[cell] += math.exp(lo + u * (hi - lo))
            elif name == "resistance":
                extra = preset.defect_resistance_min + u * (preset.defect_resistance_max - preset.defect_resistance_min)
                r_scale[cell] *= 1.0 + extra
            else:
                missing = preset.defect_capacity_min + u * (preset.defect_capacity_max - preset.defect_capacity_min)
                capacity_ah[cell] *= 1.0 - missing

        # Drawn after everything above (appended to the draw order, so older populations keep their cells).
        tau3_s = preset.tau3_s * _clipped_normal(rng, n, preset.tau_sigma, clip)
        sei_growth_a = preset.sei_growth_a * np.exp(
            preset.sei_growth_sigma_log * np.clip(rng.standard_normal(n), -clip, clip)
        )
        candidates = np.flatnonzero(defect == "")
        n_shorts = min(round(microshort_fraction * n), candidates.size)
        shorted = rng.choice(candidates, size=n_shorts, replace=False) if n_shorts else np.array([], int)
        lo, hi = math.log(preset.microshort_min_a), math.log(preset.microshort_max_a)
        leak_a[shorted] += np.exp(lo + rng.uniform(0.0, 1.0, size=n_shorts) * (hi - lo))
        defect[shorted] = MICROSHORT

        self.capacity_ah: np.ndarray = capacity_ah
        self.defect: np.ndarray = defect
        self.is_defective: np.ndarray = defect != ""
        self._inv_capacity = 1.0 / capacity_ah
        self._r0_ohm = preset.r0_ohm * r_scale
        self._r1_ohm = preset.r1_ohm * r_scale
        self._r2_ohm = preset.r2_ohm * r_scale
        self._r3_ohm = preset.r3_ohm * r_scale
        self.tau1_s: np.ndarray = tau1_s
        self.tau2_s: np.ndarray = tau2_s
        self.tau3_s: np.ndarray = tau3_s
        self._leak25_a = leak_a
        self.sei_growth = SeiGrowth(
            sei_growth_a, preset.sei_growth_tau_s, preset.sei_activation_k, age_s=preset.formed_age_s if formed else 0.0
        )
        #: Hysteresis branch state (−1 discharge … +1 charge branch); cells start as last discharged.
        self.hysteresis: np.ndarray = np.full(n, -1.0)
        self._hyst_scale_ah = preset.hysteresis_soc_scale * capacity_ah
        # Budget B so that B / (first-charge Ah) = f for a charge from empty: B = f / (1 - f) · capacity.
        self.sei_budget_ah: np.ndarray = sei_fraction / (1.0 - sei_fraction) * capacity_ah
        self.sei_remaining_ah: np.ndarray = np.zeros(n) if formed else self.sei_budget_ah.copy()
        self._sei_active = bool(self.sei_remaining_ah.max() > 0.0)
        self._inv_sei_scale_ah = 1.0 / (preset.sei_soc_scale * capacity_ah)

        self.soc: np.ndarray = np.broadcast_to(np.asarray(initial_soc, dtype=float), (n,)).copy()
        self.temperature_c: np.ndarray = np.full(n, float(ambient_c))
        self.v1_v: np.ndarray = np.zeros(n)
        self.v2_v: np.ndarray = np.zeros(n)
        self.v3_v: np.ndarray = np.zeros(n)
        #: Heat generated by each cell during the last step (W); the simulated chamber adds it to its node.
        self.heat_w: np.ndarray = np.zeros(n)
        self._h_w_per_k = preset.heat_capacity_j_per_k / preset.thermal_tau_s
        self._decay_dt_s: float | None = None
        self._decays: _Decays = self._decay(0.0)

    # --- parameters at the present state -------------------------------------------------------------------

    def _decay(self, dt_s: float | np.ndarray) -> _Decays:
        """e = exp(-dt/τ) of each RC pair (e1, e2, e3) and of the thermal node, cached per dt."""
        if isinstance(dt_s, np.ndarray):  # a per-cell dt (probes inside a substep): not worth caching
            return (
                np.exp(-dt_s / self.tau1_s),
                np.exp(-dt_s / self.tau2_s),
                np.exp(-dt_s / self.tau3_s),
                np.exp(-dt_s / self.preset.thermal_tau_s),
            )
        if dt_s != self._decay_dt_s:
            self._decays = (
                np.exp(-dt_s / self.tau1_s),
                np.exp(-dt_s / self.tau2_s),
                np.exp(-dt_s / self.tau3_s),
                math.exp(-dt_s / self.preset.thermal_tau_s),
            )
            self._decay_dt_s = dt_s
        return self._decays

    def _arrhenius_u(self) -> np.ndarray:
        """1/T - 1/T_ref (1/K) of every cell."""
        return 1.0 / (self.temperature_c + _KELVIN) - 1.0 / _T_REF_K

    def _r_scale(self, u: np.ndarray) -> np.ndarray:
        """Resistance multiplier at the present SOC and temperature."""
        # Below -5 % SOC the rise stops growing: abuse must not overflow the exponential.
        low_soc = np.exp(np.maximum(self.soc, -0.05) * (-1.0 / self.preset.r_low_soc_scale))
        return (self._c_r + (self._c_r * self._a_r) * low_soc) * np.exp(self.preset.r_activation_k * u)

    def _leak_a(self, u: np.ndarray) -> np.ndarray:
        """Leak current (A, positive drains) at the present temperature (faster when warm)."""
        return self._leak25_a * np.exp(-self.preset.leak_activation_k * u)

    def _self_discharge_a(self, u: np.ndarray) -> np.ndarray:
        """Every self-discharge current now (A, positive drains): the leak plus the SEI growth."""
        return self._leak_a(u) + self.sei_growth.current_a(self.temperature_c)

    def _ocv_shift_v(self) -> np.ndarray:
        """Temperature shift of the OCV relative to the 25 °C table, plus the hysteresis branch."""
        shift_v = self.preset.ocv_temp_coeff_v_per_k * (self.temperature_c - 25.0)
        if self.preset.hysteresis_v:
            shift_v = shift_v + self.preset.hysteresis_v * self.hysteresis
        return shift_v

    # --- public model --------------------------------------------------------------------------------------

    def ocv_v(self) -> np.ndarray:
        """Open-circuit voltage of every cell now."""
        return self.ocv_curve(self.soc) + self._ocv_shift_v()

    def terminal_voltage_v(self, current_a: np.ndarray | float) -> np.ndarray:
        """Terminal voltage of every cell if ``current_a`` flowed now (no state change)."""
        r0_ohm = self._r0_ohm * self._r_scale(self._arrhenius_u())
        return self.ocv_v() + np.asarray(current_a, dtype=float) * r0_ohm + self.v1_v + self.v2_v + self.v3_v

    def current_for_voltage_a(self, target_v: np.ndarray | float, dt_s: float) -> np.ndarray:
        """Current that brings each cell's terminal voltage to ``target_v`` at the end of a ``dt_s`` step."""
        u = self._arrhenius_u()
        scale = self._r_scale(u)
        e1, e2, e3, _ = self._decay(dt_s)
        r_eff_ohm = scale * (
            self._r0_ohm + self._r1_ohm * (1.0 - e1) + self._r2_ohm * (1.0 - e2) + self._r3_ohm * (1.0 - e3)
        )
        # Everything but the OCV and the hysteresis branch is affine in I: OCV(soc_end(I)) + r_eff·I + rest.
        rest_v = self._ocv_shift_v() + self.v1_v * e1 + self.v2_v * e2 + self.v3_v * e3 - target_v
        soc_per_ah = self._inv_capacity * (dt_s / _S_PER_H)
        soc0 = self.soc - self._self_discharge_a(u) * soc_per_ah
        hyst_v = self.preset.hysteresis_v
        if hyst_v:
            rest_v = rest_v - hyst_v * self.hysteresis  # re-added at the end-of-step branch in the corrections
        ocv = self.ocv_curve
        residual = ocv(soc0) + rest_v
        if hyst_v:
            residual = residual + hyst_v * self.hysteresis
        p = self.preset
        if self._sei_active:
            x = self.sei_remaining_ah * self._inv_sei_scale_ah
            share = x / (1.0 + x)  # of the charge, what the SEI takes (before the formation-condition factor)
            charge_gain = soc_per_ah * (1.0 - share)  # d soc / d I while charging
            gain = np.where(residual < 0.0, charge_gain, soc_per_ah)
        else:
            charge_gain = gain = soc_per_ah
        current_a = -residual / (ocv.slope_v(soc0) * gain + r_eff_ohm)
        # Newton on a piecewise-linear monotone residual: exact once the end SOC stays in one table segment,
        # which a step rarely leaves, so two corrections are plenty; the SEI's current-dependent loss and the
        # hysteresis branch are smooth and take one more.
        corrections = _NEWTON_CORRECTIONS + (1 if self._sei_active or hyst_v else 0)
        for _ in range(corrections):
            if self._sei_active:
                factor = formation_loss_factor(
                    current_a, p.nominal_capacity_ah, self.temperature_c, p.sei_loss_per_ln_c_rate, p.sei_loss_per_k
                )
                charge_gain = soc_per_ah * np.maximum(1.0 - factor * share, 0.0)
                gain = np.where(current_a > 0.0, charge_gain, soc_per_ah)
            soc_end = soc0 + gain * current_a
            residual = ocv(soc_end) + r_eff_ohm * current_a + rest_v
            slope = ocv.slope_v(soc_end) * gain + r_eff_ohm
            if hyst_v:
                # The branch moves with the charge of this very step (the one nonlinearity besides the OCV).
                charge_ah = current_a * (dt_s / _S_PER_H)
                h_end = hysteresis_step(self.hysteresis, charge_ah, self._hyst_scale_ah)
                residual = residual + hyst_v * h_end
                # d h_end / d I = (1 - h·sign(I)) · exp(-|q|/s) · (dt/3600) / s, never negative.
                decay = np.exp(-np.abs(charge_ah) / self._hyst_scale_ah)
                slope = (
                    slope
                    + hyst_v
                    * (1.0 - self.hysteresis * np.sign(current_a))
                    * decay
                    * (dt_s / _S_PER_H)
                    / self._hyst_scale_ah
                )
            current_a -= residual / slope
        return current_a

    def step(
        self, dt_s: float | np.ndarray, current_a: np.ndarray | float, ambient_c: float | np.ndarray
    ) -> np.ndarray:
        """Advance every cell by ``dt_s`` (one value, or one per cell) at ``current_a``; return the end voltage."""
        current_a = np.asarray(current_a, dtype=float)
        u = self._arrhenius_u()
        scale = self._r_scale(u)
        e1, e2, e3, e_th = self._decay(dt_s)
        t_k = self.temperature_c + _KELVIN

        charge_ah = current_a * (dt_s / _S_PER_H)
        if self._sei_active:
            x = self.sei_remaining_ah * self._inv_sei_scale_ah
            sei_ah = np.minimum(np.maximum(charge_ah, 0.0) * (x / (1.0 + x)), self.sei_remaining_ah)
            self.sei_remaining_ah -= sei_ah
            # The budget sets where the loss happens; the conditions of the charge scale how much is lost.
            p = self.preset
            factor = formation_loss_factor(
                current_a, p.nominal_capacity_ah, self.temperature_c, p.sei_loss_per_ln_c_rate, p.sei_loss_per_k
            )
            charge_ah = charge_ah - np.minimum(sei_ah * factor, np.maximum(charge_ah, 0.0))
            self._sei_active = bool(self.sei_remaining_ah.max() > 1e-12)
        self_discharge_ah = self._leak_a(u) * (dt_s / _S_PER_H) + self.sei_growth.advance(dt_s, self.temperature_c)
        self.soc += (charge_ah - self_discharge_ah) * self._inv_capacity
        if self.preset.hysteresis_v:
            self.hysteresis = hysteresis_step(self.hysteresis, charge_ah - self_discharge_ah, self._hyst_scale_ah)

        r0_ohm = self._r0_ohm * scale
        # State arrays are updated in place so that views held by the cycler stay live.
        self.v1_v *= e1
        self.v1_v += (self._r1_ohm * scale) * current_a * (1.0 - e1)
        self.v2_v *= e2
        self.v2_v += (self._r2_ohm * scale) * current_a * (1.0 - e2)
        self.v3_v *= e3
        self.v3_v += (self._r3_ohm * scale) * current_a * (1.0 - e3)
        overpotential_v = current_a * r0_ohm + self.v1_v + self.v2_v + self.v3_v
        voltage_v = self.ocv_curve(self.soc) + self._ocv_shift_v() + overpotential_v

        # Joule heat is I times the overpotential (>= 0 both ways); reversible heat is I·T·dU/dT.
        heat_w = current_a * (overpotential_v + t_k * self.preset.ocv_temp_coeff_v_per_k)
        steady_c = ambient_c + heat_w * (1.0 / self._h_w_per_k)
        self.temperature_c -= steady_c
        self.temperature_c *= e_th
        self.temperature_c += steady_c
        self.heat_w = heat_w
        return voltage_v

    def clone(self, index: int | Sequence[int] | np.ndarray) -> CellPopulation:
        """An independent copy of the cells at ``index`` (parameters and state): a sandbox for what-if runs."""
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        twin = object.__new__(CellPopulation)
        for name, value in vars(self).items():
            # Every per-cell quantity is an (n,) array; everything else (preset, curve, constants) is shared.
            if isinstance(value, np.ndarray) and value.shape == (self.n,):
                value = value[idx]  # fancy indexing copies
            elif isinstance(value, SeiGrowth):
                value = value.take(idx)
            setattr(twin, name, value)
        twin.n = int(idx.size)
        twin._sei_active = bool(twin.n and twin.sei_remaining_ah.max() > 0.0)
        twin._decay_dt_s = None
        twin._decays = twin._decay(0.0)
        return twin

    @staticmethod
    def join(parts: Sequence[CellPopulation]) -> CellPopulation:
        """One population of every cell of ``parts`` (same preset), in order: cells moved onto one rack."""
        if not parts:
            raise ValueError("join needs at least one population")
        first = parts[0]
        if any(p.preset != first.preset for p in parts):
            raise ValueError("cannot join populations of different presets")
        joined = object.__new__(CellPopulation)
        for name, value in vars(first).items():
            if isinstance(value, np.ndarray) and value.shape == (first.n,):
                value = np.concatenate([getattr(p, name) for p in parts])
            elif isinstance(value, SeiGrowth):
                value = SeiGrowth.join([p.sei_growth for p in parts])
            setattr(joined, name, value)
        joined.n = sum(p.n for p in parts)
        joined._sei_active = any(p._sei_active for p in parts)
        joined._decay_dt_s = None
        joined._decays = joined._decay(0.0)
        return joined

    def pulse_voltage_v(
        self,
        index: int | Sequence[int] | np.ndarray,
        current_a: float,
        times_s: Sequence[float] | np.ndarray,
        ambient_c: float,
        *,
        max_dt_s: float = 0.1,
    ) -> np.ndarray:
        """Terminal voltage (shape ``(len(times_s), cells)``) at ``times_s`` into a constant-current pulse.

        Evaluated on a :meth:`clone` from the present state in substeps of at most ``max_dt_s``; no state changes.
        """
        times = np.asarray(times_s, dtype=float)
        if times.ndim != 1 or times.size == 0 or not np.all(times > 0.0):
            raise ValueError(f"pulse times must be a non-empty list of positive seconds, got {times_s!r}")
        if max_dt_s <= 0.0:
            raise ValueError(f"max_dt_s must be > 0, got {max_dt_s}")
        twin = self.clone(index)
        out = np.empty((times.size, twin.n))
        elapsed_s = 0.0
        voltage_v = twin.terminal_voltage_v(current_a)
        for j in np.argsort(times, kind="stable").tolist():
            span_s = float(times[j]) - elapsed_s
            if span_s > 0.0:
                # Equal substeps that land exactly on the sample time.
                k = max(1, math.ceil(span_s / max_dt_s - 1e-9))
                for _ in range(k):
                    voltage_v = twin.step(span_s / k, current_a, ambient_c)
                elapsed_s = float(times[j])
            out[j] = voltage_v
        return out

    def open_circuit_rate_v_per_s(self, ambient_c: float) -> np.ndarray:
        """Upper bound of |dV/dt| (V/s) of each cell at open circuit now (relaxation, leak, thermal OCV shift)."""
        u = self._arrhenius_u()
        leak_soc_per_s = self._self_discharge_a(u) * self._inv_capacity * (1.0 / _S_PER_H)
        return (
            np.abs(self.v1_v) / self.tau1_s
            + np.abs(self.v2_v) / self.tau2_s
            + np.abs(self.v3_v) / self.tau3_s
            + self.ocv_curve.slope_v(self.soc) * leak_soc_per_s
            + abs(self.preset.ocv_temp_coeff_v_per_k)
            * np.abs(self.temperature_c - ambient_c)
            / self.preset.thermal_tau_s
        )

    # --- ground truth --------------------------------------------------------------------------------------

    def add_leak_a(self, index: int | np.ndarray, extra_a: float) -> None:
        """Add a leak (an internal short, A at 25 °C) to the given cells — for fault injection."""
        self._leak25_a[index] += extra_a

    def truth_arrays(self) -> dict[str, np.ndarray]:
        """Ground truth of every cell at the present SOC and temperature (arrays; resistances in ohm)."""
        u = self._arrhenius_u()
        scale = self._r_scale(u)
        r0, r1, r2, r3 = (r * scale for r in (self._r0_ohm, self._r1_ohm, self._r2_ohm, self._r3_ohm))
        dcir_10s = (
            r0
            + r1 * (1.0 - np.exp(-10.0 / self.tau1_s))
            + r2 * (1.0 - np.exp(-10.0 / self.tau2_s))
            + r3 * (1.0 - np.exp(-10.0 / self.tau3_s))
        )
        leak_a = self._leak_a(u)
        sei_growth_a = self.sei_growth.current_a(self.temperature_c)
        self_discharge_a = leak_a + sei_growth_a
        # Self-discharge moves the SOC down: the slope of the segment below (it differs only at a table node).
        ocv_slope_v = self.ocv_curve.slope_v(np.nextafter(self.soc, -np.inf))
        k_mv_per_day = self_discharge_a * _H_PER_DAY * self._inv_capacity * ocv_slope_v * 1000.0
        return {
            "capacity_ah": self.capacity_ah.copy(),
            "soc": self.soc.copy(),
            "ocv_v": self.ocv_v(),
            "temperature_c": self.temperature_c.copy(),
            "r0_ohm": r0,
            "r1_ohm": r1,
            "tau1_s": self.tau1_s.copy(),
            "r2_ohm": r2,
            "tau2_s": self.tau2_s.copy(),
            "r3_ohm": r3,
            "tau3_s": self.tau3_s.copy(),
            "dcir_10s_ohm": dcir_10s,
            "acir_ohm": r0.copy(),
            "leak_a": leak_a,
            "sei_growth_a": sei_growth_a,
            "self_discharge_a": self_discharge_a,
            "hysteresis_v": self.preset.hysteresis_v * self.hysteresis,
            "ocv_slope_v": ocv_slope_v,
            "k_mv_per_day": k_mv_per_day,
            "sei_remaining_ah": self.sei_remaining_ah.copy(),
            "defect": self.defect.copy(),
        }

    def truth(self, index: int) -> dict[str, float | str]:
        """Ground truth of one cell for tests (capacity_ah, soc, r0_ohm, r1_ohm, tau1_s, leak_a, ...)."""
        if not -self.n <= index < self.n:
            raise IndexError(f"cell index {index} out of range for {self.n} cells")
        return {
            key: (str(values[index]) if key == "defect" else float(values[index]))
            for key, values in self.truth_arrays().items()
        }
