"""Simulated temperature chamber (pure: numpy only, no I/O, no clock).

Two lumped thermal nodes: the **air** (a small share of the heat capacity) and the **mass** (walls, racks,
fixtures), strongly coupled, so that together they behave as one first-order node with the chamber's time
constant while the air still reacts within seconds to a door opening. The air receives

- the heat of the hot loop and the (negative) heat of the chilled loop, each through N parallel on/off valves,
  delivered a transport **dead time** after the valves move;
- the heat of the cells inside (``cell_heat_w``, set by the plant from the cabinets placed in the chamber);
- a loss to the ambient, plus a large extra loss while the door is open.

With every heating valve open the steady air temperature is ``ambient + gain_c``; with every cooling valve open
``ambient - gain_c``. The parameters are the working figures of docs/domain.md §8 (first order plus dead time:
gain ≈ 40 °C at full valve, τ ≈ 20 min, dead time 30–120 s).

Thermocouples follow the air through a first-order lag; a reading adds Gaussian noise and is rounded to the
resolution; an open thermocouple reads the SCPI overload value :data:`OVERLOAD`.

Integration: :meth:`ChamberModel.advance_to` takes substeps of at most ``max_dt_s`` that land exactly on every
change of the delivered valve heat and on the end of a door opening; within a substep the inputs are constant and
the two nodes are integrated exactly (matrix exponential), the thermocouple lag exactly for an air temperature
linear over the substep. Deterministic under ``seed`` (offsets drawn at construction, noise per reading).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: What an open thermocouple reads (the SCPI overload value, +9.9E+37).
OVERLOAD = 9.9e37
#: Longest dead time accepted (s); the working range is 30–120 s.
MAX_DEAD_TIME_S = 600.0
#: Most valves of one loop plus the other, and most thermocouples (one 20-channel module each).
MAX_CHANNELS_PER_MODULE = 20
_EPS_S = 1e-9


@dataclass(frozen=True, slots=True)
class ChamberParams:
    """Physical parameters of one chamber (defaults: docs/domain.md §8 working figures)."""

    #: Parallel on/off valves of the hot loop and of the chilled loop.
    hot_valves: int = 4
    cold_valves: int = 4
    #: Steady rise (fall) of the chamber over the ambient with every hot (cold) valve open, °C.
    gain_c: float = 40.0
    #: Dominant time constant of the chamber (air + mass), s.
    tau_s: float = 1200.0
    #: Transport delay between a valve moving and its heat reaching the air, s.
    dead_time_s: float = 60.0
    #: Heat loss of the closed chamber to the ambient, W/K (sets the watt scale: a hot valve gives gain·loss/N).
    loss_w_per_k: float = 50.0
    #: Share of the heat capacity in the air node (the rest is the mass).
    air_fraction: float = 0.05
    #: Air-to-mass heat transfer, W/K (large: the air follows the mass within seconds).
    coupling_w_per_k: float = 1000.0
    #: Extra loss of the air to the ambient while the door is open, W/K.
    door_loss_w_per_k: float = 250.0
    #: Ambient temperature around the chamber, °C.
    ambient_c: float = 25.0
    #: Thermocouples: count, first-order lag (s), noise (°C, 1 σ), resolution (°C), fixed offset spread (°C, 1 σ).
    thermocouples: int = 4
    tc_tau_s: float = 20.0
    tc_noise_c: float = 0.02
    tc_resolution_c: float = 0.01
    tc_offset_sigma_c: float = 0.05
    #: Longest integration substep, s.
    max_dt_s: float = 5.0

    def __post_init__(self) -> None:
        checks = (
            ("hot_valves", self.hot_valves >= 1, "must be >= 1"),
            ("cold_valves", self.cold_valves >= 1, "must be >= 1"),
            (
                "hot_valves + cold_valves",
                self.hot_valves + self.cold_valves <= MAX_CHANNELS_PER_MODULE,
                f"must be <= {MAX_CHANNELS_PER_MODULE} (one actuator module)",
            ),
            ("thermocouples", 1 <= self.thermocouples <= MAX_CHANNELS_PER_MODULE, "must be within 1..20"),
            ("gain_c", 0.0 < self.gain_c <= 200.0, "must be within (0, 200]"),
            ("tau_s", 0.0 < self.tau_s <= 1e6, "must be within (0, 1e6]"),
            ("dead_time_s", 0.0 <= self.dead_time_s <= MAX_DEAD_TIME_S, f"must be within [0, {MAX_DEAD_TIME_S:g}]"),
            ("loss_w_per_k", self.loss_w_per_k > 0.0, "must be > 0"),
            ("air_fraction", 0.0 < self.air_fraction < 1.0, "must be within (0, 1)"),
            ("coupling_w_per_k", self.coupling_w_per_k > 0.0, "must be > 0"),
            ("door_loss_w_per_k", self.door_loss_w_per_k >= 0.0, "must be >= 0"),
            ("ambient_c", -60.0 <= self.ambient_c <= 80.0, "must be within [-60, 80]"),
            ("tc_tau_s", self.tc_tau_s > 0.0, "must be > 0"),
            ("tc_noise_c", self.tc_noise_c >= 0.0, "must be >= 0"),
            ("tc_resolution_c", self.tc_resolution_c >= 0.0, "must be >= 0"),
            ("tc_offset_sigma_c", self.tc_offset_sigma_c >= 0.0, "must be >= 0"),
            ("max_dt_s", 0.0 < self.max_dt_s <= 60.0, "must be within (0, 60]"),
        )
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"chamber {name} {why}")
        for name in ("gain_c", "tau_s", "dead_time_s", "loss_w_per_k", "ambient_c", "max_dt_s"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"chamber {name} must be finite")

    @property
    def valves(self) -> int:
        """Valves of both loops (hot first, then cold)."""
        return self.hot_valves + self.cold_valves


class _Nodes:
    """The air/mass pair: exact step matrices per (substep, door state), cached."""

    def __init__(self, params: ChamberParams) -> None:
        g_loss, g_c, f = params.loss_w_per_k, params.coupling_w_per_k, params.air_fraction
        # Slow eigenvalue times the total capacity does not depend on the capacity: solve it, then scale
        # the capacity so that the slow time constant is tau_s exactly (door closed).
        b = (g_loss + g_c) / f + g_c / (1.0 - f)
        c = g_loss * g_c / (f * (1.0 - f))
        mu_slow = (-b + math.sqrt(b * b - 4.0 * c)) / 2.0
        total_j_per_k = -mu_slow * params.tau_s
        self.c_air = f * total_j_per_k
        self.c_mass = (1.0 - f) * total_j_per_k
        self.g_loss = g_loss
        self.g_couple = g_c
        self.g_door = params.door_loss_w_per_k
        self._cache: dict[tuple[float, bool], np.ndarray] = {}

    def matrix(self, door_open: bool) -> np.ndarray:
        """The system matrix A of d[air, mass]/dt = A [air, mass] + inputs."""
        g_amb = self.g_loss + (self.g_door if door_open else 0.0)
        return np.array(
            [
                [-(g_amb + self.g_couple) / self.c_air, self.g_couple / self.c_air],
                [self.g_couple / self.c_mass, -self.g_couple / self.c_mass],
            ]
        )

    def step_matrix(self, dt_s: float, door_open: bool) -> np.ndarray:
        """exp(A·dt) (by eigen-decomposition: A is similar to a symmetric matrix, so its eigenvalues are real)."""
        key = (dt_s, door_open)
        phi = self._cache.get(key)
        if phi is None:
            values, vectors = np.linalg.eig(self.matrix(door_open))
            phi = np.real(vectors @ np.diag(np.exp(np.real(values) * dt_s)) @ np.linalg.inv(vectors))
            if len(self._cache) > 256:  # a few distinct substeps recur; bound the rest
                self._cache.clear()
            self._cache[key] = phi
        return phi

    def steady_c(self, air_w: float, mass_w: float, ambient_c: float, door_open: bool) -> tuple[float, float]:
        """Steady temperatures of the air and the mass for constant heat into each."""
        air = ambient_c + (air_w + mass_w) / (self.g_loss + (self.g_door if door_open else 0.0))
        return air, air + mass_w / self.g_couple


class ChamberModel:
    """One simulated chamber: air and mass nodes, valve arrays with dead time, thermocouples, faults."""

    def __init__(self, params: ChamberParams | None = None, *, start_time_s: float, seed: int = 0) -> None:
        self.params = params or ChamberParams()
        p = self.params
        self._nodes = _Nodes(p)
        self.time_s = float(start_time_s)
        #: Ambient now (a fault may step it; ``clear_faults`` restores ``params.ambient_c``).
        self.ambient_c = p.ambient_c
        self.air_c = p.ambient_c
        self.mass_c = p.ambient_c
        #: Heat of the cells inside, W (set by the plant before each advance).
        self.cell_heat_w = 0.0
        self._rng = np.random.default_rng(seed)
        # Draw order is fixed: offsets first, then the noise of each reading.
        self.tc_offset_c: np.ndarray = np.clip(
            p.tc_offset_sigma_c * self._rng.standard_normal(p.thermocouples),
            -3.0 * p.tc_offset_sigma_c,
            3.0 * p.tc_offset_sigma_c,
        )
        #: Thermocouple junction temperatures (the lagged air, without offset or noise), °C.
        self.tc_c: np.ndarray = np.full(p.thermocouples, p.ambient_c)
        self.tc_open: np.ndarray = np.zeros(p.thermocouples, dtype=bool)
        n = p.valves
        #: Valve index k < hot_valves is hot valve k; the rest are the cold valves.
        self.valve_commanded: np.ndarray = np.zeros(n, dtype=bool)
        self.valve_open: np.ndarray = np.zeros(n, dtype=bool)
        #: -1 free, 0 stuck closed, 1 stuck open.
        self.valve_stuck: np.ndarray = np.full(n, -1, dtype=np.int8)
        self.switch_counts: np.ndarray = np.zeros(n, dtype=np.int64)
        self.door_until_s = -math.inf
        self._q_hot_w = p.gain_c * p.loss_w_per_k / p.hot_valves
        self._q_cold_w = p.gain_c * p.loss_w_per_k / p.cold_valves
        # Valve heat reaching the air now, and the changes still travelling: (time they arrive, heat).
        self.delivered_valve_w = 0.0
        self._in_transit: deque[tuple[float, float]] = deque()
        self.substeps = 0

    # --- valves --------------------------------------------------------------------------------------------

    @property
    def hot(self) -> slice:
        """Indices of the hot-loop valves."""
        return slice(0, self.params.hot_valves)

    @property
    def cold(self) -> slice:
        """Indices of the chilled-loop valves."""
        return slice(self.params.hot_valves, self.params.valves)

    def valve_heat_w(self, open_mask: np.ndarray | None = None) -> float:
        """Heat the valves in ``open_mask`` (default: as they stand) deliver once the dead time has passed, W."""
        mask = self.valve_open if open_mask is None else open_mask
        hot = int(np.count_nonzero(mask[self.hot]))
        cold = int(np.count_nonzero(mask[self.cold]))
        return hot * self._q_hot_w - cold * self._q_cold_w

    def command_valves(self, indices: list[int] | np.ndarray, open_: bool) -> None:
        """Drive valves open (relay closed) or closed; a stuck valve accepts the command and stays."""
        idx = np.asarray(indices, dtype=np.int64)
        self.valve_commanded[idx] = open_
        self._settle_valves()

    def command_only(self, indices: list[int] | np.ndarray) -> None:
        """Drive exactly these valves open and every other valve closed, in one move."""
        self.valve_commanded[:] = False
        self.command_valves(indices, True)

    def stick_valve(self, index: int, open_: bool) -> None:
        """Fault: the valve goes to ``open_`` and stays there whatever it is commanded."""
        self.valve_stuck[index] = 1 if open_ else 0
        self._settle_valves()

    def _settle_valves(self) -> None:
        """Move every valve to its commanded (or stuck) position; count switchings; send the heat change."""
        target = np.where(self.valve_stuck >= 0, self.valve_stuck == 1, self.valve_commanded)
        moved = target != self.valve_open
        if not moved.any():
            return
        before_w = self.valve_heat_w()
        self.switch_counts[moved] += 1
        self.valve_open[:] = target
        after_w = self.valve_heat_w()
        if after_w != before_w:
            arrive_s = self.time_s + self.params.dead_time_s
            self._in_transit.append((arrive_s, after_w))
            if self.params.dead_time_s == 0.0:
                self._deliver_due()

    def _deliver_due(self) -> None:
        while self._in_transit and self._in_transit[0][0] <= self.time_s + _EPS_S:
            self.delivered_valve_w = self._in_transit.popleft()[1]

    # --- faults --------------------------------------------------------------------------------------------

    def open_thermocouple(self, index: int) -> None:
        """Fault: thermocouple ``index`` is open (reads :data:`OVERLOAD`)."""
        self.tc_open[index] = True

    def set_ambient(self, ambient_c: float) -> None:
        """Fault: step the ambient to ``ambient_c``."""
        self.ambient_c = float(ambient_c)

    def open_door(self, seconds: float) -> None:
        """Fault: the door is open for ``seconds`` of clock time from now (0 closes it)."""
        self.door_until_s = self.time_s + float(seconds)

    @property
    def door_open(self) -> bool:
        """Whether the door is open now."""
        return self.time_s < self.door_until_s - _EPS_S

    def clear_faults(self) -> None:
        """Repair every thermocouple, free every valve (it goes to its commanded position), close the door,
        restore the configured ambient."""
        self.tc_open[:] = False
        self.valve_stuck[:] = -1
        self._settle_valves()
        self.door_until_s = -math.inf
        self.ambient_c = self.params.ambient_c

    def reset(self) -> None:
        """``*RST``: every relay open (valves commanded closed); faults stay."""
        self.command_valves(np.arange(self.params.valves), False)

    # --- integration ---------------------------------------------------------------------------------------

    def advance_to(self, t_s: float) -> None:
        """Integrate from the model's time to ``t_s`` (clock seconds) in bounded substeps."""
        while t_s - self.time_s > _EPS_S:
            self._deliver_due()
            remaining = t_s - self.time_s
            dt = min(self.params.max_dt_s, remaining)
            if self._in_transit:
                dt = min(dt, self._in_transit[0][0] - self.time_s)
            if self.door_open:
                dt = min(dt, self.door_until_s - self.time_s)
            dt = max(dt, _EPS_S)
            self._substep(dt)
            if dt == remaining:
                self.time_s = t_s  # no rounding drift against the caller's clock
        self._deliver_due()

    def _substep(self, dt: float) -> None:
        door = self.door_open
        # The loops heat the coils and the chamber's mass, which the fans couple to the air; the cells heat the air.
        air_s, mass_s = self._nodes.steady_c(self.cell_heat_w, self.delivered_valve_w, self.ambient_c, door)
        phi = self._nodes.step_matrix(dt, door)
        d_air, d_mass = self.air_c - air_s, self.mass_c - mass_s
        air0 = self.air_c
        self.air_c = air_s + phi[0, 0] * d_air + phi[0, 1] * d_mass
        self.mass_c = mass_s + phi[1, 0] * d_air + phi[1, 1] * d_mass
        # Thermocouple lag, exact for an air temperature linear over the substep.
        tau = self.params.tc_tau_s
        e = math.exp(-dt / tau)
        slope = (self.air_c - air0) / dt
        self.tc_c = self.air_c - slope * tau + (self.tc_c - air0 + slope * tau) * e
        self.time_s += dt
        self.substeps += 1

    # --- readings and truth ----------------------------------------------------------------------------------

    def read_thermocouples(self, indices: list[int] | np.ndarray) -> np.ndarray:
        """One reading per index, in order: lagged air + offset + noise, rounded to the resolution;
        :data:`OVERLOAD` for an open thermocouple."""
        p = self.params
        idx = np.asarray(indices, dtype=np.int64)
        value = self.tc_c[idx] + self.tc_offset_c[idx]
        if p.tc_noise_c > 0.0:
            value = value + p.tc_noise_c * self._rng.standard_normal(idx.size)
        if p.tc_resolution_c > 0.0:
            value = np.round(value / p.tc_resolution_c) * p.tc_resolution_c
        return np.where(self.tc_open[idx], OVERLOAD, value)

    def truth(self) -> dict[str, object]:
        """Ground truth for tests: temperatures, heats, door, and per valve its state and switch count."""
        stuck_names = {-1: None, 0: "CLOSED", 1: "OPEN"}
        return {
            "time_s": self.time_s,
            "air_c": self.air_c,
            "mass_c": self.mass_c,
            "ambient_c": self.ambient_c,
            "door_open": self.door_open,
            "door_left_s": max(0.0, self.door_until_s - self.time_s) if self.door_open else 0.0,
            "cell_heat_w": self.cell_heat_w,
            "valve_heat_w": self.valve_heat_w(),
            "delivered_valve_heat_w": self.delivered_valve_w,
            "valve_open": self.valve_open.tolist(),
            "valve_commanded": self.valve_commanded.tolist(),
            "valve_stuck": [stuck_names[int(s)] for s in self.valve_stuck],
            "switch_counts": self.switch_counts.tolist(),
            "tc_c": self.tc_c.tolist(),
            "tc_offset_c": self.tc_offset_c.tolist(),
            "tc_open": self.tc_open.tolist(),
        }
