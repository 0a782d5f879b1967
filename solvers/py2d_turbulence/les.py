r"""Large-eddy simulation (LES) of the 2D turbulence solver: filters, coarse-graining, a-priori sub-grid-scale
(SGS) terms, their transfer spectra, and the SGS closures used inside the solver.

Conventions (the same as ``py2d_core``: rfft2 layout ``(ny, nx//2+1)``, domain [0, 2π)², integer wavenumbers):

- Jacobian: J(a, b) = a_x b_y − a_y b_x, so J(ω, ψ) = ω_x ψ_y − ω_y ψ_x = u ω_x + v ω_y = u·∇ω with
  u = ψ_y, v = −ψ_x: the solver's advection term (``py2d_core.nonlinear_term``), dealiased by the 2/3 rule.
- Filtered equation (Guan, Chattopadhyay, Subel & Hassanzadeh, J. Comput. Phys. 458, 111090, 2022, §2):
      ∂ω̄/∂t + J(ω̄, ψ̄) = (1/Re)∇²ω̄ − αω̄ − f̄ + βv̄ − Π_ω,     Π_ω = (J(ω, ψ))‾ − J(ω̄, ψ̄),
  and Π_ω = ∂_x σ_x + ∂_y σ_y with σ_i = (u_i ω)‾ − ū_i ω̄ (u is divergence-free); the momentum form uses
  τ_ij = (u_i u_j)‾ − ū_i ū_j. An eddy-viscosity closure models Π_ω = −ν_e ∇²ω̄ (ν_e a domain constant, as py2d).
- Filters (transfer functions Ĝ(k_x, k_y), width Δ; default Δ = 2L/N_LES with L = 2π, as Guan et al. 2022):
    gaussian  Ĝ = exp(−K²Δ²/24)                                   (Pope, Turbulent Flows, 2000, Table 13.2)
    box       Ĝ = sinc(k_x Δ/2) · sinc(k_y Δ/2),  sinc(s) = sin(s)/s  (tensor product of 1D top-hats of width Δ)
    spectral  Ĝ = 1 for |K| < K_c = π/Δ, else 0                    (sharp cut-off, circular)
- Coarse-graining N → N_LES keeps the modes |k_x|, |k_y| < N_LES/2 and zeroes the Nyquist row and column of the
  coarse grid; rfft2 coefficients scale with the number of points, so they are multiplied by (N_LES/N)².
- SGS transfer spectra: T_Z(k) = Σ_{shell k} Re(conj(ω̂̄) Π̂)/N⁴ and T_E(k) = Σ_{shell k} Re(conj(ψ̂̄) Π̂)/N⁴
  (with the rfft multiplicities), so Σ_k T_Z(k) = ⟨ω̄ Π_ω⟩ and Σ_k T_E(k) = ⟨ψ̄ Π_ω⟩: the rates at which the SGS
  term removes resolved enstrophy and energy (dZ̄/dt|_SGS = −⟨ω̄Π⟩). Positive = forward transfer to the
  sub-filter scales (dissipation), negative = backscatter. An eddy viscosity gives T(k) = ν_e K²·(≥0) ≥ 0.

Every function is pure and jit/vmap-friendly; the closure is a frozen ``eqx.Module`` built once.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from .py2d_core import (
    LENGTH,
    SpectralGrid,
    _shell_sum,
    nonlinear_term,
    omega2psi,
    psi2uv,
    to_physical,
    to_spectral,
)

FILTERS = ("gaussian", "box", "spectral")
SGS_MODELS = ("none", "smag", "leith", "dsmag", "dleith", "gm2", "gm4", "gm6")
EDDY_MODELS = ("smag", "leith", "dsmag", "dleith")
SGS_FIELDS = ("pi_omega", "tau_xx", "tau_xy", "tau_yy", "sigma_x", "sigma_y")
# Smagorinsky constant of Lilly (1967) (C_s ≈ 0.17); py2d's example uses the same value for Leith.
DEFAULT_CS = 0.17
MAX_CS = 10.0  # a sanity bound: published C_s and C_l are O(0.1–1); far above, ν_e swamps the flow


def default_width(n_les: int) -> float:
    """Filter width Δ = 2L/N_LES (Guan et al. 2022; py2d's Delta = 2 Lx / NX)."""
    return 2.0 * LENGTH / n_les


# ----------------------------------------------------------------------------- filters


def transfer_function(kind: str, delta: float, grid: SpectralGrid) -> Float[Array, "ny nkx"]:
    """Filter transfer function Ĝ on ``grid``'s rfft2 modes (see the module docstring for the definitions)."""
    if kind not in FILTERS:
        raise ValueError(f"--filter must be one of {', '.join(FILTERS)} (got {kind!r})")
    if not delta > 0:
        raise ValueError(f"filter width must be > 0 (got {delta!r})")
    kx = np.asarray(grid.kx, dtype=np.float64)
    ky = np.asarray(grid.ky, dtype=np.float64)
    ksq = kx**2 + ky**2
    if kind == "gaussian":
        g = np.exp(-ksq * delta**2 / 24.0)
    elif kind == "box":
        g = np.sinc(kx * delta / (2 * np.pi)) * np.sinc(ky * delta / (2 * np.pi))  # np.sinc(s) = sin(πs)/(πs)
    else:
        g = (ksq < (np.pi / delta) ** 2).astype(np.float64)
    return jnp.asarray(g, dtype=grid.ksq.dtype)


def coarse_grain(f_hat: Complex[Array, "... n nk"], n_les: int) -> Complex[Array, "... m mk"]:
    """Spectral coarse-graining of rfft2 coefficients from N×N to n_les×n_les (n_les even, < N).

    Keeps |k_x|, |k_y| < n_les/2; the coarse Nyquist row (k_y = n_les/2) and column (k_x = n_les/2) are set to 0
    (their modes are not representable as real cosines on both grids); amplitudes are rescaled by (n_les/N)² so
    that the physical values on the coarse points equal those of the band-limited fine field.
    """
    n = f_hat.shape[-2]
    h = n_les // 2
    top = f_hat[..., :h, :h]  # k_y = 0 … h−1, k_x = 0 … h−1
    bottom = f_hat[..., n - h + 1 :, :h]  # k_y = −(h−1) … −1
    nyq_row = jnp.zeros((*f_hat.shape[:-2], 1, h), f_hat.dtype)
    out = jnp.concatenate([top, nyq_row, bottom], axis=-2)
    out = jnp.concatenate([out, jnp.zeros((*f_hat.shape[:-2], n_les, 1), f_hat.dtype)], axis=-1)
    return out * (n_les / n) ** 2


# ----------------------------------------------------------------------------- a-priori SGS terms


def _product(a, b, grid: SpectralGrid):
    """Dealiased spectral product (a b)^ of two physical fields whose modes lie inside the 2/3 mask."""
    return to_spectral(a * b) * grid.dealias


def jacobian(a_hat, b_hat, grid: SpectralGrid):
    """(J(a, b))^ = (a_x b_y − a_y b_x)^, dealiased; J(ω, ψ) equals the solver's advection term u·∇ω."""
    d = to_physical(
        jnp.stack([1j * grid.kx * a_hat, 1j * grid.ky * a_hat, 1j * grid.kx * b_hat, 1j * grid.ky * b_hat], -3),
        grid.n,
    )
    return _product(d[..., 0, :, :], d[..., 3, :, :], grid) - _product(d[..., 1, :, :], d[..., 2, :, :], grid)


def pi_omega(omega_hat, grid: SpectralGrid, g_hat) -> Complex[Array, "... ny nkx"]:
    """Π̂_ω = (J(ω, ψ))‾^ − J(ω̄, ψ̄)^ on the fine grid, with ``g_hat`` the filter's transfer function."""
    w = omega_hat * grid.dealias
    wb = w * g_hat
    return jacobian(w, omega2psi(w, grid), grid) * g_hat - jacobian(wb, omega2psi(wb, grid), grid)


def velocity_vorticity(omega_hat, grid: SpectralGrid):
    """Spectral (u, v, ω) of a vorticity field (mask applied)."""
    w = omega_hat * grid.dealias
    u_hat, v_hat = psi2uv(omega2psi(w, grid), grid)
    return u_hat, v_hat, w


def sgs_stress(f_hat, g_hat, grid: SpectralGrid, filt):
    """(f g)‾^ − (f̄ ḡ)^ for two spectral fields, products dealiased on the fine grid."""
    f, g, fb, gb = (to_physical(a, grid.n) for a in (f_hat, g_hat, f_hat * filt, g_hat * filt))
    return _product(f, g, grid) * filt - _product(fb, gb, grid)


def decompose(f_hat, g_hat, grid: SpectralGrid, filt):
    """Leonard, cross and Reynolds parts of (f g)‾ − f̄ ḡ (Germano, Phys. Fluids 29, 1986; Pope 2000, §13.3):

    L = (f̄ ḡ)‾ − f̄ ḡ,   C = (f̄ g′)‾ + (f′ ḡ)‾,   R = (f′ g′)‾,   f′ = f − f̄;   L + C + R = (f g)‾ − f̄ ḡ exactly.
    """
    fb_hat, gb_hat = f_hat * filt, g_hat * filt
    fb, gb, fp, gp = (to_physical(a, grid.n) for a in (fb_hat, gb_hat, f_hat - fb_hat, g_hat - gb_hat))
    resolved = _product(fb, gb, grid)
    leonard = resolved * filt - resolved
    cross = (_product(fb, gp, grid) + _product(fp, gb, grid)) * filt
    reynolds = _product(fp, gp, grid) * filt
    return leonard, cross, reynolds


def apriori_fields(omega_hat, grid: SpectralGrid, filt) -> dict[str, jnp.ndarray]:
    """Filtered fields and SGS terms of a DNS vorticity, spectral on the fine grid: omega, psi, u, v (filtered),
    tau_xx, tau_xy, tau_yy, sigma_x, sigma_y, pi_omega (= ∂_xσ_x + ∂_yσ_y = (J(ω,ψ))‾ − J(ω̄,ψ̄))."""
    u_hat, v_hat, w = velocity_vorticity(omega_hat, grid)
    u, v, om = (to_physical(a, grid.n) for a in (u_hat, v_hat, w))
    ub, vb, wb = (to_physical(a * filt, grid.n) for a in (u_hat, v_hat, w))
    pairs = {
        "tau_xx": (u, u, ub, ub),
        "tau_xy": (u, v, ub, vb),
        "tau_yy": (v, v, vb, vb),
        "sigma_x": (u, om, ub, wb),
        "sigma_y": (v, om, vb, wb),
    }
    out = {k: _product(a, b, grid) * filt - _product(c, d, grid) for k, (a, b, c, d) in pairs.items()}
    out["pi_omega"] = 1j * grid.kx * out["sigma_x"] + 1j * grid.ky * out["sigma_y"]
    out["omega"] = w * filt
    out["psi"] = omega2psi(w * filt, grid)
    out["u"], out["v"] = u_hat * filt, v_hat * filt
    return out


def transfer_spectra(omega_bar_hat, pi_hat, grid: SpectralGrid):
    """SGS energy and enstrophy transfer spectra on integer shells: returns (k, T_E, T_Z), Σ T_E = ⟨ψ̄Π⟩,
    Σ T_Z = ⟨ω̄Π⟩; positive = forward transfer (dissipation of resolved scales), negative = backscatter."""
    norm = grid.weight / float(grid.n) ** 4
    dens_z = norm * jnp.real(jnp.conj(omega_bar_hat) * pi_hat)
    dens_e = norm * jnp.real(jnp.conj(omega2psi(omega_bar_hat, grid)) * pi_hat)
    t_z = _shell_sum(dens_z, grid)
    return jnp.arange(t_z.shape[-1]), _shell_sum(dens_e, grid), t_z


# ----------------------------------------------------------------------------- closures


def _mean(a):
    return jnp.mean(a, axis=(-2, -1))


def strain_rate_magnitude(omega_hat, grid: SpectralGrid):
    """|S| = (2 S_ij S_ij)^½ = (4 ψ_xy² + (ψ_yy − ψ_xx)²)^½ in physical space."""
    psi_hat = omega2psi(omega_hat, grid)
    a = to_physical(jnp.stack([-grid.kx * grid.ky * psi_hat, (grid.kx**2 - grid.ky**2) * psi_hat], -3), grid.n)
    return jnp.sqrt(4.0 * a[..., 0, :, :] ** 2 + a[..., 1, :, :] ** 2)


def vorticity_gradient_magnitude(omega_hat, grid: SpectralGrid):
    """|∇ω| in physical space."""
    g = to_physical(jnp.stack([1j * grid.kx * omega_hat, 1j * grid.ky * omega_hat], -3), grid.n)
    return jnp.sqrt(g[..., 0, :, :] ** 2 + g[..., 1, :, :] ** 2)


def dynamic_coefficient(lij, mij):
    """Least-squares Germano coefficient with py2d's positive clipping: c = ⟨(L M)⁺⟩/⟨M M⟩ ≥ 0 (0 where M ≡ 0)."""
    lm = _mean(jnp.maximum(lij * mij, 0.0))
    mm = _mean(mij * mij)
    return jnp.where(mm > 0, lm / jnp.where(mm > 0, mm, 1.0), 0.0)


def _multi_index_derivatives(f_hat, order: int, grid: SpectralGrid):
    """∂_x^a ∂_y^(order−a) f for a = order … 0, spectral, stacked on axis −3."""
    return jnp.stack([(1j * grid.kx) ** a * (1j * grid.ky) ** (order - a) * f_hat for a in range(order, -1, -1)], -3)


def gradient_model_pi(omega_hat, grid: SpectralGrid, delta: float, order: int):
    r"""Π̂_ω of the gradient model GM(2·order) for the Gaussian filter, dealiased.

    For Ĝ = exp(−K²Δ²/24) = exp(a∇²), a = Δ²/24, the filtered product satisfies exactly (formal series)
        (f g)‾ − f̄ ḡ = Σ_{n≥1} (2a)ⁿ/n! (∇_f·∇_g)ⁿ f̄ ḡ = Σ_n (Δ²/12)ⁿ/n! Σ_{|α|=n} (n choose α) ∂^α f̄ ∂^α ḡ,
    truncated at n = order (Δ², Δ⁴, Δ⁶: GM2, GM4, GM6; coefficients Δ²/12, Δ⁴/288 and 2Δ⁴/288, Δ⁶/10368 and
    3Δ⁶/10368 as in Jakhar et al., JAMES 16, e2023MS003874, 2024, App. A). σ_i uses f = u_i, g = ω and
    Π_ω = ∂_xσ_x + ∂_yσ_y (equal to py2d's expanded Π formula by incompressibility).
    """
    u_hat, v_hat, w = velocity_vorticity(omega_hat, grid)
    sx = sy = jnp.zeros_like(w)
    for n in range(1, order + 1):
        coef = (delta**2 / 12.0) ** n / math.factorial(n)
        binom = jnp.asarray([math.comb(n, a) for a in range(n, -1, -1)], dtype=grid.ksq.dtype)[:, None, None]
        d = to_physical(
            jnp.concatenate([_multi_index_derivatives(f, n, grid) for f in (u_hat, v_hat, w)], axis=-3), grid.n
        )
        du, dv, dw = d[..., : n + 1, :, :], d[..., n + 1 : 2 * n + 2, :, :], d[..., 2 * n + 2 :, :, :]
        sx = sx + coef * to_spectral(jnp.sum(binom * du * dw, axis=-3))
        sy = sy + coef * to_spectral(jnp.sum(binom * dv * dw, axis=-3))
    return (1j * grid.kx * sx + 1j * grid.ky * sy) * grid.dealias


class Closure(eqx.Module):
    """An SGS closure on an LES grid: ``eddy_viscosity(ω̂)`` (domain-constant ν_e ≥ 0, eddy models) and
    ``tendency(ω̂)`` (−Π̂_model for the gradient models, integrated with the explicit terms).

    - smag:   ν_e = (C_s Δ)² ⟨|S̄|²⟩^½ (Smagorinsky, Mon. Weather Rev. 91, 1963; domain-averaged as py2d);
              ⟨|S̄|²⟩ = ⟨ω̄²⟩ exactly on a periodic domain (mode by mode: 4k_x²k_y² + (k_x²−k_y²)² = K⁴).
    - leith:  ν_e = (C_l Δ)³ ⟨|∇ω̄|⟩ (Leith, Phys. Fluids 10, 1968; Physica D 98, 1996; domain mean as py2d).
    - dsmag, dleith: c = C_s² (C_l³) from the Germano identity (Germano et al., Phys. Fluids A 3, 1991), least
      squares over the domain (Lilly, Phys. Fluids A 4, 1992) with py2d's clipping c = ⟨(LM)⁺⟩/⟨MM⟩:
          L = (J(ω̄,ψ̄))^ − J(ω̂,ψ̂),  M = Δ^p (|D̄| ∇²ω̄)^ − (2Δ)^p |D̂| ∇²ω̂,
      with ^ the test filter (sharp circular cut-off |K| < N/4, width ratio 2, as py2d), D = S, p = 2 (dsmag) or
      D = ∇ω, p = 3 (dleith); |D̂| is evaluated on the test-filtered field (Germano's identity; py2d filters |D̄|
      instead). Then ν_e = c Δ² ⟨|S̄|²⟩^½ or c Δ³ ⟨|∇ω̄|⟩.
    - gm2, gm4, gm6: Π = gradient model of :func:`gradient_model_pi` (no eddy viscosity).
    """

    kind: str = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    coefficient: float = eqx.field(static=True)
    grid: SpectralGrid
    test_filter: Float[Array, "ny nkx"]

    def __init__(self, kind: str, grid: SpectralGrid, *, delta: float | None = None, coefficient: float = DEFAULT_CS):
        if kind not in SGS_MODELS or kind == "none":
            raise ValueError(f"--sgs must be one of {', '.join(SGS_MODELS[1:])} for a closure (got {kind!r})")
        if not coefficient > 0:
            raise ValueError(f"--cs must be > 0 (got {coefficient!r})")
        self.kind = kind
        self.grid = grid
        self.delta = float(default_width(grid.n) if delta is None else delta)
        self.coefficient = float(coefficient)
        self.test_filter = (grid.ksq < (grid.n / 4) ** 2).astype(grid.ksq.dtype)

    @property
    def has_eddy_viscosity(self) -> bool:
        return self.kind in EDDY_MODELS

    @property
    def has_tendency(self) -> bool:
        return self.kind.startswith("gm")

    def _germano(self, w):
        """(L, M) of the dynamic procedure, physical fields."""
        g, t = self.grid, self.test_filter
        wt = w * t
        l_hat = nonlinear_term(w, g) * t - nonlinear_term(wt, g)
        if self.kind == "dsmag":
            p, d, dt_ = 2, strain_rate_magnitude(w, g), strain_rate_magnitude(wt, g)
        else:
            p, d, dt_ = 3, vorticity_gradient_magnitude(w, g), vorticity_gradient_magnitude(wt, g)
        lap = to_physical(jnp.stack([-g.ksq * w, -g.ksq * wt, l_hat], -3), g.n)
        m1 = to_physical(to_spectral(d * lap[..., 0, :, :]) * t, g.n)
        m = self.delta**p * m1 - (2.0 * self.delta) ** p * dt_ * lap[..., 1, :, :]
        return lap[..., 2, :, :], m

    def coefficient_of(self, omega_hat):
        """The model coefficient: C_s² or C_l³ (dynamic or given)."""
        if self.kind in ("dsmag", "dleith"):
            return dynamic_coefficient(*self._germano(omega_hat * self.grid.dealias))
        p = 2 if self.kind == "smag" else 3
        return jnp.asarray(self.coefficient**p, dtype=self.grid.ksq.dtype)

    def eddy_viscosity(self, omega_hat):
        """Domain-constant ν_e(t) ≥ 0 (scalar per leading batch index)."""
        g = self.grid
        w = omega_hat * g.dealias
        c = self.coefficient_of(w)
        if self.kind in ("smag", "dsmag"):
            # ⟨|S|²⟩ = ⟨ω²⟩ (Parseval, rfft multiplicities)
            w2 = jnp.sum(g.weight * jnp.abs(w) ** 2, axis=(-2, -1)) / float(g.n) ** 4
            return c * self.delta**2 * jnp.sqrt(w2)
        return c * self.delta**3 * _mean(vorticity_gradient_magnitude(w, g))

    def tendency(self, omega_hat):
        """−Π̂_model of a gradient model (added to the explicit terms)."""
        return -gradient_model_pi(omega_hat, self.grid, self.delta, int(self.kind[2]) // 2)


def make_closure(kind: str, grid: SpectralGrid, coefficient: float = DEFAULT_CS, delta: float | None = None):
    """The closure for ``--sgs kind`` on ``grid`` (None for 'none')."""
    if kind == "none":
        return None
    return Closure(kind, grid, delta=delta, coefficient=coefficient)
