r"""Spectral core of the 2D turbulence solver: operators, diagnostics and the equation object.

Solves 2D incompressible Navier–Stokes in vorticity–streamfunction form on the doubly periodic
square [0, 2π)², with the conventions of py2d (Jakhar, Guan, Mojgani, Chattopadhyay & Hassanzadeh,
"Learning closed-form equations for subgrid-scale closures from high-fidelity data", JAMES 2024;
github.com/envfluids/py2d), re-derived and written anew here:

    ∂ω/∂t + u·∇ω = (1/Re) ∇²ω − α ω − f + β v,     ∇²ψ = −ω,     u = ∂ψ/∂y,   v = −∂ψ/∂x,

    f(x, y) = k_fx cos(k_fx x) + k_fy cos(k_fy y)   (Kolmogorov forcing; amplitude = wavenumber,
                                                     entering the right-hand side with a minus sign)

α is a linear (Rayleigh) drag, β the planetary-vorticity gradient; the β-plane term carries py2d's
sign (+βv, i.e. the background vorticity gradient points towards −y).

Layout. Physical fields are arrays ``(ny, nx)`` — axis 0 is y, axis 1 is x, like the Gust HDF5
format — on the uniform grid x_j = 2πj/N. Spectral fields are ``jnp.fft.rfft2`` of those:
``(ny, nx//2 + 1)``, with ky along axis 0 (full, fftfreq order) and kx ≥ 0 along axis 1. (py2d keeps
its arrays as (x, y) and uses complex fft2; transpose to compare.) Leading batch axes broadcast.

Every function here is pure and jit/vmap-friendly; the grid constants live in one frozen
:class:`SpectralGrid`, built once and validated at construction.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

LENGTH = 2.0 * math.pi  # domain side; wavenumbers are integers


class SpectralGrid(eqx.Module):
    """Wavenumbers, inverse Laplacian and 2/3-rule mask for an N×N doubly periodic grid.

    ``n`` must be even and >= 8. The dealiasing mask keeps the modes with 3|k_x| < N and 3|k_y| < N
    (Orszag's 2/3 rule, square truncation): quadratic products of kept modes then alias only onto
    discarded modes, so the truncated nonlinear term is exact.
    """

    n: int = eqx.field(static=True)
    kx: Float[Array, "1 nkx"]
    ky: Float[Array, "ny 1"]
    # kx, ky with the Nyquist wavenumber N/2 set to 0, for odd (first) derivatives: the sine at N/2 is 0 on every
    # grid point, so a real grid field has no derivative there; i·(N/2) would make an imaginary Nyquist coefficient,
    # which the inverse rfft drops but spectra and energies would count
    kx_odd: Float[Array, "1 nkx"]
    ky_odd: Float[Array, "ny 1"]
    ksq: Float[Array, "ny nkx"]
    inv_ksq: Float[Array, "ny nkx"]  # 1/K², with 0 for the mean mode
    # (|û|² + |v̂|²)/|ω̂|² = (kx_odd² + ky_odd²)/K⁴: 1/K² except on the Nyquist row and column (energy, E(k))
    velocity_weight: Float[Array, "ny nkx"]
    dealias: Float[Array, "ny nkx"]  # 1 on kept modes, 0 on truncated ones
    weight: Float[Array, "1 nkx"]  # rfft multiplicity: 1 for kx = 0 and kx = N/2, else 2
    # the nonlinear term's two spectral operators, precomputed with the 2/3 mask folded in:
    velocity_op: Complex[Array, "2 ny nkx"]  # ω̂ ↦ (û, v̂) = (i k_y, −i k_x) ω̂ / K²
    basdevant_op: Float[Array, "2 ny nkx"]  # (uv, v²−u²)^ ↦ (k_y² − k_x², −k_x k_y)

    def __init__(self, n: int, dtype=None):
        """``dtype``: real dtype of the arrays; default float64 inside ``jax.enable_x64``, else float32."""
        if not isinstance(n, int | np.integer) or n < 8 or n % 2:
            raise ValueError(f"grid size must be an even integer >= 8 for the 2/3 rule (got {n!r}); try 128")
        self.n = int(n)
        a = grid_arrays(self.n)
        dtype = jnp.result_type(float) if dtype is None else dtype
        names = ("kx", "ky", "kx_odd", "ky_odd", "ksq", "inv_ksq", "velocity_weight", "dealias", "weight")
        (
            self.kx,
            self.ky,
            self.kx_odd,
            self.ky_odd,
            self.ksq,
            self.inv_ksq,
            self.velocity_weight,
            self.dealias,
            self.weight,
        ) = (jnp.asarray(a[k], dtype=dtype) for k in names)
        kx, ky, keep = a["kx"], a["ky"], a["dealias"]
        vel = np.stack([1j * ky * a["inv_ksq"] * keep, -1j * kx * a["inv_ksq"] * keep])
        self.velocity_op = jnp.asarray(vel, dtype=jnp.result_type(dtype, jnp.complex64))
        self.basdevant_op = jnp.asarray(np.stack([(ky**2 - kx**2) * keep, -kx * ky * keep]), dtype=dtype)

    @property
    def kmax(self) -> int:
        """Largest wavenumber component kept by the 2/3 rule."""
        return (self.n - 1) // 3

    def coordinates(self) -> np.ndarray:
        """Grid points x_j = 2πj/N (the same for y), float64."""
        return coordinates(self.n)


def coordinates(n: int) -> np.ndarray:
    """Grid points x_j = 2πj/N, j = 0 … N−1 (float64)."""
    return np.arange(n) * (LENGTH / n)


def grid_arrays(n: int) -> dict[str, np.ndarray]:
    """float64 numpy wavenumber arrays of the rfft2 layout: kx (1, N/2+1), ky (N, 1), the same with 0 at the
    Nyquist wavenumber N/2 (``kx_odd``, ``ky_odd``: first derivatives), K², 1/K² (0 at the mean mode), the velocity
    weight (kx_odd² + ky_odd²)/K⁴, the 2/3-rule mask and the rfft multiplicity of each column."""
    kx = np.arange(n // 2 + 1, dtype=np.float64)[None, :]
    ky = (np.fft.fftfreq(n) * n)[:, None]
    ksq = kx**2 + ky**2
    kx_odd, ky_odd = np.where(kx == n // 2, 0.0, kx), np.where(np.abs(ky) == n // 2, 0.0, ky)
    inv_ksq = np.divide(1.0, ksq, out=np.zeros_like(ksq), where=ksq > 0)
    return {
        "kx": kx,
        "ky": ky,
        "kx_odd": kx_odd,
        "ky_odd": ky_odd,
        "ksq": ksq,
        "inv_ksq": inv_ksq,
        "velocity_weight": (kx_odd**2 + ky_odd**2) * inv_ksq**2,
        "dealias": ((3 * np.abs(kx) < n) & (3 * np.abs(ky) < n)).astype(np.float64),
        "weight": np.where((kx == 0) | (kx == n // 2), 1.0, 2.0),
    }


# ----------------------------------------------------------------------------- transforms


def to_spectral(f: Float[Array, "... ny nx"]) -> Complex[Array, "... ny nkx"]:
    return jnp.fft.rfft2(f, axes=(-2, -1))


def to_physical(f_hat: Complex[Array, "... ny nkx"], n: int) -> Float[Array, "... ny nx"]:
    return jnp.fft.irfft2(f_hat, s=(n, n), axes=(-2, -1))


# ----------------------------------------------------------------------------- operators


def omega2psi(omega_hat, grid: SpectralGrid):
    """ψ̂ = ω̂/K² (from ∇²ψ = −ω), with the mean mode of ψ set to 0."""
    return omega_hat * grid.inv_ksq


def psi2omega(psi_hat, grid: SpectralGrid):
    """ω̂ = K² ψ̂."""
    return psi_hat * grid.ksq


def psi2uv(psi_hat, grid: SpectralGrid):
    """û = i k_y ψ̂,  v̂ = −i k_x ψ̂ (0 at the Nyquist wavenumber, as every first derivative here)."""
    return 1j * grid.ky_odd * psi_hat, -1j * grid.kx_odd * psi_hat


def uv2omega(u_hat, v_hat, grid: SpectralGrid):
    """ω̂ = i k_x v̂ − i k_y û (ω = ∂v/∂x − ∂u/∂y)."""
    return 1j * grid.kx_odd * v_hat - 1j * grid.ky_odd * u_hat


def laplacian(f_hat, grid: SpectralGrid):
    """∇² ↦ −K²."""
    return -grid.ksq * f_hat


def derivative_x(f_hat, grid: SpectralGrid):
    return 1j * grid.kx_odd * f_hat


def derivative_y(f_hat, grid: SpectralGrid):
    return 1j * grid.ky_odd * f_hat


def nonlinear_term(omega_hat: Complex[Array, "... ny nkx"], grid: SpectralGrid) -> Complex[Array, "... ny nkx"]:
    r"""Dealiased advection term  (u·∇ω)^  with 4 real FFTs (2 inverse + 2 forward, each batched).

    Uses the velocity-product form of Basdevant (J. Comput. Phys. 50, 1983):
    u·∇ω = (∂²_x − ∂²_y)(uv) + ∂_x∂_y(v² − u²), exact for divergence-free u. The inputs are the
    2/3-truncated modes and the output is truncated again, so the result equals the exactly
    dealiased advective product u ω_x + v ω_y (cf. :func:`nonlinear_term_advective`, 5 FFTs;
    py2d's skew-symmetric form spends 12).
    """
    uv = to_physical(omega_hat[..., None, :, :] * grid.velocity_op, grid.n)  # (..., 2, ny, nx): u, v
    u, v = uv[..., 0, :, :], uv[..., 1, :, :]
    prods = to_spectral(jnp.stack([u * v, v * v - u * u], axis=-3))
    return jnp.sum(prods * grid.basdevant_op, axis=-3)


def nonlinear_term_advective(omega_hat, grid: SpectralGrid):
    """Reference form u ω_x + v ω_y with 5 FFTs (4 inverse, 1 forward), dealiased by the 2/3 rule."""
    n = grid.n
    w = omega_hat * grid.dealias
    u_hat, v_hat = psi2uv(omega2psi(w, grid), grid)
    u, v, wx, wy = (to_physical(a, n) for a in (u_hat, v_hat, derivative_x(w, grid), derivative_y(w, grid)))
    return to_spectral(u * wx + v * wy) * grid.dealias


# ----------------------------------------------------------------------------- integrals and spectra


def _mean_product(a_hat, b_hat, grid: SpectralGrid):
    """Domain mean ⟨a b⟩ from rfft2 coefficients (Parseval with rfft multiplicities)."""
    norm = float(grid.n) ** 4
    return jnp.sum(grid.weight * jnp.real(a_hat * jnp.conj(b_hat)), axis=(-2, -1)) / norm


def energy(omega_hat, grid: SpectralGrid):
    """Kinetic energy E = ½⟨|u|²⟩ of the grid velocity (= ½⟨ψω⟩ for a field without Nyquist modes)."""
    return 0.5 * _mean_product(omega_hat * grid.velocity_weight, omega_hat, grid)


def enstrophy(omega_hat, grid: SpectralGrid):
    """Enstrophy Z = ½⟨ω²⟩."""
    return 0.5 * _mean_product(omega_hat, omega_hat, grid)


def palinstrophy(omega_hat, grid: SpectralGrid):
    """Palinstrophy P = ½⟨|∇ω|²⟩ (dZ/dt = −2P/Re for unforced, undragged flow)."""
    return 0.5 * _mean_product(omega_hat, omega_hat * grid.ksq, grid)


def _shell_sum(density, grid: SpectralGrid):
    """Sum a per-mode density (already weighted) over integer shells k = round(|K|), k = 0 … ⌈N/√2⌉."""
    n_shells = math.ceil(math.sqrt(2.0) * grid.n / 2) + 1
    shell = jnp.rint(jnp.sqrt(grid.ksq)).astype(jnp.int32)
    flat = density.reshape(*density.shape[:-2], -1)
    sums = jnp.zeros((*density.shape[:-2], n_shells), density.dtype)
    return sums.at[..., shell.reshape(-1)].add(flat)


def energy_spectrum(omega_hat, grid: SpectralGrid):
    """Angle-summed energy spectrum E(k) on integer shells; Σ_k E(k) = E exactly. Returns (k, E_k)."""
    dens = 0.5 * grid.weight * jnp.abs(omega_hat) ** 2 * grid.velocity_weight / float(grid.n) ** 4
    e_k = _shell_sum(dens, grid)
    return jnp.arange(e_k.shape[-1]), e_k


def enstrophy_spectrum(omega_hat, grid: SpectralGrid):
    """Angle-summed enstrophy spectrum Z(k) on integer shells; Σ_k Z(k) = Z exactly. Returns (k, Z_k)."""
    dens = 0.5 * grid.weight * jnp.abs(omega_hat) ** 2 / float(grid.n) ** 4
    z_k = _shell_sum(dens, grid)
    return jnp.arange(z_k.shape[-1]), z_k


def cfl_number(omega_hat, grid: SpectralGrid, dt):
    """Advective CFL number dt·max(|u|/Δx + |v|/Δy) on the grid."""
    u_hat, v_hat = psi2uv(omega2psi(omega_hat, grid), grid)
    uv = to_physical(jnp.stack([u_hat, v_hat], axis=-3), grid.n)
    dx = LENGTH / grid.n
    return dt * jnp.max(jnp.abs(uv[..., 0, :, :]) + jnp.abs(uv[..., 1, :, :]), axis=(-2, -1)) / dx


# ----------------------------------------------------------------------------- the equation


def kolmogorov_forcing(fkx: int, fky: int, grid: SpectralGrid) -> np.ndarray:
    """Physical forcing f = k_fx cos(k_fx x) + k_fy cos(k_fy y) on the (y, x) grid, float64 numpy."""
    x = grid.coordinates()
    return fkx * np.cos(fkx * x)[None, :] + fky * np.cos(fky * x)[:, None]


class Py2DEquation(eqx.Module):
    """The right-hand side split for IMEX schemes: ∂ω̂/∂t = N(ω̂) + L_visc ω̂ + L_drag ω̂ + L_beta ω̂.

    - ``explicit_terms``: N(ω̂) = −(u·∇ω)^ − f̂ (dealiased advection and the constant forcing);
    - diagonal linear operators (arrays over the spectral grid): ``l_visc = −K²/Re``,
      ``l_drag = −α``, ``l_beta = −iβ k_x/K²`` (from +βv with v̂ = −i k_x ψ̂ = −i k_x ω̂/K²; purely
      imaginary, i.e. Rossby waves, which Crank–Nicolson keeps neutral).

    The schemes in ``schemes.py`` decide how each part is integrated.

    ``closure`` (optional, an ``les.Closure``) adds an LES sub-grid-scale model: a gradient model's −Π̂ joins
    ``explicit_terms``; an eddy-viscosity model's domain-constant ν_e(t) (``eddy_viscosity``) is added to the
    viscosity by the schemes (Crank–Nicolson in ab2cn/rk3cn, explicitly in etdrk4).
    """

    grid: SpectralGrid
    forcing_hat: Complex[Array, "ny nkx"]  # f̂ (enters the RHS with a minus sign)
    l_visc: Float[Array, "ny nkx"]
    l_drag: Float[Array, ""]
    l_beta: Complex[Array, "ny nkx"]
    re: float = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    closure: eqx.Module | None = None

    def __init__(
        self, grid: SpectralGrid, *, re: float, alpha: float = 0.0, beta: float = 0.0, fkx=0, fky=0, closure=None
    ):
        if not re > 0:
            raise ValueError(f"Reynolds number must be > 0 (got {re!r})")
        if not alpha >= 0:
            raise ValueError(f"drag alpha must be >= 0 (got {alpha!r})")
        for name, k in (("fkx", fkx), ("fky", fky)):
            if int(k) != k or not 0 <= k <= grid.kmax:
                raise ValueError(
                    f"forcing wavenumber {name} must be an integer in [0, {grid.kmax}] "
                    f"(resolved by the 2/3 rule at N={grid.n}; got {k!r})"
                )
        rdtype = grid.ksq.dtype
        cdtype = jnp.result_type(rdtype, jnp.complex64)
        self.grid = grid
        self.re, self.alpha, self.beta = float(re), float(alpha), float(beta)
        f_hat = np.fft.rfft2(kolmogorov_forcing(int(fkx), int(fky), grid))
        self.forcing_hat = jnp.asarray(f_hat, dtype=cdtype) * grid.dealias
        self.l_visc = -grid.ksq / self.re
        self.l_drag = jnp.asarray(-self.alpha, dtype=rdtype)
        self.l_beta = (-1j * self.beta) * grid.kx * grid.inv_ksq
        if closure is not None and closure.grid.n != grid.n:
            raise ValueError(f"closure grid N={closure.grid.n} differs from the equation's N={grid.n}")
        self.closure = closure

    @property
    def has_eddy_viscosity(self) -> bool:
        return self.closure is not None and self.closure.has_eddy_viscosity

    def explicit_terms(self, omega_hat):
        """N(ω̂) = −(u·∇ω)^ − f̂ (− Π̂_model for a gradient-model closure)."""
        n = -nonlinear_term(omega_hat, self.grid) - self.forcing_hat
        if self.closure is not None and self.closure.has_tendency:
            n = n + self.closure.tendency(omega_hat)
        return n

    def eddy_viscosity(self, omega_hat):
        """The closure's domain-constant eddy viscosity ν_e(ω̂) (0 without an eddy-viscosity closure)."""
        if not self.has_eddy_viscosity:
            return jnp.zeros(omega_hat.shape[:-2], self.grid.ksq.dtype)
        return self.closure.eddy_viscosity(omega_hat)

    def linear_operator(self):
        """The full diagonal linear operator L = L_visc + L_drag + L_beta."""
        return self.l_visc + self.l_drag + self.l_beta

    def energy_injection(self, omega_hat):
        """Power of the forcing P = −⟨ψ f⟩, so that dE/dt = −2Z/Re − 2αE + P."""
        psi_hat = omega2psi(omega_hat, self.grid)
        return -_mean_product(psi_hat, self.forcing_hat, self.grid)
