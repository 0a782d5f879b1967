"""models.analyze_reconstruction: metric functions on cases with exact answers, the wall-bounded pipeline on a real
Rayleigh–Bénard file, the CLI end to end on the tiny trained run, and bad input (one line, exit 2, nothing touched)."""

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from models import analyze_reconstruction as ar
from solvers.common.hdf5_utils import Grid

TWO_PI = 2 * math.pi


def grid_xy(n, length=TWO_PI):
    x = np.arange(n) * (length / n)
    return x[None, :], x[:, None]  # (1, n) x along axis 1, (n, 1) y along axis 0


# ----------------------------------------------------------------------------------------------------------------------
# Shell spectra (doubly periodic)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [TWO_PI, 1.0])
@pytest.mark.parametrize(("mx", "my", "shell"), [(3, 0, 3), (0, 2, 2), (3, 4, 5)])
def test_single_fourier_mode_puts_its_exact_energy_in_one_shell(length, mx, my, shell):
    # ω = cos(a x + b y), a = 2π mx/L, b = 2π my/L, |k|² = a² + b². ∇²ψ = −ω gives ψ = ω/|k|², so
    # u = ∂ψ/∂y = −b sin(·)/|k|², v = −∂ψ/∂x = a sin(·)/|k|², |u|² = sin²(·)/|k|² and ⟨sin²⟩ = ½:
    # E = ½⟨|u|²⟩ = 1/(4|k|²); Z = ½⟨ω²⟩ = ¼. Both sit in the shell round(|k|/(2π/L)) = round(√(mx² + my²)).
    n = 16
    x, y = grid_xy(n, length)
    a, b = TWO_PI * mx / length, TWO_PI * my / length
    omega = np.cos(a * x + b * y)
    e = ar.energy_spectrum_from_omega(omega, length)
    z = ar.scalar_shell_spectrum(omega, length)
    k, k_nyq = ar.shell_wavenumbers(n, length)
    assert k_nyq == 8 and e.shape == z.shape == k.shape == (13,)  # shells 0 .. ceil(√2·8) = 12
    np.testing.assert_allclose(k[shell], shell * TWO_PI / length)
    assert e[shell] == pytest.approx(1 / (4 * (a * a + b * b)), rel=1e-12)
    assert z[shell] == pytest.approx(0.25, rel=1e-12)
    others = np.arange(e.size) != shell
    assert np.abs(e[others]).max() < 1e-15 and np.abs(z[others]).max() < 1e-15


def test_corner_mode_lies_beyond_the_nyquist_shell_and_still_counts_in_parseval():
    # (7, 7) on a 16² grid: |k| = 7√2 = 9.90 → shell 10 > N/2 = 8, one of the corner shells; Z = ¼ sits there.
    x, y = grid_xy(16)
    z = ar.scalar_shell_spectrum(np.cos(7 * x + 7 * y))
    assert z[10] == pytest.approx(0.25, rel=1e-12) and z[:9].sum() < 1e-15


def band_limited(rng, n, batch=3):
    """Random real fields whose rfft2 has no Nyquist row/column (so spectral derivatives are real fields)."""
    f_hat = np.fft.rfft2(rng.standard_normal((batch, n, n)))
    f_hat[..., n // 2, :] = 0
    f_hat[..., :, n // 2] = 0
    return np.fft.irfft2(f_hat, s=(n, n))


@pytest.mark.parametrize("length", [TWO_PI, 3.0])
def test_parseval_sums_for_random_fields(length):
    rng = np.random.default_rng(0)
    n = 16
    omega = band_limited(rng, n)
    # velocity of ω by the stated convention, computed here independently with numpy:
    # ψ̂ = ω̂/|k|² (0 for the mean), u = ∂ψ/∂y, v = −∂ψ/∂x
    kx = np.arange(n // 2 + 1)[None, :] * TWO_PI / length
    ky = np.fft.fftfreq(n, 1 / n)[:, None] * TWO_PI / length
    ksq = kx**2 + ky**2
    psi_hat = np.fft.rfft2(omega) / np.where(ksq > 0, ksq, np.inf)
    u = np.fft.irfft2(1j * ky * psi_hat, s=(n, n))
    v = np.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
    half_u2 = 0.5 * np.mean(u**2 + v**2, axis=(-2, -1))
    half_w2 = 0.5 * np.mean(omega**2, axis=(-2, -1))
    np.testing.assert_allclose(ar.energy_spectrum_from_omega(omega, length).sum(-1), half_u2, rtol=1e-12)
    np.testing.assert_allclose(ar.scalar_shell_spectrum(omega, length).sum(-1), half_w2, rtol=1e-12)
    # from stored velocity: E is exact for any fields; Z of ∂v/∂x − ∂u/∂y gives back ω's spectrum (mean removed)
    np.testing.assert_allclose(ar.energy_spectrum_from_velocity(u, v, length).sum(-1), half_u2, rtol=1e-12)
    z_uv = ar.enstrophy_spectrum_from_velocity(u, v, length)
    z_w = ar.scalar_shell_spectrum(omega - omega.mean(axis=(-2, -1), keepdims=True), length)
    np.testing.assert_allclose(z_uv, z_w, rtol=1e-10, atol=1e-14)
    # any real random field (Nyquist modes included): the sum over all shells, corners too, is ½⟨f²⟩
    f = rng.standard_normal((2, n, n))
    np.testing.assert_allclose(ar.scalar_shell_spectrum(f).sum(-1), 0.5 * np.mean(f**2, axis=(-2, -1)), rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# 1D spectra of wall-bounded data
# ----------------------------------------------------------------------------------------------------------------------


def test_wall_spectrum_of_a_known_x_mode():
    # f = (1 − z) + A cos(2π k0 x / L_x) cos(π z) on z_j = j/8 (uniform, trapezoid weights): the profile 1 − z is
    # the horizontal mean and is removed; per row the mode gives w ½ |A cos(πz)/2|² = A² cos²(πz)/4 at k0, and the
    # trapezoid mean of cos²(πz) = ½ + ½cos(2πz) over z ∈ [0, 1] is exactly ½ (a full period of cos), so S(k0) = A²/8.
    lx, nx, k0, amp = 4.0, 32, 5, 0.7
    x = np.arange(nx) * lx / nx
    z = np.linspace(0, 1, 9)
    f = (1 - z)[:, None] + amp * np.cos(TWO_PI * k0 * x / lx)[None, :] * np.cos(np.pi * z)[:, None]
    s = ar.wall_x_spectrum(f[None], z)[0]
    assert s.shape == (nx // 2 + 1,)
    assert s[k0] == pytest.approx(amp**2 / 8, rel=1e-12)
    assert np.abs(np.delete(s, k0)).max() < 1e-15
    # non-uniform (Chebyshev) heights, mode constant in z: S(k0) = A²/4 whatever the weights
    zc = 0.5 * (1 - np.cos(np.pi * np.arange(9) / 8))
    s2 = ar.wall_x_spectrum(amp * np.cos(TWO_PI * k0 * x / lx)[None, :] + zc[:, None] ** 2, zc)
    assert s2[k0] == pytest.approx(amp**2 / 4, rel=1e-12)
    # Parseval per row, height-weighted: Σ_k S = ½ Σ_j q_j ⟨f'²⟩_x
    g = np.random.default_rng(1).standard_normal((9, nx))
    gp = g - g.mean(axis=1, keepdims=True)
    q = ar.trapezoid_weights(zc)
    assert ar.wall_x_spectrum(g, zc).sum() == pytest.approx(0.5 * np.sum(q * np.mean(gp**2, axis=1)), rel=1e-12)


def test_spectrum_plan_follows_the_grid_boundaries():
    per = Grid(x=np.arange(16) * TWO_PI / 16, y=np.arange(16) * TWO_PI / 16, bc_x="periodic", bc_y="periodic",
               length_x=TWO_PI, length_y=TWO_PI)  # fmt: skip
    plan = ar.spectrum_plan(per, ["omega"], (16, 16))
    assert plan.kind == "periodic" and set(plan.specs) == {"E", "Z"} and plan.k_nyquist == 8
    plan = ar.spectrum_plan(per, ["u", "v", "psi"], (16, 16))
    assert set(plan.specs) == {"E", "Z", "field_u", "field_v", "field_psi"} and "from u,v" in plan.specs["E"][0]
    wall = Grid(x=np.arange(32) * 4 / 32, y=np.linspace(0, 1, 8), bc_x="periodic", bc_y="wall", length_x=4.0,
                length_y=1.0, vertical_name="z")  # fmt: skip
    plan = ar.spectrum_plan(wall, ["buoyancy", "u", "w"], (8, 32))
    assert plan.kind == "wall" and set(plan.specs) == {"E", "field_buoyancy", "field_u", "field_w"}
    assert plan.k_nyquist == 16 and plan.dk == pytest.approx(TWO_PI / 4)
    rect = Grid(x=np.arange(32) * 2 / 32, y=np.arange(16) / 16, bc_x="periodic", bc_y="periodic", length_x=2.0,
                length_y=1.0)  # fmt: skip
    assert ar.spectrum_plan(rect, ["omega"], (16, 32)).kind == "none"


def test_spectral_errors_have_their_defined_values():
    s_true = np.array([9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # k_N = 6: bands (0,2], (2,4], (4,6]
    s_pred = s_true * np.array([1, 10, 10, 1, 1, 0.5, 0.5])
    assert ar.band_edges(6) == (0.0, 2.0, 4.0, 6.0)
    errs = ar.band_relative_errors(s_pred, s_true, 6)
    assert errs == pytest.approx({"low": 9.0, "mid": 0.0, "high": -0.5})
    # LSD: log10 ratios 1, 1, 0, 0, log10 .5 twice over 6 shells (δ = 1e-12 changes them by < 1e-11)
    expect = math.sqrt((2 * 1.0 + 2 * math.log10(0.5) ** 2) / 6)
    assert ar.log_spectral_distance(s_pred, s_true, 6) == pytest.approx(expect, rel=1e-9)
    assert ar.log_spectral_distance(s_true, s_true, 6) == 0.0
    # a shell the truth leaves empty (round-off only, as after dealiasing) is left out of the LSD
    s_true[6], s_pred[6] = 1e-17, 0.5
    expect = math.sqrt((2 * 1.0 + math.log10(0.5) ** 2) / 5)
    assert ar.log_spectral_distance(s_pred, s_true, 6) == pytest.approx(expect, rel=1e-9)
    assert ar.log_spectral_distance(s_pred, np.zeros(7), 6) is None


# ----------------------------------------------------------------------------------------------------------------------
# Pointwise and distribution metrics
# ----------------------------------------------------------------------------------------------------------------------


def test_identical_inputs_give_zero_errors_and_divergences():
    g = np.random.default_rng(2).standard_normal((4, 8, 8))
    assert ar.mse(g, g) == 0 and ar.rel_l2(g, g) == 0 and np.all(ar.vrmse(g, g) == 0)
    edges = ar.histogram_edges(g.min(), g.max(), 10)
    h, n_out = ar.histogram_counts(g, edges)
    assert n_out == 0 and h.sum() == g.size  # the maximum lands in the closed last bin
    assert ar.js_divergence_bits(h, h) == 0 and ar.total_variation(h, h) == 0


def test_disjoint_one_hot_histograms_give_one_bit_and_tv_one():
    assert ar.js_divergence_bits([5, 0, 0], [0, 0, 2]) == pytest.approx(1.0, abs=1e-15)
    assert ar.total_variation([5, 0, 0], [0, 0, 2]) == 1.0
    # half overlap: p = (1, 0), q = (½, ½): JS = ½·log2(1/¾) + ½(½ log2(½/¾) + ½ log2(½/¼)) = 0.3112781..
    js = 0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25 * math.log2(2)
    assert ar.js_divergence_bits([2, 0], [1, 1]) == pytest.approx(js, rel=1e-12)
    assert ar.total_variation([2, 0], [1, 1]) == 0.5


def test_a_constant_shift_gives_the_analytic_errors():
    # values k/8 and the shift c = 1/4 are exact binary fractions: (g + c) − g = c exactly, so MSE = c² exactly
    g = (np.arange(2 * 8 * 8).reshape(2, 8, 8) % 13) / 8.0
    c = 0.25
    assert ar.mse(g + c, g) == c * c
    assert ar.rel_l2(g + c, g) == pytest.approx(math.sqrt(c * c * g.size / np.sum(g * g)), rel=1e-14)
    var = np.sum((g - g.mean(axis=(1, 2), keepdims=True)) ** 2, axis=(1, 2)) / (8 * 8 - 1)  # unbiased, as The Well
    np.testing.assert_allclose(ar.vrmse(g + c, g), c / np.sqrt(var + ar.VRMSE_EPS), rtol=1e-14)


def test_values_outside_the_truth_range_are_clipped_into_the_end_bins():
    edges = ar.histogram_edges(0.0, 1.0, 4)
    counts, n_out = ar.histogram_counts([-3.0, 0.1, 0.6, 1.0, 7.0, 9.0], edges)
    assert counts.tolist() == [2, 0, 1, 3] and n_out == 3


# ----------------------------------------------------------------------------------------------------------------------
# The wall-bounded pipeline on a real Rayleigh–Bénard file (model replaced by a known perturbation)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rb_tiny_file(tmp_path_factory):
    from solvers.rayleigh_benard.solver import RBConfig, run

    cfg = RBConfig(rayleigh=2e4, nx=32, nz=8, dt=0.05, t_total=1.0, save_interval=0.25, ic_amplitude=0.3,
                   fields=("buoyancy", "u", "w"))  # fmt: skip
    return run(cfg, tmp_path_factory.mktemp("rb_tiny"), progress=False)


def test_wall_pipeline_writes_x_spectra_from_the_file_boundaries(rb_tiny_file, tmp_path):
    from dataloaders import GustDataset

    with GustDataset(rb_tiny_file, ["buoyancy", "u", "w"]) as ds:
        truth = ds.read_batch(np.arange(len(ds)))
        grid = ds.grid
    assert grid.bc_y == "wall" and truth.shape == (5, 3, 8, 32)
    recon = truth.astype(np.float64) + 0.125  # a known shift: MSE = 1/64
    plan = ar.spectrum_plan(grid, ["buoyancy", "u", "w"], truth.shape[-2:])
    lo, hi = truth.min(axis=(0, 2, 3)), truth.max(axis=(0, 2, 3))
    edges = [ar.histogram_edges(float(a), float(b), 16) for a, b in zip(lo, hi, strict=True)]
    acc = ar.Accumulator(["buoyancy", "u", "w"], edges, plan, 5, 2, [0, 4])
    for s in (0, 3):  # batches of 3 and 2
        acc.update(s, truth[s : s + 3], recon[s : s + 3], np.stack([truth[s : s + 3], recon[s : s + 3]]))
    m = ar.build_metrics(acc, plan, [(1, 1), (2, 4)], [0, 5], {"checkpoint": "none"}, {"path": "x"}, {"code": "t"})
    ar.write_outputs(tmp_path, acc, plan, m, grid, overwrite=False)
    assert m["spectrum_kind"] == "wall" and m["spectrum_convention"].startswith("wall-bounded in y")
    for f in ("buoyancy", "u", "w"):
        assert m["metrics"][f]["mse"] == pytest.approx(0.125**2, rel=1e-12)
        assert m["prefix_rel_l2"][f][0] == 0.0 and m["prefix_rel_l2"][f][1] == pytest.approx(m["metrics"][f]["rel_l2"])
    # a constant shift does not change the mean-removed x-spectra at all
    assert m["spectral_errors"]["field_u"]["log_spectral_distance"] < 1e-9
    spec = np.load(tmp_path / "spectra.npz")
    expect = np.mean([ar.wall_x_spectrum(truth[i, 1], grid.y) for i in range(5)], axis=0)
    np.testing.assert_allclose(spec["field_u_truth"], expect, rtol=1e-12)
    np.testing.assert_allclose(spec["k"], np.arange(17) * TWO_PI / grid.length_x)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == set(m["files"]) - {"metrics.json"} | {"metrics.json"}
    assert {"panels_buoyancy.png", "panels_u.png", "panels_w.png", "spectra.png", "histograms.png"} <= written


# ----------------------------------------------------------------------------------------------------------------------
# The CLI end to end and bad input
# ----------------------------------------------------------------------------------------------------------------------

METRICS_KEYS = {
    "tool", "fields", "units", "sample_range", "n_samples", "metrics", "histograms", "spectrum_kind",
    "spectrum_convention", "spectrum_k_nyquist", "spectrum_dk", "spectral_band_edges", "spectral_errors",
    "prefix_scales", "prefix_rel_l2", "definitions", "checkpoint", "data", "code", "files",
}  # fmt: skip
FILES = {"metrics.json", "spectra.npz", "histograms.npz", "spectra.png", "histograms.png", "panels_omega.png"}


def args_for(run_dir, data, out, *extra):
    run_dir = Path(run_dir)
    return [
        "--checkpoint", str(run_dir / "model.eqx"), "--config_path", str(run_dir / "config.txt"),
        "--data_path", str(data), "--output_dir", str(out), "--no_progress", "--batch_size", "8", "--n_bins", "20",
        *extra,
    ]  # fmt: skip


def test_cli_end_to_end_on_the_tiny_trained_run(tiny_trained_run, py2d_tiny_data, tmp_path, capsys):
    from models.inference import load_trained, reconstruct_batch

    out = tmp_path / "analysis"
    given = ["--codebook_size", "32", "--scales", "1x1,2x2,4x4,8x8", "--ch", "8"]  # equal to the checkpoint's
    assert ar.main(args_for(tiny_trained_run, py2d_tiny_data, out, *given)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert {p.name for p in out.iterdir()} == FILES
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == METRICS_KEYS and set(m["files"]) == FILES
    assert m["sample_range"] == [0, 18] and m["n_samples"] == 18 and m["spectrum_kind"] == "periodic"
    assert set(m["metrics"]["omega"]) == {"mse", "rel_l2", "vrmse"}
    assert set(m["histograms"]["omega"]) == {
        "n_bins", "range", "js_bits", "js_floor_bits", "tv", "tv_floor", "clipped_fraction",
    }  # fmt: skip
    assert set(m["spectral_errors"]) == {"E", "Z"}
    assert set(m["spectral_errors"]["E"]["band_rel_error"]) == {"low", "mid", "high"}
    assert (
        m["checkpoint"]["checkpoint_sha256"] and m["data"]["size_bytes"] > 0 and m["data"]["grid"]["bc_y"] == "periodic"
    )
    assert m["code"]["code_version"]
    assert m["data"]["source"]["created"] and m["data"]["source"]["solver"] == "solvers.py2d_turbulence"
    prefix = m["prefix_rel_l2"]["omega"]
    assert len(prefix) == len(m["prefix_scales"]) == 4
    # the MSE against an independent reconstruction of the 18 samples (same batch size, so no new compilation)
    trained = load_trained(Path(tiny_trained_run) / "model.eqx", Path(tiny_trained_run) / "config.txt")
    from solvers.common.hdf5_utils import open_dataset

    with open_dataset(py2d_tiny_data) as f:
        truth = f.read("omega")[:, None]
    x = np.asarray(trained.stats.normalize(truth), np.float32)
    x = np.concatenate([x, np.repeat(x[-1:], 6, axis=0)])
    rec = np.concatenate([np.asarray(reconstruct_batch(trained.model, x[i : i + 8])) for i in (0, 8, 16)])[:18]
    rec = trained.stats.denormalize(rec)
    assert m["metrics"]["omega"]["mse"] == pytest.approx(np.mean((rec - truth) ** 2, dtype=np.float64), rel=1e-4)
    # rel L2 by its definition, sqrt(Σ(r − g)² / Σg²), and the all-scales prefix equal to it, both against this
    # independent reconstruction (the analysis takes the reconstruction from its prefix pass)
    want = np.sqrt(np.sum((rec - truth) ** 2, dtype=np.float64) / np.sum(truth**2, dtype=np.float64))
    assert m["metrics"]["omega"]["rel_l2"] == pytest.approx(want, rel=1e-4)
    assert prefix[-1] == pytest.approx(want, rel=1e-4)
    # spectra.npz: Parseval against the stored samples, over all shells
    spec = np.load(out / "spectra.npz")
    assert spec["Z_truth"].sum() == pytest.approx(0.5 * np.mean(truth.astype(np.float64) ** 2), rel=1e-10)
    hist = np.load(out / "histograms.npz")
    assert hist["omega_truth"].sum() == truth.size and hist["omega_edges"].size == 21
    assert hist["omega_truth_half1"].sum() == 9 * 256 and hist["omega_truth_half2"].sum() == 9 * 256
    # a second run into the now non-empty folder needs --overwrite; a test split [10, 18) without panels:
    # the old panels go (a folder holds one analysis), the user's own files stay
    (out / "notes.txt").write_text("mine")
    args = args_for(tiny_trained_run, py2d_tiny_data, out, "--sample_start", "10", "--n_panel", "0", "--overwrite")
    assert ar.main(args) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["sample_range"] == [10, 18] and m2["n_samples"] == 8
    assert not list(out.glob("panels_*.png")) and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([*m2["files"], "notes.txt"])
    # more panels than samples: one per sample (the request used to be built first: 1e9 panels exhausted the memory)
    args = args_for(tiny_trained_run, py2d_tiny_data, out, "--sample_start", "16", "--n_panel", "1000000000")
    assert ar.main([*args, "--overwrite"]) == 0 and (out / "panels_omega.png").exists()


def test_an_overwrite_killed_midway_never_leaves_the_old_metrics_beside_new_arrays(
    tiny_trained_run, py2d_tiny_data, tmp_path, monkeypatch
):
    out = tmp_path / "analysis"
    assert ar.main(args_for(tiny_trained_run, py2d_tiny_data, out, "--sample_stop", "9", "--n_panel", "0")) == 0
    old_spectra = (out / "spectra.npz").read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ar, "plot_histograms", killed)  # killed after the new arrays, before metrics.json
    args = args_for(tiny_trained_run, py2d_tiny_data, out, "--sample_start", "9", "--n_panel", "0", "--overwrite")
    assert ar.main(args) == 130
    assert (out / "spectra.npz").read_bytes() != old_spectra  # replaced ...
    assert not (out / "metrics.json").exists()  # ... and the folder says it is unfinished


@pytest.fixture(scope="module")
def psi_only_file(tmp_path_factory):
    from solvers.py2d_turbulence.solver import Py2DConfig, run

    cfg = Py2DConfig(NX=16, dt=0.01, t_total=0.1, save_interval=0.05, fields=("psi",))
    return run(cfg, tmp_path_factory.mktemp("psi_only"), progress=False)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing_checkpoint", "--checkpoint"),
        ("contradicting_override", "contradicts the checkpoint"),
        ("contradicting_scales", "scales"),
        ("range_outside", "sample_stop=99"),
        ("start_outside", "sample_start=40"),
        ("fields_mismatch", "do not match the model's fields"),
        ("field_missing", "'omega' not in"),
        ("bad_bins", "--n_bins"),
        ("output_not_empty", "pass --overwrite"),
        ("output_below_a_file", "cannot be made"),  # found before the model pass, not when the folder is made after it
        ("output_empty", "--output_dir must not be empty"),
        ("nan_in_stored_sample_7", "non-finite values (NaN/inf) in samples 5..8 (stored indices)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    case, needle, tiny_trained_run, py2d_tiny_data, psi_only_file, tmp_path, capsys
):
    out = tmp_path / "out"
    data, extra = py2d_tiny_data, []
    run_dir = Path(tiny_trained_run)
    if case == "missing_checkpoint":
        run_dir = tmp_path / "nowhere"
        (run_dir).mkdir()
        (run_dir / "config.txt").write_text((Path(tiny_trained_run) / "config.txt").read_text())
    extra = {
        "contradicting_override": ["--codebook_size", "64"],
        "contradicting_scales": ["--scales", "1x1,8x8"],
        "range_outside": ["--sample_stop", "99"],
        "start_outside": ["--sample_start", "40"],
        "fields_mismatch": ["--fields", "psi"],
        "bad_bins": ["--n_bins", "0"],
    }.get(case, [])
    if case == "field_missing":
        data = psi_only_file
    if case == "output_not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    if case == "output_below_a_file":
        (tmp_path / "afile").write_text("")
        out = tmp_path / "afile" / "out"
    if case == "nan_in_stored_sample_7":
        data = tmp_path / "nan.h5"
        shutil.copy(py2d_tiny_data, data)
        with h5py.File(data, "r+") as f:
            f["fields/omega"][7, 3, 3] = np.nan
        extra = ["--sample_start", "5", "--batch_size", "4"]  # blocks of 4 from stored sample 5: 5..8 holds it
    try:
        code = ar.main(args_for(run_dir, data, "" if case == "output_empty" else out, *extra))
    except SystemExit as stop:  # argparse's own errors (OneLineArgumentParser: one line, exit 2)
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(ar.PROG) and needle in err, err
    if case == "output_not_empty":
        assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    else:
        assert not out.exists()
