r"""Spectral core of the 2D Rayleigh–Bénard solver: operators, implicit per-mode solves, RK222 step, diagnostics.

Boussinesq convection in x ∈ [0, Lx) (periodic) and z ∈ [0, 1] between no-slip walls, in free-fall units
(length: the layer height H; buoyancy: the temperature difference; velocity √(gαΔT H)):

    ∂u/∂t + u·∇u = −∇p + ν ∇²u + b ẑ,   ∂b/∂t + u·∇b = κ ∇²b,   ∇·u = 0,
    ν = (Pr/Ra)^{1/2},  κ = (Ra Pr)^{−1/2},   b(z=0) = 1,  b(z=1) = 0,   u = 0 on both walls.

Formulation. b = 1 − z + θ (θ = 0 on the walls; the conductive profile is an exact steady state), and
the velocity comes from a streamfunction, u = ∂ψ/∂z, w = −∂ψ/∂x, so ∇·u = 0 holds identically. The curl
of the momentum equation gives, with ω = ∂u/∂z − ∂w/∂x = ∇²ψ,

    ∂ω/∂t + u·∇ω = ν ∇²ω − ∂θ/∂x,      ∂θ/∂t + u·∇θ = κ ∇²θ + w,

with ψ = ∂ψ/∂z = 0 on both walls (impermeable, no-slip) for every horizontal wavenumber k ≠ 0. The mean
flow U(z) (k = 0) is advanced by its own equation ∂U/∂t + ∂⟨uw⟩/∂z = ν U'', U = 0 on the walls: there is
no mean pressure gradient, so the net horizontal flux is free, as in a periodic channel computed with a
pressure formulation (e.g. Dedalus).

Discretisation. Fourier in x (``rfft`` coefficients normalised by 1/nx, so column 0 is the horizontal
mean), Chebyshev collocation at the Gauss–Lobatto nodes in z (``chebyshev.py``). State arrays are
``(nz, nx//2 + 1)`` complex: values at the nodes, per Fourier mode. Nonlinear products are computed on a
3/2-refined grid in both x and z (zero-padded Fourier modes; Chebyshev interpolation to ⌈3nz/2⌉ nodes,
then truncation of the Chebyshev series), so they are free of aliasing. The x-Nyquist mode is kept at 0.

Time stepping: ARS(2,2,2) ("RK222", Ascher, Ruuth & Spiteri, Appl. Numer. Math. 25, 1997, §2.6; the
default of Dedalus' Rayleigh–Bénard example): diffusion implicit, advection and buoyancy explicit, second
order. Both implicit stages solve (I − γΔt L) X = R with the same γ, so per Fourier mode one dense
(2nz × nz) matrix maps the ω-right-hand side to (ω, ψ) — the coupled system with the two no-slip
conditions in place of the ω-equation at the walls (the collocation form of the influence-matrix method,
Peyret, "Spectral Methods for Incompressible Viscous Flow", Springer 2002) — and one (nz × nz) matrix per
mode solves for θ. They are built once in float64 (:func:`make_solves`, eliminating ψ) and applied as batched
matmuls at full precision (``HIGHEST``: no TF32 on GPUs).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import chebyshev as cheb

# ARS(2,2,2): γ = 1 − 1/√2, δ = 1 − 1/(2γ)
GAMMA = 1.0 - 1.0 / math.sqrt(2.0)
DELTA = 1.0 - 1.0 / (2.0 * GAMMA)
ORDER = 2
# Every matrix product at full working precision: on GPUs XLA's default for float32 products is TF32 (10-bit
# mantissa; seen as tensor-op GEMM kernels in the H200 profile), too coarse for the implicit solves.
HIGHEST = jax.lax.Precision.HIGHEST
CFL_LIMIT = 1.0  # dt·max(|u|/Δx + |w|/Δz) on the collocation grid; RK222 with CFL safety 0.5 as in Dedalus


class RBState(NamedTuple):
    omega_hat: jnp.ndarray  # (nz, nkx) vorticity, column 0 unused (= 0)
    psi_hat: jnp.ndarray  # (nz, nkx) streamfunction, column 0 = 0
    theta_hat: jnp.ndarray  # (nz, nkx) buoyancy deviation from the conductive profile 1 − z
    mean_u: jnp.ndarray  # (nz,) horizontal-mean velocity U(z)
    step: jnp.ndarray  # int32 step counter


class RBOperators(NamedTuple):
    """Grid constants (float64 numpy until cast by :meth:`RBModel.cast`)."""

    kx: np.ndarray  # (nkx,) wavenumbers 2πk/Lx
    xmask: np.ndarray  # (nkx,) 1 for kept modes (k < nx/2), 0 for the Nyquist mode
    d1: np.ndarray  # (nz, nz) d/dz
    up: np.ndarray  # (nzf, nz) to the 3/2 z-grid
    up_dz: np.ndarray  # (nzf, nz) up @ d1: d/dz onto the 3/2 z-grid in one product
    down: np.ndarray  # (nz, nzf) back, truncating the Chebyshev series
    weights: np.ndarray  # (nz,) Clenshaw–Curtis weights on [0, 1]


class RBSolves(NamedTuple):
    """Per-mode inverses of (I − a L) for a given a = γΔt."""

    omega_psi: np.ndarray  # (nkx, 2nz, nz): interior ω-RHS → (ω, ψ) with ψ = ψ' = 0 on the walls
    theta: np.ndarray  # (nkx, nz, nz): interior θ-RHS → θ with θ = 0 on the walls
    mean_u: np.ndarray  # (nz, nz): interior U-RHS → U with U = 0 on the walls


def make_operators(nx: int, nz: int, lx: float) -> RBOperators:
    kx = 2.0 * np.pi / lx * np.arange(nx // 2 + 1)
    xmask = (np.arange(nx // 2 + 1) < nx // 2).astype(np.float64)
    up, down = cheb.dealias_matrices(nz)
    d1 = cheb.diff_matrix(nz)
    return RBOperators(kx, xmask, d1, up, up @ d1, down, cheb.quadrature_weights(nz))


def _wall_inverse(a: np.ndarray, walls: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The inverse of ``a`` with its two wall rows replaced (by ``walls``; default identity rows: the unknown is 0
    on the walls), applied to right-hand sides whose wall entries are ignored (its wall columns are zeroed)."""
    nz = a.shape[0]
    a = a.copy()
    a[0], a[-1] = walls if walls is not None else np.eye(nz)[[0, -1]]
    inv = np.linalg.inv(a)
    inv[:, [0, -1]] = 0.0
    return inv


@functools.lru_cache(maxsize=2)
def _dirichlet_poisson(nx: int, nz: int, lx: float) -> np.ndarray:
    """Per mode (column 0 unused), (D² − k²) with ψ = 0 on the walls, inverted for interior right-hand sides:
    ψ = P ω. Independent of the step size, so an adaptive run builds it once (cached; read-only)."""
    d1 = cheb.diff_matrix(nz)
    d2, eye = d1 @ d1, np.eye(nz)
    kx = 2.0 * np.pi / lx * np.arange(nx // 2 + 1)
    out = np.zeros((kx.size, nz, nz))
    for i, k in enumerate(kx[1:], start=1):
        out[i] = _wall_inverse(d2 - k * k * eye)
    out.flags.writeable = False
    return out


def make_solves(nx: int, nz: int, lx: float, nu: float, kappa: float, a: float) -> RBSolves:
    """Invert, per Fourier mode, the implicit operators of one RK222 stage (a = γΔt), in float64.

    The (ω, ψ) problem — ω-Helmholtz inside with ψ' = 0 on the walls, Δψ = ω inside with ψ = 0 on the walls — is
    a 2nz × 2nz system; eliminating ψ = P ω (P: the Dirichlet Poisson inverse on the interior) leaves an nz × nz
    one, M ω = r with M = the Helmholtz rows inside and the rows D₁P at the walls (the influence-matrix idea:
    Kleiser & Schumann 1980; Peyret 2002). Three nz × nz inversions and a product per mode instead of one
    2nz × 2nz inversion, and P does not depend on a, so an adaptive run builds it once (``tests/test_rb_core.py``
    checks that the result solves the per-mode equations and wall conditions).
    """
    d1 = cheb.diff_matrix(nz)
    d2, eye = d1 @ d1, np.eye(nz)
    kx = 2.0 * np.pi / lx * np.arange(nx // 2 + 1)
    wpsi = np.zeros((kx.size, 2 * nz, nz))
    theta = np.zeros((kx.size, nz, nz))
    poisson = _dirichlet_poisson(nx, nz, float(lx))
    for i, k in enumerate(kx):
        lap = d2 - k * k * eye
        theta[i] = _wall_inverse(eye - a * kappa * lap)  # Helmholtz rows inside, θ = 0 on the walls
        if i == 0:
            continue
        p = poisson[i]
        omega = _wall_inverse(eye - a * nu * lap, (d1[0] @ p, d1[-1] @ p))  # ψ' = D₁Pω = 0 on the walls
        wpsi[i, :nz], wpsi[i, nz:] = omega, p @ omega
    return RBSolves(wpsi, theta, _wall_inverse(eye - a * nu * d2))


def make_pressure_solve(nx: int, nz: int, lx: float) -> np.ndarray:
    """Per-mode inverses for the pressure Poisson problem (D² − k²)p = R inside, ∂p/∂z given on both walls;
    for k = 0 the top Neumann row is replaced by ∫p dz = 0 (the gauge; the top condition follows from
    compatibility). Apply to R with its wall entries replaced by the boundary values."""
    d1 = cheb.diff_matrix(nz)
    d2 = d1 @ d1
    kx = 2.0 * np.pi / lx * np.arange(nx // 2 + 1)
    out = np.zeros((kx.size, nz, nz))
    for i, k in enumerate(kx):
        a = d2 - k * k * np.eye(nz)
        a[0], a[-1] = d1[0], (d1[-1] if i else cheb.quadrature_weights(nz))
        out[i] = np.linalg.inv(a)
    return out


def _zmul(m, f):
    """Real matrix m (p, q) along the z axis of f (…, q, nkx) → (…, p, nkx). A complex f is multiplied as one real
    product on its (re, im) pairs: promoting m to complex would spend half of a complex product's multiplications
    on m's zero imaginary part (measured 2.2× slower on the CPU for the 3/2-grid interpolation at 512×128)."""
    if not jnp.iscomplexobj(f):
        return jnp.einsum("pq,...qk->...pk", m, f, precision=HIGHEST)
    out = jnp.einsum("pq,...qkc->...pkc", m, jnp.stack([f.real, f.imag], axis=-1), precision=HIGHEST)
    return jax.lax.complex(out[..., 0], out[..., 1])


def _mm(m, f):
    """Apply per-mode real matrices m (nkx, p, q) to complex f (q, nkx) → (p, nkx), real/imag separately. (Mode axis
    leading, or (re, im) stacked as two columns, measured within ±10% of this in the full step on the CPU.)"""
    re = jnp.einsum("kpq,qk->pk", m, f.real, precision=HIGHEST)
    im = jnp.einsum("kpq,qk->pk", m, f.imag, precision=HIGHEST)
    return jax.lax.complex(re, im)


class RBModel(NamedTuple):
    """Everything the step needs, in the working precision; build with :func:`make_model`."""

    nx: int
    nz: int
    lx: float
    nu: float
    kappa: float
    ops: RBOperators
    solves: RBSolves
    dt: float

    # --- transforms ------------------------------------------------------------------------------
    def to_fine(self, f_hat):
        """(…, nz, nkx) spectral-in-x → (…, nzf, nxf) physical on the 3/2 grid."""
        return self._x_to_fine(_zmul(self.ops.up, f_hat))

    def _x_to_fine(self, g):
        """(…, nzf, nkx) Fourier coefficients on the 3/2 z-grid → (…, nzf, nxf) physical."""
        return jnp.fft.irfft(g, n=3 * self.nx // 2, axis=-1, norm="forward")

    def from_fine(self, f):
        """(…, nzf, nxf) physical on the 3/2 grid → (…, nz, nkx), dealiased."""
        nkx = self.nx // 2 + 1
        g = jnp.fft.rfft(f, axis=-1, norm="forward")[..., :nkx]
        return _zmul(self.ops.down, g) * self.ops.xmask

    def dz(self, f_hat):
        return _zmul(self.ops.d1, f_hat)

    # --- the equations ---------------------------------------------------------------------------
    def velocity_hat(self, s: RBState):
        """(û, ŵ) with the mean flow in column 0 of û."""
        u_hat = self.dz(s.psi_hat).at[:, 0].set(s.mean_u.astype(s.psi_hat.dtype))
        w_hat = -1j * self.ops.kx * s.psi_hat
        return u_hat, w_hat

    def explicit_terms(self, s: RBState):
        """(N_ω, N_θ, N_U): advection and buoyancy coupling, dealiased by the 3/2 rule in x and z."""
        kx = self.ops.kx
        _, w_hat = self.velocity_hat(s)  # û is not needed here: under jit XLA drops its product
        om = s.omega_hat.at[:, 0].set(self.dz(s.mean_u[:, None])[:, 0].astype(s.omega_hat.dtype))
        w, wx, tx = self.to_fine(jnp.stack([w_hat, 1j * kx * om, 1j * kx * s.theta_hat]))
        # z-derivatives straight onto the 3/2 grid (one product instead of d/dz then interpolation); u = ∂ψ/∂z
        # except in column 0, where ψ is zero and u is the mean flow U(z)
        g = _zmul(self.ops.up_dz, jnp.stack([s.psi_hat, om, s.theta_hat]))
        mean_u = jnp.matmul(self.ops.up, s.mean_u, precision=HIGHEST)
        u, wz, tz = self._x_to_fine(g.at[0, :, 0].set(mean_u.astype(g.dtype)))
        adv = self.from_fine(jnp.stack([u * wx + w * wz, u * tx + w * tz]))
        n_omega = (-adv[0] - 1j * kx * s.theta_hat).at[:, 0].set(0.0)
        n_theta = -adv[1] + w_hat
        uw_mean = jnp.matmul(self.ops.down, jnp.mean(u * w, axis=-1), precision=HIGHEST)
        n_u = -jnp.matmul(self.ops.d1, uw_mean, precision=HIGHEST)
        return n_omega, n_theta, n_u

    def implicit_solve(self, r_omega, r_theta, r_u):
        """Solve (I − γΔt L) X = R per mode; wall rows of R are ignored (replaced by the boundary conditions)."""
        nz = self.nz
        wp = _mm(self.solves.omega_psi, r_omega)
        return wp[:nz], wp[nz:], _mm(self.solves.theta, r_theta), jnp.matmul(self.solves.mean_u, r_u, precision=HIGHEST)

    # --- the scheme -------------------------------------------------------------------------------
    def step(self, s: RBState) -> RBState:
        """One ARS(2,2,2) step of size ``self.dt``."""
        dt, g, d = self.dt, GAMMA, DELTA
        x0 = (s.omega_hat, s.theta_hat, s.mean_u)
        n1 = self.explicit_terms(s)
        rhs2 = tuple(x + g * dt * n for x, n in zip(x0, n1, strict=True))
        w2, p2, t2, u2 = self.implicit_solve(*rhs2)
        s2 = RBState(w2, p2, t2, u2, s.step)
        n2 = self.explicit_terms(s2)
        lx2 = tuple((x - r) / (g * dt) for x, r in zip((w2, t2, u2), rhs2, strict=True))  # L X₂ inside
        rhs3 = tuple(
            x + dt * (d * a + (1 - d) * b) + dt * (1 - g) * lx for x, a, b, lx in zip(x0, n1, n2, lx2, strict=True)
        )
        w3, p3, t3, u3 = self.implicit_solve(*rhs3)
        return RBState(w3, p3, t3, u3, s.step + 1)

    # --- diagnostics ------------------------------------------------------------------------------
    def physical(self, f_hat):
        """(…, nz, nkx) → (…, nz, nx) on the collocation nodes."""
        return jnp.fft.irfft(f_hat, n=self.nx, axis=-1, norm="forward")

    def diagnostics(self, s: RBState) -> dict[str, jnp.ndarray]:
        """Nusselt numbers by five definitions, kinetic energy, Reynolds number, CFL, max |w| and dt.

        Nu_bottom/top = −∂b/∂z at the walls (x-mean); Nu_volume = 1 + ⟨wb⟩/κ; Nu_thermal = ⟨|∇b|²⟩
        (thermal dissipation / κ); Nu_kinetic = 1 + ν⟨|∇u|²⟩/κ (kinetic dissipation ε_u = κ(Nu − 1)).
        Volume means by Clenshaw–Curtis in z and the mean over x. In a statistically steady state all
        five agree; their spread is the usual resolution check.
        """
        kx, wts = self.ops.kx, self.ops.weights
        u_hat, w_hat = self.velocity_hat(s)
        dtheta_dz = self.dz(s.theta_hat)
        nu_bottom = 1.0 - jnp.real(dtheta_dz[0, 0])
        nu_top = 1.0 - jnp.real(dtheta_dz[-1, 0])
        u, w, th, thx, thz = self.physical(jnp.stack([u_hat, w_hat, s.theta_hat, 1j * kx * s.theta_hat, dtheta_dz]))
        vol = lambda f: jnp.sum(wts * jnp.mean(f, axis=-1))  # noqa: E731
        nu_volume = 1.0 + vol(w * th) / self.kappa
        nu_thermal = vol(thx**2 + (thz - 1.0) ** 2)
        om = s.omega_hat.at[:, 0].set(self.dz(s.mean_u[:, None])[:, 0].astype(s.omega_hat.dtype))
        grad_u2 = vol(self.physical(om) ** 2)  # ⟨|∇u|²⟩ = ⟨ω²⟩ for no-slip walls
        ke = 0.5 * vol(u**2 + w**2)
        dz_local = jnp.gradient(jnp.asarray(cheb.nodes(self.nz), dtype=u.dtype))
        cfl = self.dt * jnp.max(jnp.abs(u) / (self.lx / self.nx) + jnp.abs(w) / dz_local[:, None])
        return {
            "nusselt_bottom": nu_bottom,
            "nusselt_top": nu_top,
            "nusselt_volume": nu_volume,
            "nusselt_thermal": nu_thermal,
            "nusselt_kinetic": 1.0 + self.nu * grad_u2 / self.kappa,
            "kinetic_energy": ke,
            "reynolds": jnp.sqrt(2.0 * ke) / self.nu,
            "cfl": cfl,
            "max_abs_w": jnp.max(jnp.abs(w)),
            "dt": jnp.asarray(self.dt, ke.dtype),
        }

    def pressure_hat(self, s: RBState, solve):
        """Pressure (with its hydrostatic part, mean zero) from ∇²p = ∂b/∂z − ∇·(u·∇u), where in 2D
        −∇·(u·∇u) = 2(∂ₓu ∂_zw − ∂_zu ∂ₓw), and ∂p/∂z = ν ∂²w/∂z² + b on the walls (the z-momentum equation
        there). ``solve``: :func:`make_pressure_solve` in the working precision."""
        kx, nkx = self.ops.kx, self.nx // 2 + 1
        u_hat, w_hat = self.velocity_hat(s)
        ux, uz, wx, wz = self.to_fine(jnp.stack([1j * kx * u_hat, self.dz(u_hat), 1j * kx * w_hat, self.dz(w_hat)]))
        rhs = 2.0 * self.from_fine((ux * wz - uz * wx)[None])[0] + self.dz(s.theta_hat)
        rhs = rhs.at[:, 0].add(-1.0)  # ∂(1 − z)/∂z
        wall = self.nu * self.dz(self.dz(w_hat))
        b_bottom = jnp.zeros(nkx, rhs.dtype).at[0].set(1.0)  # b = 1 + θ at z = 0, θ = 0 there
        rhs = rhs.at[0].set(wall[0] + b_bottom).at[-1].set(wall[-1])
        return _mm(solve, rhs)

    def divergence(self, s: RBState):
        """max |∂u/∂x + ∂w/∂z| on the nodes (zero up to round-off by construction)."""
        u_hat, w_hat = self.velocity_hat(s)
        return jnp.max(jnp.abs(self.physical(1j * self.ops.kx * u_hat + self.dz(w_hat))))


def make_model(
    *, nx: int, nz: int, lx: float, rayleigh: float, prandtl: float, dt: float, dtype=jnp.float64
) -> RBModel:
    """Validate the parameters and build the operators and the per-mode inverses for step size ``dt``."""
    if nx < 4 or nx % 2:
        raise ValueError(f"--nx must be an even integer >= 4 (got {nx})")
    if nz < 8:
        raise ValueError(f"--nz must be >= 8 Chebyshev points (got {nz})")
    if not lx > 0:
        raise ValueError(f"--aspect must be > 0 (got {lx:g})")
    if not rayleigh > 0:
        raise ValueError(f"--rayleigh must be > 0 (got {rayleigh:g})")
    if not prandtl > 0:
        raise ValueError(f"--prandtl must be > 0 (got {prandtl:g})")
    if not dt > 0:
        raise ValueError(f"--dt must be > 0 (got {dt:g})")
    nu, kappa = math.sqrt(prandtl / rayleigh), 1.0 / math.sqrt(rayleigh * prandtl)
    cast = lambda t: type(t)(*(jnp.asarray(a, dtype=dtype) for a in t))  # noqa: E731
    ops = cast(make_operators(nx, nz, lx))
    solves = cast(make_solves(nx, nz, lx, nu, kappa, GAMMA * dt))
    return RBModel(nx, nz, float(lx), nu, kappa, ops, solves, float(dt))


def conductive_state(model: RBModel) -> RBState:
    """θ = 0, u = 0: the exact conductive steady state b = 1 − z."""
    cdtype = jnp.result_type(model.ops.d1.dtype, jnp.complex64)
    zeros = jnp.zeros((model.nz, model.nx // 2 + 1), cdtype)
    return RBState(zeros, zeros, zeros, jnp.zeros(model.nz, model.ops.d1.dtype), jnp.zeros((), jnp.int32))


def perturbed_state(model: RBModel, key, amplitude: float = 1e-3) -> RBState:
    """Conductive state plus seeded Gaussian noise in θ, damped near the walls by 4z(1 − z)."""
    z = jnp.asarray(cheb.nodes(model.nz), model.ops.d1.dtype)
    noise = jax.random.normal(key, (model.nz, model.nx), jnp.float32).astype(model.ops.d1.dtype)  # same in f32/f64
    theta = amplitude * noise * (4 * z * (1 - z))[:, None]
    theta_hat = jnp.fft.rfft(theta, axis=-1, norm="forward") * model.ops.xmask
    return conductive_state(model)._replace(theta_hat=theta_hat)
