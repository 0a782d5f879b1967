"""Time integration: exact Taylor–Green decay, measured convergence orders, conservation and the
energy budget, for every scheme in the registry (adding a scheme adds its tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers.py2d_turbulence import initial_conditions as ic
from solvers.py2d_turbulence import py2d_core as core
from solvers.py2d_turbulence.schemes import SCHEMES
from solvers.py2d_turbulence.solver import repeated

N = 32


def integrate(scheme_name, omega0, t_end, dt, *, re, alpha=0.0, beta=0.0, fkx=0, fky=0, record_every=None):
    """Advance ω0 (physical, (N, N)) to t_end; returns the final spectral ω, or the recorded list."""
    grid = core.SpectralGrid(omega0.shape[0], dtype=jnp.asarray(omega0).dtype)
    eq = core.Py2DEquation(grid, re=re, alpha=alpha, beta=beta, fkx=fkx, fky=fky)
    scheme = SCHEMES[scheme_name]
    n_steps = round(t_end / dt)
    assert abs(n_steps * dt - t_end) < 1e-12
    state = scheme.init_state(eq, core.to_spectral(jnp.asarray(omega0)))
    step = scheme.make_step(eq, dt)
    if record_every is None:
        return jax.jit(repeated(step, n_steps))(state).omega_hat, eq
    advance = jax.jit(repeated(step, record_every))
    out = [state.omega_hat]
    for _ in range(n_steps // record_every):
        state = advance(state)
        out.append(state.omega_hat)
    return out, eq


def rate(errors):
    return np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))


@pytest.mark.parametrize("name", list(SCHEMES))
def test_taylor_green_decays_exactly_with_scheme_order(x64, name):
    # ω = 2 sin x sin y has u·∇ω = 0, so ω(t) = ω(0) exp(−2t/Re) exactly (no forcing, no drag)
    re, t_end = 5.0, 1.0
    w0 = ic.taylor_green(N)
    exact = w0 * np.exp(-2 * t_end / re)
    errors = []
    for dt in (0.1, 0.05, 0.025):
        w_hat, _ = integrate(name, w0, t_end, dt, re=re)
        errors.append(np.abs(np.asarray(core.to_physical(w_hat, N)) - exact).max())
    if name == "etdrk4":  # linear part integrated exactly
        assert max(errors) < 1e-13, f"ETDRK4 should be exact for Taylor–Green, errors {errors}"
        return
    rates = rate(errors)
    order = SCHEMES[name].order
    assert np.all(np.abs(rates - order) < 0.15), f"{name}: measured orders {rates}, errors {errors}, expected {order}"


def _nonlinear_errors(name, dts, *, alpha=0.0, t_end=0.4):
    w0 = ic.random_field(N, seed=11, trajectory=0, k_peak=3.0)
    kw = dict(re=200.0, alpha=alpha, beta=0.5, fkx=2, fky=1)
    ref, _ = integrate(name, w0, t_end, dts[-1] / 8, **kw)
    errs = []
    for dt in dts:
        w_hat, _ = integrate(name, w0, t_end, dt, **kw)
        errs.append(float(jnp.max(jnp.abs(w_hat - ref))))
    return errs


@pytest.mark.parametrize("name", list(SCHEMES))
def test_order_of_accuracy_with_nonlinearity_forcing_and_beta(x64, name):
    # self-convergence against a run with dt/8 on a fully nonlinear, forced β-plane case
    errors = _nonlinear_errors(name, (0.04, 0.02, 0.01))
    rates = rate(errors)
    order = SCHEMES[name].order
    assert np.all(rates > order - 0.25), f"{name}: measured orders {rates}, errors {errors}, expected >= {order}"
    assert errors[-1] > 1e-12, f"{name}: errors {errors} at round-off, the rate is not measured"


def test_ab2cn_is_first_order_with_drag_like_py2d(x64):
    # py2d treats the drag α by backward Euler: first order whenever α ≠ 0
    rates = rate(_nonlinear_errors("ab2cn", (0.02, 0.01, 0.005), alpha=2.0))
    assert np.all(np.abs(rates - 1.0) < 0.2), f"measured orders {rates}, expected 1"


@pytest.mark.parametrize("name", list(SCHEMES))
def test_unforced_undragged_flow_never_gains_energy_or_enstrophy(x64, name):
    w0 = ic.random_field(N, seed=5, trajectory=0, k_peak=4.0)
    states, eq = integrate(name, w0, 2.0, 0.01, re=2000.0, record_every=10)
    e = np.array([float(core.energy(s, eq.grid)) for s in states])
    z = np.array([float(core.enstrophy(s, eq.grid)) for s in states])
    assert np.all(np.diff(e) <= 0), f"energy increased: max step {np.diff(e).max():.3e}"
    assert np.all(np.diff(z) <= 0), f"enstrophy increased: max step {np.diff(z).max():.3e}"
    assert z[-1] < 0.99 * z[0]  # the flow did evolve and dissipate


@pytest.mark.parametrize("name", list(SCHEMES))
def test_energy_budget_holds(x64, name):
    # dE/dt = −2Z/Re − 2αE + P with P = −⟨ψ f⟩ (β does no work); centred differences of E vs the RHS
    re, alpha, dt = 100.0, 0.3, 2e-3
    w0 = ic.random_field(N, seed=9, trajectory=0, k_peak=3.0)
    states, eq = integrate(name, w0, 0.2, dt, re=re, alpha=alpha, beta=1.0, fkx=3, fky=2, record_every=1)
    g = eq.grid
    e = np.array([float(core.energy(s, g)) for s in states])
    z = np.array([float(core.enstrophy(s, g)) for s in states])
    p = np.array([float(eq.energy_injection(s)) for s in states])
    dedt = (e[2:] - e[:-2]) / (2 * dt)
    rhs = (-2 * z / re - 2 * alpha * e + p)[1:-1]
    scale = np.abs(rhs).max()
    assert np.abs(p).max() > 0.1 * scale  # forcing participates
    # measured: ab2cn 1.4e-3 (its drag is backward Euler: first order when α ≠ 0), rk3cn 3.3e-6, etdrk4 3.1e-6
    tol = {"ab2cn": 2e-3}.get(name, 2e-5)
    assert np.abs(dedt - rhs).max() < tol * scale, f"budget residual {np.abs(dedt - rhs).max() / scale:.2e}"
    mean_w = [abs(complex(s[0, 0])) for s in states]
    assert max(mean_w) < 1e-12 * N * N  # mean vorticity stays zero


@pytest.mark.parametrize("name", list(SCHEMES))
def test_rossby_wave_travels_at_the_sign_of_the_documented_beta_term(x64, name):
    """A single mode has u·∇ω = 0, so with ∂ω/∂t = … + βv, v = −∂ψ/∂x (py2d's sign, module docstring), the wave
    ω = cos(kx x + ky y − σt) is exact with σ = β kx/K²: phase speed +β/K² in x (eastward for β > 0, where Earth's
    β-plane, −βv, gives −β/K²). The budget and order tests cannot see this sign."""
    kx, ky, beta, t_end = 2, 1, 1.0, 1.0
    x = core.coordinates(N)
    theta = kx * x[None, :] + ky * x[:, None]
    w_hat, _ = integrate(name, np.cos(theta), t_end, 1e-3, re=1e12, beta=beta)
    sigma = beta * kx / (kx**2 + ky**2)
    got = np.asarray(core.to_physical(w_hat, N))
    np.testing.assert_allclose(got, np.cos(theta - sigma * t_end), atol=1e-6)
    assert np.abs(np.cos(theta + sigma * t_end) - np.cos(theta - sigma * t_end)).max() > 0.5  # the other sign fails


@pytest.mark.parametrize("name", list(SCHEMES))
def test_float32_agrees_with_float64(name):
    w0 = ic.random_field(N, seed=4, trajectory=0, k_peak=4.0)
    kw = dict(re=500.0, alpha=0.1, fkx=2)
    with jax.enable_x64(True):
        w64 = np.asarray(core.to_physical(integrate(name, w0, 0.5, 0.01, **kw)[0], N))
    w32_hat, _ = integrate(name, w0.astype(np.float32), 0.5, 0.01, **kw)
    assert w32_hat.dtype == jnp.complex64
    w32 = np.asarray(core.to_physical(w32_hat, N))
    rel = np.linalg.norm(w32 - w64) / np.linalg.norm(w64)
    assert rel < 2e-5, f"float32 vs float64 relative L2 difference {rel:.2e}"
