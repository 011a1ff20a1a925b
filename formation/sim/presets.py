"""Cell presets of the simulated plant: nominal parameters per cell type, and how a recipe finds its cells (pure).

Every figure is documented with its source in docs/domain.md (§2 formation, §4 DCIR, §5 ageing and
self-discharge, §5a the simulator's self-discharge model).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: Defect kinds a cell may be given (``""`` for a good cell). The first three are drawn together (``defect_fraction``);
#: ``"microshort"`` is its own class (``microshort_fraction``), drawn after them so that it never moves them.
DEFECT_KINDS = ("leak", "resistance", "capacity")
MICROSHORT = "microshort"


@dataclass(frozen=True)
class CellPreset:
    """Nominal parameters of one cell type (chemistry, capacity, resistances, thermal, self-discharge, limits)."""

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
    # Resistances at 50 % SOC and 25 °C: R0, a fast RC pair (DCIR seconds), a slow one (minutes) and a long one
    # (hours: the relaxation that still moves the OCV hours into a rest, a lumped stand-in for solid diffusion).
    r0_ohm: float = 0.0165
    r1_ohm: float = 0.006
    tau1_s: float = 8.0
    r2_ohm: float = 0.015
    tau2_s: float = 400.0
    r3_ohm: float = 0.002
    tau3_s: float = 10800.0
    #: R(5 % SOC) / R(50 % SOC), and the SOC decay length of the low-SOC rise.
    r_low_soc_ratio: float = 5.0
    r_low_soc_scale: float = 0.08
    #: Arrhenius activation (Ea/R, kelvin) of the resistances and of the self-discharge leak.
    r_activation_k: float = 3000.0
    leak_activation_k: float = 5000.0
    #: dOCV/dT (V/K): shifts the OCV with temperature and gives the reversible (entropic) heat.
    ocv_temp_coeff_v_per_k: float = -1.0e-4
    #: Half the gap between the charge and the discharge branch of the OCV (V; 0: no hysteresis), and the
    #: charge throughput (fraction of capacity) over which the cell moves 1 − 1/e of the way to the other branch.
    hysteresis_v: float = 0.0
    hysteresis_soc_scale: float = 0.05
    # Lumped thermal node.
    heat_capacity_j_per_k: float = 75.0
    thermal_tau_s: float = 780.0
    # Self-discharge: log-normal leak population at 25 °C.
    leak_median_a: float = 15e-6
    leak_sigma_log: float = 0.35
    # SEI growth after the first charge (parabolic: the consumed lithium q grows as √t, so the current falls as
    # 1/√(1 + t/τ)): the current of a fresh cell at 25 °C (log-normal median and sigma), the time constant τ at
    # 25 °C, and its activation (Ea/R, K; time at 45 °C counts ≈ 3.5× at 6000 K).
    sei_growth_a: float = 365e-6
    sei_growth_sigma_log: float = 0.2
    sei_growth_tau_s: float = 0.76 * 86400.0
    sei_activation_k: float = 6000.0
    #: SEI age of a population built ``formed=True`` (seconds at 25 °C since its first charge).
    formed_age_s: float = 3 * 86400.0
    # First charge: fraction of a full first charge's Ah consumed by SEI (uniform per cell; with the ~3 % a
    # C/5 discharge leaves behind this gives a measured first-cycle efficiency of 86–91 %), and the SOC decay
    # length of the consumption (exponential: ~96 % consumed by 20 % SOC).
    sei_fraction_min: float = 0.075
    sei_fraction_max: float = 0.115
    sei_soc_scale: float = 0.06
    #: Formation conditions move the first-charge loss: × (1 + k_I·ln(C-rate / C/10) + k_T·(T − 25 °C)), clipped
    #: to 0.7–1.5 (a faster or hotter first charge uses up more lithium; docs/domain.md §2).
    sei_loss_per_ln_c_rate: float = 0.08
    sei_loss_per_k: float = 0.01
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
    #: Micro-shorts (the ``microshort`` class): extra leak at 25 °C, log-uniform between these.
    microshort_min_a: float = 10e-6
    microshort_max_a: float = 50e-6


PRESETS: dict[str, CellPreset] = {
    # NMC811 21700 (LG M50 class): 10 s DCIR ≈ 21 mΩ at 50 % SOC, 25 °C; τ_th ≈ 13 min in still air.
    # SEI growth 365 µA fresh at 25 °C: K at 30 % SOC ≈ 1.5 / 1.0 / 0.7 mV/day after 1 / 3 / 7 days.
    "ncm21700-5ah": CellPreset(
        name="ncm21700-5ah",
        chemistry="NCM",
        nominal_capacity_ah=5.0,
        capacity_factor=1.03,
        # The high-leak class (50–1000 µA); the 10–50 µA micro-shorts are their own class.
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
        r3_ohm=0.03e-3,
        tau3_s=14400.0,
        r_low_soc_ratio=4.0,
        ocv_temp_coeff_v_per_k=-0.5e-4,
        # LFP's two-phase plateau: charge and discharge branches ≈ 20 mV apart.
        hysteresis_v=0.010,
        heat_capacity_j_per_k=5400.0,
        thermal_tau_s=5400.0,
        leak_median_a=0.5e-3,
        leak_sigma_log=0.3,
        sei_growth_a=4e-3,
        sei_fraction_min=0.07,
        sei_fraction_max=0.11,
        # A 10 µA micro-short is invisible beside a 0.5 mA baseline: scale the defect to the cell.
        defect_leak_min_a=0.2e-3,
        defect_leak_max_a=5e-3,
        microshort_min_a=0.2e-3,
        microshort_max_a=1e-3,
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
