"""Spectral routines of py2d_core against exact single-mode results and Parseval's identity."""

import jax.numpy as jnp
import numpy as np
import pytest

from solvers.py2d_turbulence import initial_conditions as ic
from solvers.py2d_turbulence import py2d_core as core

N = 32


@pytest.fixture
def grid(x64):
    return core.SpectralGrid(N)


def mode(kx, ky, phase=0.3):
    x = core.coordinates(N)
    return np.cos(kx * x[None, :] + ky * x[:, None] + phase)


def spec(f):
    return jnp.asarray(np.fft.rfft2(f))


def phys(f_hat):
    return np.asarray(core.to_physical(f_hat, N))


@pytest.mark.parametrize("kx,ky", [(1, 0), (0, 3), (2, -5), (4, 7)])
def test_single_mode_operators_are_exact(grid, kx, ky):
    x = core.coordinates(N)
    theta = kx * x[None, :] + ky * x[:, None] + 0.3
    omega = np.cos(theta)
    k2 = kx * kx + ky * ky
    psi_hat = core.omega2psi(spec(omega), grid)
    # ∇²ψ = −ω  ⇒ ψ = cos θ / K²
    np.testing.assert_allclose(phys(psi_hat), omega / k2, atol=1e-14)
    np.testing.assert_allclose(phys(core.psi2omega(psi_hat, grid)), omega, atol=1e-13)
    u_hat, v_hat = core.psi2uv(psi_hat, grid)
    # u = ∂ψ/∂y = −ky sin θ / K², v = −∂ψ/∂x = kx sin θ / K²
    np.testing.assert_allclose(phys(u_hat), -ky * np.sin(theta) / k2, atol=1e-14)
    np.testing.assert_allclose(phys(v_hat), kx * np.sin(theta) / k2, atol=1e-14)
    np.testing.assert_allclose(phys(core.uv2omega(u_hat, v_hat, grid)), omega, atol=1e-13)
    np.testing.assert_allclose(phys(core.laplacian(spec(omega), grid)), -k2 * omega, atol=1e-12)


def test_mean_mode_of_psi_is_zero(grid):
    psi_hat = core.omega2psi(spec(np.ones((N, N)) + mode(1, 2)), grid)
    assert abs(complex(psi_hat[0, 0])) == 0.0


def test_nonlinear_term_of_two_modes_matches_analytic_jacobian(grid):
    # ψ = sin x cos 2y + cos 3x: J = u ω_x + v ω_y computed by hand on the grid (exact: modes < N/3)
    x = core.coordinates(N)
    X, Y = np.meshgrid(x, x)  # (y, x) layout
    psi = np.sin(X) * np.cos(2 * Y) + np.cos(3 * X)
    omega = 5 * np.sin(X) * np.cos(2 * Y) + 9 * np.cos(3 * X)
    u = -2 * np.sin(X) * np.sin(2 * Y)  # ∂ψ/∂y
    v = -(np.cos(X) * np.cos(2 * Y) - 3 * np.sin(3 * X))  # −∂ψ/∂x
    wx = 5 * np.cos(X) * np.cos(2 * Y) - 27 * np.sin(3 * X)
    wy = -10 * np.sin(X) * np.sin(2 * Y)
    expected = u * wx + v * wy
    assert np.allclose(phys(core.psi2omega(spec(psi), grid)), omega)
    got = phys(core.nonlinear_term(spec(omega), grid))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.abs(expected).max() > 1.0  # the fixture is not trivially zero


def test_four_fft_form_equals_advective_form_on_random_field(grid):
    w_hat = spec(ic.random_field(N, seed=3, trajectory=0, k_peak=4.0))
    a = core.nonlinear_term(w_hat, grid)
    b = core.nonlinear_term_advective(w_hat, grid)
    assert float(jnp.max(jnp.abs(b))) > 1.0
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12 * float(jnp.max(jnp.abs(b))))


def _advection_on_a_grid(w_hat: np.ndarray, mask: np.ndarray, m: int) -> np.ndarray:
    """u·∇ω of the field ``w_hat * mask`` with the products taken on an m × m grid, cut back to the N grid's rfft2
    modes inside the 2/3 mask. m = 2N is exact for a truncated field (it holds |k| < N/3, its products |k| < 2N/3);
    m = N is the plain pseudo-spectral product, aliased when the field is not truncated."""
    w = np.fft.fft2(np.fft.irfft2(w_hat * mask, s=(N, N)))  # the full complex spectrum
    k = np.fft.fftfreq(N, 1.0 / N)
    kx, ky = k[None, :], k[:, None]
    k2 = kx**2 + ky**2
    psi = np.where(k2 == 0, 0, w / np.where(k2 == 0, 1, k2))  # ∇²ψ = −ω
    fields = (1j * ky * psi, -1j * kx * psi, 1j * kx * w, 1j * ky * w)  # u = ψ_y, v = −ψ_x, ω_x, ω_y
    idx = np.where(k < 0, k + m, k).astype(int)  # where each wavenumber sits on the m grid

    def sampled(f_hat):
        big = np.zeros((m, m), complex)
        big[np.ix_(idx, idx)] = f_hat
        return np.fft.ifft2(big).real * (m / N) ** 2

    u, v, wx, wy = (sampled(f) for f in fields)
    prod = np.fft.fft2(u * wx + v * wy) / (m / N) ** 2
    return prod[np.ix_(idx, idx)][:, : N // 2 + 1] * mask


def test_dealiasing_makes_the_product_exact_on_the_kept_modes(grid):
    """A field with every mode filled: the dealiased advection equals the exact product of its 2/3-truncated field
    (taken on a 2N grid) on the kept modes and vanishes outside them. Without the input truncation, the plain
    product on the N grid aliases onto the kept modes and this fails (the self-check measures by how much)."""
    rng = np.random.default_rng(0)
    w_hat = np.fft.rfft2(rng.normal(size=(N, N)))
    mask = np.asarray(grid.dealias)
    exact = _advection_on_a_grid(w_hat, mask, 2 * N)
    got = np.asarray(core.nonlinear_term(jnp.asarray(w_hat), grid))
    scale = np.abs(exact).max()
    np.testing.assert_allclose(got, exact, atol=1e-12 * scale)
    np.testing.assert_allclose(_advection_on_a_grid(w_hat, mask, N), exact, atol=1e-12 * scale)  # 2/3 rule: no alias
    assert np.abs(_advection_on_a_grid(w_hat, np.ones_like(mask), N) - exact).max() > 0.1 * scale


def test_energy_enstrophy_single_mode(grid):
    # ω = cos θ: Z = ½⟨ω²⟩ = 1/4, E = ½⟨ψω⟩ = 1/(4K²), P = ½⟨|∇ω|²⟩ = K²/4
    w_hat = spec(mode(2, 3))
    assert float(core.enstrophy(w_hat, grid)) == pytest.approx(0.25, rel=1e-13)
    assert float(core.energy(w_hat, grid)) == pytest.approx(0.25 / 13, rel=1e-13)
    assert float(core.palinstrophy(w_hat, grid)) == pytest.approx(0.25 * 13, rel=1e-13)


def test_energy_matches_physical_velocity(grid):
    w = ic.random_field(N, seed=1, trajectory=0, k_peak=5.0)
    w_hat = spec(w)
    u_hat, v_hat = core.psi2uv(core.omega2psi(w_hat, grid), grid)
    e_phys = 0.5 * np.mean(phys(u_hat) ** 2 + phys(v_hat) ** 2)
    assert float(core.energy(w_hat, grid)) == pytest.approx(e_phys, rel=1e-12)
    assert float(core.enstrophy(w_hat, grid)) == pytest.approx(0.5 * np.mean(w**2), rel=1e-12)


def test_first_derivatives_are_zero_at_the_nyquist_wavenumber(grid):
    # sin(N/2 x) vanishes on every grid point, so a real grid field has no first derivative at kx or ky = N/2 (the
    # usual rule for odd spectral derivatives, e.g. Trefethen, "Spectral Methods in MATLAB", 2000, ch. 3). White
    # noise has Nyquist modes: energy, E(k) and Z(k) from (u, v) must match the grid fields the inverse FFT gives.
    rng = np.random.default_rng(0)
    w, u, v = rng.standard_normal((3, N, N))
    w_hat = spec(w - w.mean())
    u_hat, v_hat = core.psi2uv(core.omega2psi(w_hat, grid), grid)
    e_grid = 0.5 * np.mean(phys(u_hat) ** 2 + phys(v_hat) ** 2)
    assert float(core.energy(w_hat, grid)) == pytest.approx(e_grid, rel=1e-12)
    assert float(core.energy_spectrum(w_hat, grid)[1].sum()) == pytest.approx(e_grid, rel=1e-12)
    omega_hat = core.uv2omega(spec(u), spec(v), grid)
    z_grid = 0.5 * np.mean(phys(omega_hat) ** 2)
    assert float(core.enstrophy_spectrum(omega_hat, grid)[1].sum()) == pytest.approx(z_grid, rel=1e-12)
    nyquist = np.cos(N // 2 * core.coordinates(N))  # cos(N/2 x) along x, then along y
    assert np.abs(np.asarray(core.derivative_x(spec(np.broadcast_to(nyquist, (N, N))), grid))).max() == 0
    assert np.abs(np.asarray(core.derivative_y(spec(np.broadcast_to(nyquist[:, None], (N, N))), grid))).max() == 0


def test_spectra_satisfy_parseval_and_sit_on_their_shell(grid):
    w_hat = spec(ic.random_field(N, seed=2, trajectory=1, k_peak=6.0))
    _, e_k = core.energy_spectrum(w_hat, grid)
    _, z_k = core.enstrophy_spectrum(w_hat, grid)
    assert float(e_k.sum()) == pytest.approx(float(core.energy(w_hat, grid)), rel=1e-12)
    assert float(z_k.sum()) == pytest.approx(float(core.enstrophy(w_hat, grid)), rel=1e-12)
    # single mode (3, 4) has |K| = 5: all of its energy in shell 5
    _, e_k1 = core.energy_spectrum(spec(mode(3, 4)), grid)
    assert float(e_k1[5]) == pytest.approx(0.25 / 25, rel=1e-13)
    assert float(jnp.sum(e_k1) - e_k1[5]) == pytest.approx(0.0, abs=1e-16)


def test_random_ic_has_the_prescribed_spectrum_and_is_seeded(grid):
    w = ic.random_field(N, seed=7, trajectory=0, k_peak=4.0)
    _, e_k = core.energy_spectrum(spec(w), grid)
    target = ic.target_energy_spectrum(np.arange(1, grid.kmax + 1), 4.0)
    np.testing.assert_allclose(np.asarray(e_k)[1 : grid.kmax + 1], target, rtol=1e-10)
    assert np.array_equal(w, ic.random_field(N, seed=7, trajectory=0, k_peak=4.0))
    assert not np.allclose(w, ic.random_field(N, seed=7, trajectory=1, k_peak=4.0))
    assert not np.allclose(w, ic.random_field(N, seed=8, trajectory=0, k_peak=4.0))
    assert abs(w.mean()) < 1e-14


@pytest.mark.parametrize("n", [7, 6, 0, 101])
def test_bad_grid_size_is_rejected(n):
    with pytest.raises(ValueError, match=f"got {n}"):
        core.SpectralGrid(n)


def test_forcing_is_kolmogorov(grid):
    f = core.kolmogorov_forcing(4, 1, grid)
    x = core.coordinates(N)
    np.testing.assert_allclose(f[5, :], 4 * np.cos(4 * x) + np.cos(x[5]))
