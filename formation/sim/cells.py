"""Vectorised equivalent-circuit cell population (pure: numpy only, no I/O, no clock).

One numpy array per quantity across all cells. Sign convention: current > 0 charges the cell.

Per cell: OCV(SOC, T) from the chemistry's table, a series resistance R0 and two RC pairs (a fast one for the
seconds-scale DCIR, a slow one so relaxation curves keep creeping for minutes), all resistances scaled by a
steep low-SOC factor and an Arrhenius temperature factor; a first-charge SEI budget consumed as a charge
efficiency < 1, mostly in the first 10–20 % of SOC; a temperature-dependent self-discharge leak; and a lumped
thermal node (Joule + entropic heat) cooling to the ambient.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from formation.sim.ocv import OcvCurve, ocv_curve

_KELVIN = 273.15
_T_REF_K = 298.15
_S_PER_H = 3600.0
_NEWTON_CORRECTIONS = 2
_H_PER_DAY = 24.0

#: Defect kinds a cell may be given (``""`` for a good cell).
DEFECT_KINDS = ("leak", "resistance", "capacity")


@dataclass(frozen=True)
class CellPreset:
    """Nominal parameters of one cell type (chemistry, capacity, resistances, thermal, limits)."""

    name: str
    chemistry: str  # "LFP" | "NCM"
    nominal_capacity_ah: float
    #: True mean (0–100 % table) capacity over nominal; tuned so the standard check delivers nominal.
    capacity_factor: float = 1.0
    max_voltage_v: float = 4.2
    min_voltage_v: float = 2.5
    abs_min_voltage_v: float = 2.5
    #: The cell's 0 % SOC sits at this SOC of the chemistry's reference OCV table (see ``ocv.ocv_curve``).
    ocv_soc_offset: float = 0.0
    # Resistances at 50 % SOC and 25 °C.
    r0_ohm: float = 0.0165
    r1_ohm: float = 0.006
    tau1_s: float = 8.0
    r2_ohm: float = 0.015
    tau2_s: float = 400.0
    #: R(5 % SOC) / R(50 % SOC), and the SOC decay length of the low-SOC rise.
    r_low_soc_ratio: float = 5.0
    r_low_soc_scale: float = 0.08
    #: Arrhenius activation (Ea/R, kelvin) of the resistances and of the self-discharge leak.
    r_activation_k: float = 3000.0
    leak_activation_k: float = 5000.0
    #: dOCV/dT (V/K): shifts the OCV with temperature and gives the reversible (entropic) heat.
    ocv_temp_coeff_v_per_k: float = -1.0e-4
    # Lumped thermal node.
    heat_capacity_j_per_k: float = 75.0
    thermal_tau_s: float = 780.0
    # Self-discharge: log-normal leak population at 25 °C.
    leak_median_a: float = 15e-6
    leak_sigma_log: float = 0.35
    # First charge: fraction of a full first charge's Ah consumed by SEI (uniform per cell; with the ~3 % a
    # C/5 discharge leaves behind this gives a measured first-cycle efficiency of 86–91 %), and the SOC decay
    # length of the consumption (exponential: ~96 % consumed by 20 % SOC).
    sei_fraction_min: float = 0.075
    sei_fraction_max: float = 0.115
    sei_soc_scale: float = 0.06
    # Cell-to-cell spread (relative sigma; draws are clipped at ±spread_clip_sigma).
    capacity_sigma: float = 0.008
    resistance_sigma: float = 0.03
    tau_sigma: float = 0.05
    spread_clip_sigma: float = 2.5
    # Defects: extra leak (log-uniform), extra resistance, missing capacity (uniform fractions).
    defect_leak_min_a: float = 10e-6
    defect_leak_max_a: float = 1000e-6
    defect_resistance_min: float = 0.30
    defect_resistance_max: float = 0.80
    defect_capacity_min: float = 0.05
    defect_capacity_max: float = 0.10


PRESETS: dict[str, CellPreset] = {
    # NMC811 21700 (LG M50 class): 10 s DCIR ≈ 21 mΩ at 50 % SOC, 25 °C; τ_th ≈ 13 min in still air.
    "ncm21700-5ah": CellPreset(
        name="ncm21700-5ah",
        chemistry="NCM",
        nominal_capacity_ah=5.0,
        capacity_factor=1.03,
        # A micro-short of >= 50 µA adds >= ~0.3 mV/day at 30 % SOC: well clear of the ~0.1 mV/day lot, so
        # every high-leak defect is caught by its K-value.
        defect_leak_min_a=50e-6,
        defect_leak_max_a=1000e-6,
    ),
    # LFP prismatic 280 Ah (~5.4 kg): R0 ≈ 0.25 mΩ, τ_th ≈ 1.5 h; leak ~0.5 mA.
    "lfp-280ah": CellPreset(
        name="lfp-280ah",
        chemistry="LFP",
        nominal_capacity_ah=280.0,
        capacity_factor=1.033,
        max_voltage_v=3.65,
        min_voltage_v=2.5,
        abs_min_voltage_v=2.0,
        # The reference LFP table (a 2.3 Ah cell) has a long tail below 2.5 V; a 280 Ah cell delivers nearly
        # all of its capacity above 2.5 V, so its 0 % sits 14 % up the reference table (OCV 2.51 V).
        ocv_soc_offset=0.14,
        r0_ohm=0.25e-3,
        r1_ohm=0.10e-3,
        tau1_s=15.0,
        r2_ohm=0.20e-3,
        tau2_s=900.0,
        r_low_soc_ratio=4.0,
        ocv_temp_coeff_v_per_k=-0.5e-4,
        heat_capacity_j_per_k=5400.0,
        thermal_tau_s=5400.0,
        leak_median_a=0.5e-3,
        leak_sigma_log=0.3,
        sei_fraction_min=0.07,
        sei_fraction_max=0.11,
        # A 10 µA micro-short is invisible beside a 0.5 mA baseline: scale the defect to the cell.
        defect_leak_min_a=0.2e-3,
        defect_leak_max_a=5e-3,
    ),
}


#: A recipe matches a preset when the recipe's nominal capacity is within this fraction of the preset's.
PRESET_CAPACITY_TOLERANCE = 0.05

# Spellings of each chemistry family, after upper-casing and dropping everything but letters: a composition
# suffix ("NMC811", "NCM-622") still names the family, and NMC/NCM are two orders of the same letters.
_FAMILY_PREFIXES = {"NCM": ("NCM", "NMC"), "LFP": ("LFP", "LIFEPO")}


def chemistry_family(label: str | None) -> str | None:
    """The preset chemistry (``"NCM"``, ``"LFP"``) a recipe's chemistry label belongs to, or None if none.

    ``"NMC811"``, ``"ncm-622"`` and ``"NCM"`` are NCM; ``"LFP"`` and ``"LiFePO4"`` are LFP.
    """
    letters = re.sub(r"[^A-Z]", "", (label or "").upper())
    for family, prefixes in _FAMILY_PREFIXES.items():
        if letters.startswith(prefixes):
            return family
    return None


def matching_presets(
    chemistry: str | None, nominal_capacity_ah: float, *, tolerance: float = PRESET_CAPACITY_TOLERANCE
) -> list[CellPreset]:
    """Every preset of ``chemistry``'s family with ``nominal_capacity_ah`` within ``tolerance`` of the preset's
    nominal capacity, nearest first (then by name): the simulated cells a recipe was written for."""
    family = chemistry_family(chemistry)
    if family is None or nominal_capacity_ah <= 0:
        return []
    found = [
        p
        for p in PRESETS.values()
        if p.chemistry == family and abs(nominal_capacity_ah / p.nominal_capacity_ah - 1.0) <= tolerance + 1e-12
    ]
    return sorted(found, key=lambda p: (abs(math.log(p.nominal_capacity_ah / nominal_capacity_ah)), p.name))


def _clipped_normal(rng: np.random.Generator, n: int, sigma: float, clip_sigma: float) -> np.ndarray:
    """Multiplicative spread 1 + N(0, sigma), clipped at ±clip_sigma·sigma."""
    return 1.0 + sigma * np.clip(rng.standard_normal(n), -clip_sigma, clip_sigma)


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
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0.0 <= defect_fraction <= 1.0:
            raise ValueError(f"defect_fraction must be within [0, 1], got {defect_fraction}")
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

        self.capacity_ah: np.ndarray = capacity_ah
        self.defect: np.ndarray = defect
        self.is_defective: np.ndarray = defect != ""
        self._inv_capacity = 1.0 / capacity_ah
        self._r0_ohm = preset.r0_ohm * r_scale
        self._r1_ohm = preset.r1_ohm * r_scale
        self._r2_ohm = preset.r2_ohm * r_scale
        self.tau1_s: np.ndarray = tau1_s
        self.tau2_s: np.ndarray = tau2_s
        self._leak25_a = leak_a
        # Budget B so that B / (first-charge Ah) = f for a charge from empty: B = f / (1 - f) · capacity.
        self.sei_budget_ah: np.ndarray = sei_fraction / (1.0 - sei_fraction) * capacity_ah
        self.sei_remaining_ah: np.ndarray = np.zeros(n) if formed else self.sei_budget_ah.copy()
        self._sei_active = bool(self.sei_remaining_ah.max() > 0.0)
        self._inv_sei_scale_ah = 1.0 / (preset.sei_soc_scale * capacity_ah)

        self.soc: np.ndarray = np.broadcast_to(np.asarray(initial_soc, dtype=float), (n,)).copy()
        self.temperature_c: np.ndarray = np.full(n, float(ambient_c))
        self.v1_v: np.ndarray = np.zeros(n)
        self.v2_v: np.ndarray = np.zeros(n)
        #: Heat generated by each cell during the last step (W); the simulated chamber adds it to its node.
        self.heat_w: np.ndarray = np.zeros(n)
        self._h_w_per_k = preset.heat_capacity_j_per_k / preset.thermal_tau_s
        self._decay_dt_s: float | None = None
        self._decays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float | np.ndarray] = self._decay(0.0)

    # --- parameters at the present state -------------------------------------------------------------------

    def _decay(
        self, dt_s: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float | np.ndarray]:
        """e1, 1 - e1, e2, 1 - e2 (e = exp(-dt/τ) of each RC pair) and the thermal node's e, cached per dt."""
        if isinstance(dt_s, np.ndarray):  # a per-cell dt (probes inside a substep): not worth caching
            e1 = np.exp(-dt_s / self.tau1_s)
            e2 = np.exp(-dt_s / self.tau2_s)
            return e1, 1.0 - e1, e2, 1.0 - e2, np.exp(-dt_s / self.preset.thermal_tau_s)
        if dt_s != self._decay_dt_s:
            e1 = np.exp(-dt_s / self.tau1_s)
            e2 = np.exp(-dt_s / self.tau2_s)
            self._decays = (e1, 1.0 - e1, e2, 1.0 - e2, math.exp(-dt_s / self.preset.thermal_tau_s))
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
        """Self-discharge current (A, positive drains) at the present temperature (faster when warm)."""
        return self._leak25_a * np.exp(-self.preset.leak_activation_k * u)

    def _ocv_shift_v(self) -> np.ndarray:
        """Temperature shift of the OCV relative to the 25 °C table."""
        return self.preset.ocv_temp_coeff_v_per_k * (self.temperature_c - 25.0)

    # --- public model --------------------------------------------------------------------------------------

    def ocv_v(self) -> np.ndarray:
        """Open-circuit voltage of every cell now."""
        return self.ocv_curve(self.soc) + self._ocv_shift_v()

    def terminal_voltage_v(self, current_a: np.ndarray | float) -> np.ndarray:
        """Terminal voltage of every cell if ``current_a`` flowed now (no state change)."""
        r0_ohm = self._r0_ohm * self._r_scale(self._arrhenius_u())
        return self.ocv_v() + np.asarray(current_a, dtype=float) * r0_ohm + self.v1_v + self.v2_v

    def current_for_voltage_a(self, target_v: np.ndarray | float, dt_s: float) -> np.ndarray:
        """Current that brings each cell's terminal voltage to ``target_v`` at the end of a ``dt_s`` step."""
        u = self._arrhenius_u()
        scale = self._r_scale(u)
        e1, one_minus_e1, e2, one_minus_e2, _ = self._decay(dt_s)
        r_eff_ohm = scale * (self._r0_ohm + self._r1_ohm * one_minus_e1 + self._r2_ohm * one_minus_e2)
        # Everything but the OCV is affine in I, so the residual is OCV(soc_end(I)) + r_eff·I + rest.
        rest_v = self._ocv_shift_v() + self.v1_v * e1 + self.v2_v * e2 - target_v
        soc_per_ah = self._inv_capacity * (dt_s / _S_PER_H)
        soc0 = self.soc - self._leak_a(u) * soc_per_ah
        ocv = self.ocv_curve
        residual = ocv(soc0) + rest_v
        if self._sei_active:
            x = self.sei_remaining_ah * self._inv_sei_scale_ah
            charge_gain = soc_per_ah / (1.0 + x)  # d soc / d I while charging (SEI takes the rest)
            gain = np.where(residual < 0.0, charge_gain, soc_per_ah)
        else:
            charge_gain = gain = soc_per_ah
        current_a = -residual / (ocv.slope_v(soc0) * gain + r_eff_ohm)
        # Newton on a piecewise-linear monotone residual: exact once the end SOC stays in one table segment,
        # which a step rarely leaves, so two corrections are plenty.
        for _ in range(_NEWTON_CORRECTIONS):
            if self._sei_active:
                gain = np.where(current_a > 0.0, charge_gain, soc_per_ah)
            soc_end = soc0 + gain * current_a
            residual = ocv(soc_end) + r_eff_ohm * current_a + rest_v
            current_a -= residual / (ocv.slope_v(soc_end) * gain + r_eff_ohm)
        return current_a

    def step(
        self, dt_s: float | np.ndarray, current_a: np.ndarray | float, ambient_c: float | np.ndarray
    ) -> np.ndarray:
        """Advance every cell by ``dt_s`` (one value, or one per cell) at ``current_a``; return the end voltage."""
        current_a = np.asarray(current_a, dtype=float)
        u = self._arrhenius_u()
        scale = self._r_scale(u)
        e1, one_minus_e1, e2, one_minus_e2, e_th = self._decay(dt_s)
        t_k = self.temperature_c + _KELVIN

        charge_ah = current_a * (dt_s / _S_PER_H)
        if self._sei_active:
            x = self.sei_remaining_ah * self._inv_sei_scale_ah
            sei_ah = np.minimum(np.maximum(charge_ah, 0.0) * (x / (1.0 + x)), self.sei_remaining_ah)
            self.sei_remaining_ah -= sei_ah
            charge_ah = charge_ah - sei_ah
            self._sei_active = bool(self.sei_remaining_ah.max() > 1e-12)
        self.soc += (charge_ah - self._leak_a(u) * (dt_s / _S_PER_H)) * self._inv_capacity

        r0_ohm = self._r0_ohm * scale
        # State arrays are updated in place so that views held by the cycler stay live.
        self.v1_v *= e1
        self.v1_v += (self._r1_ohm * scale) * current_a * one_minus_e1
        self.v2_v *= e2
        self.v2_v += (self._r2_ohm * scale) * current_a * one_minus_e2
        overpotential_v = current_a * r0_ohm + self.v1_v + self.v2_v
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
            setattr(twin, name, value)
        twin.n = int(idx.size)
        twin._sei_active = bool(twin.n and twin.sei_remaining_ah.max() > 0.0)
        twin._decay_dt_s = None
        twin._decays = twin._decay(0.0)
        return twin

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
        leak_soc_per_s = self._leak_a(u) * self._inv_capacity * (1.0 / _S_PER_H)
        return (
            np.abs(self.v1_v) / self.tau1_s
            + np.abs(self.v2_v) / self.tau2_s
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
        r0, r1, r2 = self._r0_ohm * scale, self._r1_ohm * scale, self._r2_ohm * scale
        dcir_10s = r0 + r1 * (1.0 - np.exp(-10.0 / self.tau1_s)) + r2 * (1.0 - np.exp(-10.0 / self.tau2_s))
        leak_a = self._leak_a(u)
        # Self-discharge moves the SOC down: the slope of the segment below (it differs only at a table node).
        ocv_slope_v = self.ocv_curve.slope_v(np.nextafter(self.soc, -np.inf))
        k_mv_per_day = leak_a * _H_PER_DAY * self._inv_capacity * ocv_slope_v * 1000.0
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
            "dcir_10s_ohm": dcir_10s,
            "leak_a": leak_a,
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
