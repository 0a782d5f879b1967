"""Time-stepping schemes for :class:`~.py2d_core.Py2DEquation`, kept as data in one registry.

A scheme turns (equation, dt) into a pure ``step(state) -> state`` with every coefficient
precomputed (no Python branches on data inside the step). The state carries the spectral
vorticity, one history slot (the previous explicit term, used by the multistep AB2 scheme and
zero-cost for the others) and the step counter, so a run can be checkpointed and resumed exactly.

Schemes (``SCHEMES``; ``--scheme`` choices and the order tests iterate this registry):

- ``ab2cn``  py2d's scheme: Adams–Bashforth 2 for advection and forcing (forward Euler on the first
  step), Crank–Nicolson for viscosity, backward Euler for the drag α (so first order in time
  whenever α ≠ 0, as in py2d). Deviation from py2d: the β term is Crank–Nicolson instead of
  explicit Euler, which is neutral for Rossby waves instead of amplifying them; results equal
  py2d's whenever β = 0.
- ``rk3cn``  the low-storage 3-stage Runge–Kutta of Spalart, Moser & Rogers (J. Comput. Phys. 96, 1991,
  Appendix A: γ, ζ) for the explicit terms, third order there, second order overall; all linear terms
  (viscosity, drag, β) Crank–Nicolson over each stage (α = β = (γ + ζ)/2, not SMR's own α, β).
- ``etdrk4`` exponential time differencing RK4 of Cox & Matthews (J. Comput. Phys. 176, 2002),
  coefficients evaluated by the contour integrals of Kassam & Trefethen (SIAM J. Sci. Comput. 26,
  2005): fourth order, the linear part (viscosity, drag, β) integrated exactly.

LES closures (``Py2DEquation.closure``): a gradient model's −Π̂ is part of ``explicit_terms`` and so gets the
scheme's explicit order (AB2, RK3, ETDRK4 — py2d uses forward Euler for it). An eddy-viscosity closure's
domain-constant ν_e(t) is added to the viscosity and −ν_e K² treated by Crank–Nicolson in ab2cn (per step) and rk3cn
(per stage), with the coefficients rebuilt inside the jitted step and ν_e taken at the midpoint by a predictor–corrector
(``_cn_with_eddy``): second order, where py2d's ν_e(ω̂ⁿ) lagged over the step is first order and, with the stiff
ν_e K² of the small scales, far less accurate; etdrk4, whose exponential coefficients are precomputed, adds
−ν_e(ω̂)K²ω̂ to the explicit terms (fourth order).

CFL limits (dt·max(|u|/Δx + |v|/Δy) on the grid; the largest resolved advective eigenvalue is
k_max·|u| with k_max = N/3 ≈ (2π/3)/Δx): AB2 has no stable interval on the imaginary axis and is used
in practice at CFL ≲ 0.5; RK3's imaginary-axis limit √3 gives CFL < √3·3/(2π) ≈ 0.83; ETDRK4 reduces
to RK4 for L → 0, limit 2√2, i.e. CFL < 1.35.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .py2d_core import Py2DEquation


class State(NamedTuple):
    """Solver state: a pytree of the spectral vorticity, one history slot and the step counter."""

    omega_hat: jnp.ndarray  # (..., ny, nx//2+1) complex
    history: jnp.ndarray  # previous explicit term N(ω̂ⁿ⁻¹) for ab2cn; zeros for one-step schemes
    step: jnp.ndarray  # int32 step counter (time = step·dt)


Stepper = Callable[[State], State]


@dataclass(frozen=True)
class Scheme:
    name: str
    order: int  # formal order in time with α = 0 (the order test checks it)
    cfl_limit: float
    citation: str
    make_step: Callable[[Py2DEquation, float], Stepper]
    uses_history: bool = False

    def init_state(self, eq: Py2DEquation, omega_hat) -> State:
        """State at step 0. For AB2 the history is N(ω̂⁰), making the first step forward Euler."""
        omega_hat = omega_hat * eq.grid.dealias
        history = eq.explicit_terms(omega_hat) if self.uses_history else jnp.zeros_like(omega_hat)
        return State(omega_hat, history, jnp.zeros(omega_hat.shape[:-2], jnp.int32))


def _eddy(eq: Py2DEquation, w):
    """−ν_e(ω̂) K², the eddy-viscosity operator of the state (broadcast over the spectral axes)."""
    return _eddy_op(eq, eq.eddy_viscosity(w))


def _eddy_op(eq: Py2DEquation, nu):
    return -nu[..., None, None] * eq.grid.ksq


def _cn_with_eddy(eq: Py2DEquation, w, cn_update):
    """A Crank–Nicolson update ``cn_update(nu) -> w_new`` with the state-dependent eddy viscosity ν_e at second order.

    ν_e is evaluated at the start (ν₀ = ν_e(w)), a predictor w* is taken with it, and the update is redone with
    ν = ½(ν₀ + ν_e(w*)) = ν_e(t + dt/2) + O(dt²): CN with the midpoint operator stays second order, where lagging
    ν₀ alone would be first order (measured in tests/test_les.py). Costs one more ν_e evaluation per update.
    """
    nu0 = eq.eddy_viscosity(w)
    return cn_update(0.5 * (nu0 + eq.eddy_viscosity(cn_update(nu0))))


def _ab2cn(eq: Py2DEquation, dt: float) -> Stepper:
    half_cn = 0.5 * dt * (eq.l_visc + eq.l_beta)
    numer = 1.0 + half_cn
    inv_denom = 1.0 / (1.0 - half_cn - dt * eq.l_drag)

    def step(s: State) -> State:
        n_now = eq.explicit_terms(s.omega_hat)
        explicit = dt * (1.5 * n_now - 0.5 * s.history)
        if not eq.has_eddy_viscosity:
            return State((numer * s.omega_hat + explicit) * inv_denom, n_now, s.step + 1)

        def update(nu):
            half = half_cn + 0.5 * dt * _eddy_op(eq, nu)
            return ((1.0 + half) * s.omega_hat + explicit) / (1.0 - half - dt * eq.l_drag)

        return State(_cn_with_eddy(eq, s.omega_hat, update), n_now, s.step + 1)

    return step


# γ, ζ: the explicit low-storage RK3 of Spalart, Moser & Rogers (JCP 96, 1991, Appendix A). The implicit terms take
# Crank–Nicolson over each substep, α_k = β_k = (γ_k + ζ_k)/2 — not SMR's own α = (29/96, −3/40, 1/6),
# β = (37/160, 5/24, 1/6); both are consistent (α_k + β_k = γ_k + ζ_k) and second order overall.
_SMR_GAMMA = (8 / 15, 5 / 12, 3 / 4)
_SMR_ZETA = (0.0, -17 / 60, -5 / 12)
_SMR_ALPHA = (4 / 15, 1 / 15, 1 / 6)


def _rk3cn(eq: Py2DEquation, dt: float) -> Stepper:
    lin = eq.linear_operator()
    numer = [1.0 + a * dt * lin for a in _SMR_ALPHA]
    inv_denom = [1.0 / (1.0 - a * dt * lin) for a in _SMR_ALPHA]

    def step(s: State) -> State:
        w = s.omega_hat
        n_prev = jnp.zeros_like(w)
        for k in range(3):
            n_now = eq.explicit_terms(w)
            explicit = dt * (_SMR_GAMMA[k] * n_now + _SMR_ZETA[k] * n_prev)
            if not eq.has_eddy_viscosity:
                w = (numer[k] * w + explicit) * inv_denom[k]
            else:

                def update(nu, w=w, k=k, explicit=explicit):
                    a = _SMR_ALPHA[k] * dt * (lin + _eddy_op(eq, nu))
                    return ((1.0 + a) * w + explicit) / (1.0 - a)

                w = _cn_with_eddy(eq, w, update)
            n_prev = n_now
        return State(w, s.history, s.step + 1)

    return step


def etdrk4_coefficients(lin: np.ndarray, dt: float, n_points: int = 64):
    """ETDRK4 coefficients E, E/2, Q, f1, f2, f3 for a diagonal (complex) operator ``lin``.

    φ-functions evaluated as means over a circle of radius 1 around each dt·L (Kassam & Trefethen
    2005, eq. 2.5), full circle since L is complex; exact to round-off also where dt·L → 0.
    """
    hl = dt * np.asarray(lin, dtype=np.complex128)
    r = np.exp(2j * np.pi * (np.arange(n_points) + 0.5) / n_points)
    z = hl[..., None] + r
    ez = np.exp(z)
    q = dt * np.mean((np.exp(z / 2) - 1) / z, axis=-1)
    f1 = dt * np.mean((-4 - z + ez * (4 - 3 * z + z * z)) / z**3, axis=-1)
    f2 = dt * np.mean((2 + z + ez * (z - 2)) / z**3, axis=-1)
    f3 = dt * np.mean((-4 - 3 * z - z * z + ez * (4 - z)) / z**3, axis=-1)
    return np.exp(hl), np.exp(hl / 2), q, f1, f2, f3


def _etdrk4(eq: Py2DEquation, dt: float) -> Stepper:
    cdtype = eq.forcing_hat.dtype
    lin = np.asarray(eq.linear_operator(), dtype=np.complex128) * np.ones(eq.grid.ksq.shape)
    e, e2, q, f1, f2, f3 = (jnp.asarray(c, dtype=cdtype) for c in etdrk4_coefficients(lin, dt))

    def explicit(w):
        if not eq.has_eddy_viscosity:
            return eq.explicit_terms(w)
        return eq.explicit_terms(w) + _eddy(eq, w) * w

    def step(s: State) -> State:
        u = s.omega_hat
        nu = explicit(u)
        a = e2 * u + q * nu
        na = explicit(a)
        b = e2 * u + q * na
        nb = explicit(b)
        c = e2 * a + q * (2 * nb - nu)
        nc = explicit(c)
        w = e * u + f1 * nu + 2 * f2 * (na + nb) + f3 * nc
        return State(w, s.history, s.step + 1)

    return step


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("ab2cn", 2, 0.5, "AB2/CN as in py2d (Jakhar et al. 2024)", _ab2cn, uses_history=True),
        Scheme("rk3cn", 2, 0.8, "RK3 of Spalart, Moser & Rogers, JCP 96 (1991), App. A + CN per substep", _rk3cn),
        Scheme("etdrk4", 4, 1.3, "Cox & Matthews, JCP 176 (2002); Kassam & Trefethen, SISC 26 (2005)", _etdrk4),
    )
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]
