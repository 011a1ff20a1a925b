"""Self-discharge and OCV-history physics of the simulated cells (pure numpy, no I/O, no clock).

- **SEI growth** after the first charge: the lithium it consumes, q, follows the parabolic law of a
  diffusion-limited film, d(q + q₀)²/dt = 2·c·a(T), so the current c·a(T)/(q + q₀) falls as 1/√(1 + t/τ) at a
  fixed temperature and the time spent warm counts more (a(T) Arrhenius). Integrated exactly over a step at
  constant temperature. It adds to the cell's leak: a fresh good cell's K is mostly this term, and it falls
  over days.
- **Hysteresis** (LFP): the OCV sits on a charge or a discharge branch; a one-state model h ∈ [−1, 1] relaxes
  towards the sign of the charge flowing, exponentially in the charge throughput (exact per step).
- **Formation conditions**: a faster or hotter first charge consumes more lithium into the SEI.

docs/domain.md §5a gives the model, its numbers and their sources.
"""

from __future__ import annotations

import math

import numpy as np

KELVIN = 273.15
T_REF_K = 298.15
S_PER_H = 3600.0
#: The first-charge loss factor is clipped to this range whatever the conditions.
LOSS_FACTOR_RANGE = (0.7, 1.5)
#: C-rate of the reference first charge (C/10): the loss factor is 1 there at 25 °C.
REFERENCE_C_RATE = 0.1


def arrhenius(activation_k: float, temperature_c: np.ndarray | float) -> np.ndarray:
    """Rate multiplier relative to 25 °C: exp(−Ea/R · (1/T − 1/T_ref))."""
    u = 1.0 / (np.asarray(temperature_c, dtype=float) + KELVIN) - 1.0 / T_REF_K
    return np.exp(-activation_k * u)


class SeiGrowth:
    """Per-cell parabolic SEI growth: parameters (q₀, c) and state q (Ah consumed since the first charge).

    ``current0_a`` is each cell's growth current when fresh at 25 °C, ``tau_s`` the time (at 25 °C) over which it
    falls by √2. Then q₀ = 2·I₀·τ and c = I₀·q₀ (A·Ah), so that at 25 °C I(t) = I₀ / √(1 + t/τ).
    """

    def __init__(self, current0_a: np.ndarray, tau_s: float, activation_k: float, *, age_s: float = 0.0) -> None:
        if tau_s <= 0.0 or not math.isfinite(tau_s):
            raise ValueError(f"SEI growth tau_s must be finite and > 0, got {tau_s}")
        if age_s < 0.0:
            raise ValueError(f"SEI age must be >= 0, got {age_s}")
        current0 = np.asarray(current0_a, dtype=float)
        self.activation_k = activation_k
        self.q0_ah: np.ndarray = 2.0 * current0 * tau_s / S_PER_H
        self.c_a_ah: np.ndarray = current0 * self.q0_ah
        #: Lithium consumed by growth so far (Ah), per cell.
        self.q_ah: np.ndarray = np.zeros_like(current0)
        if age_s > 0.0:
            self.q_ah = np.sqrt(self.q0_ah**2 + 2.0 * self.c_a_ah * age_s / S_PER_H) - self.q0_ah

    def current_a(self, temperature_c: np.ndarray | float) -> np.ndarray:
        """Growth current now (A, drains the cell) at ``temperature_c``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.c_a_ah * arrhenius(self.activation_k, temperature_c) / (self.q_ah + self.q0_ah)
        return np.where(self.q0_ah > 0.0, out, 0.0)

    def advance(self, dt_s: float | np.ndarray, temperature_c: np.ndarray | float) -> np.ndarray:
        """Grow for ``dt_s`` at a constant ``temperature_c`` (exact); the Ah consumed per cell."""
        total = self.q_ah + self.q0_ah
        rate = self.c_a_ah * arrhenius(self.activation_k, temperature_c)
        grown = np.sqrt(total * total + 2.0 * rate * dt_s / S_PER_H)
        consumed = grown - total
        self.q_ah += consumed
        return consumed

    def take(self, index: np.ndarray) -> SeiGrowth:
        """An independent copy of the cells at ``index`` (fancy indexing copies)."""
        twin = object.__new__(SeiGrowth)
        twin.activation_k = self.activation_k
        twin.q0_ah, twin.c_a_ah, twin.q_ah = self.q0_ah[index], self.c_a_ah[index], self.q_ah[index]
        return twin

    @staticmethod
    def join(parts: list[SeiGrowth]) -> SeiGrowth:
        """The cells of every part, in order (one activation energy: the parts are of one preset)."""
        joined = object.__new__(SeiGrowth)
        joined.activation_k = parts[0].activation_k
        joined.q0_ah = np.concatenate([p.q0_ah for p in parts])
        joined.c_a_ah = np.concatenate([p.c_a_ah for p in parts])
        joined.q_ah = np.concatenate([p.q_ah for p in parts])
        return joined


def hysteresis_step(h: np.ndarray, net_ah: np.ndarray, scale_ah: np.ndarray) -> np.ndarray:
    """The branch state after ``net_ah`` of charge (+) or discharge (−) flowed: exponential in the throughput.

    h moves towards +1 (charge branch) or −1 (discharge branch) by 1 − exp(−|net| / scale); exact for a constant
    direction over the step.
    """
    target = np.sign(net_ah)
    moved = target + (h - target) * np.exp(-np.abs(net_ah) / scale_ah)
    return np.where(net_ah == 0.0, h, moved)


def formation_loss_factor(
    current_a: np.ndarray,
    nominal_capacity_ah: float,
    temperature_c: np.ndarray,
    per_ln_c_rate: float,
    per_k: float,
) -> np.ndarray:
    """Multiplier of the first-charge SEI loss for a charge at ``current_a`` and ``temperature_c``.

    1 at C/10 and 25 °C; 1 + k_I·ln(C-rate / 0.1) + k_T·(T − 25), clipped to :data:`LOSS_FACTOR_RANGE`.
    """
    c_rate = np.maximum(np.abs(current_a) / nominal_capacity_ah, 1e-6)
    factor = 1.0 + per_ln_c_rate * np.log(c_rate / REFERENCE_C_RATE) + per_k * (temperature_c - 25.0)
    return np.clip(factor, *LOSS_FACTOR_RANGE)
