r"""Reconstruction analysis of a trained VQ-VAE: error metrics, spectra, histograms, per-scale prefix errors, plots.

    python -m models.analyze_reconstruction --checkpoint runs/x/model.eqx --config_path runs/x/config.txt \
        --data_path data.h5 --output_dir ./analysis_output [--sample_start 4000 --sample_stop 5000]

The samples ``[sample_start, sample_stop)`` are reconstructed through the model (``models.inference``: batched, on
the GPU when present) and compared with the ground truth in physical (denormalised) units, per field. Two passes
over the data, both streaming (memory is bounded by one batch plus the accumulators, for any file size):

1. the ground-truth range of each field (``GustDataset.read_batch`` in blocks), which fixes the histogram bins;
2. the model pass: ``prefix_batch`` per batch (its last entry, all K scales, is the reconstruction); errors,
   spectra and histograms are accumulated in float64.

Outputs in ``--output_dir`` (refused if it exists and is not empty, unless ``--overwrite``; every file is written
atomically): ``metrics.json``, ``spectra.npz``, ``histograms.npz``, ``spectra.png``, ``histograms.png`` and
``panels_<field>.png``.

Metric definitions (g = ground truth, r = reconstruction, sums over samples s and grid points):

- MSE = mean (r − g)²;  relative L2 = sqrt(Σ (r − g)² / Σ g²) (pooled over all samples);
- VRMSE (The Well: Ohana et al., "The Well: a large-scale collection of diverse physics simulations for machine
  learning", NeurIPS 2024 Datasets & Benchmarks, metrics section) = mean_s sqrt(MSE_s / (Var_s(g) + ε)), ε = 1e-7,
  with MSE_s and Var_s the spatial mean square error and spatial variance of sample s (the unbiased variance, ÷ (n − 1)
  over the n grid points, as The Well's code computes it with torch.std's default);
- histograms: ``n_bins`` equal bins over [min g, max g] of the analysed samples, shared by g and r; values of r
  outside are counted in the end bins (clipped fraction reported). JS divergence in bits (log base 2, in [0, 1])
  and total variation TV = ½ Σ|p − q| of the two probability mass functions; noise floor: the same two measures
  between the first and the second half of the analysed ground-truth samples;
- spectra: see :data:`PERIODIC_CONVENTION` and :data:`WALL_CONVENTION`; spectral errors over the shells
  1 … k_N (k_N the Nyquist shell): log-spectral distance LSD = sqrt(mean_k [log10((S_r(k) + δ)/(S_g(k) + δ))]²),
  δ = 1e-12 · max_k S_g(k), the mean over the shells the truth populates (S_g(k) > δ; shells emptied by dealiasing
  hold only round-off and are left out; energy the reconstruction puts there shows in the high band), and the
  signed relative error of the band sums Σ_band S_r / Σ_band S_g − 1 in the bands low = (0, k_N/3],
  mid = (k_N/3, 2k_N/3], high = (2k_N/3, k_N];
- prefix errors: relative L2 of the reconstruction decoded from the first k scales only, k = 1 … K.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.atomic import atomic_text, atomic_write, file_sha256, remove_temporaries
from solvers.common.cli import (
    OneLineArgumentParser,
    add_trained_run_flags,
    exit_process,
    int_list,
    output_dir_problem,
    positive_int,
    scale_list,
    tool_main,
)
from solvers.py2d_turbulence import py2d_core

from .inference import (
    denormalize,
    load_trained,
    normalized_batches,
    open_matching,
    prefix_batch,
)
from .models import UPSAMPLE_METHODS

PROG = "python -m models.analyze_reconstruction"
VRMSE_EPS = 1e-7  # The Well's default ε in VRMSE
LSD_REL_FLOOR = 1e-12
ARCH_KEYS = (
    "ch",
    "ch_mult",
    "num_res_blocks",
    "num_groups",
    "embed_dim",
    "codebook_size",
    "scales",
    "beta",
    "phi_ratio",
    "phi_kernel",
    "upsample",
)
VORTICITY_NAMES = ("omega", "vorticity")
METRICS_KEYS = (  # top level of metrics.json
    "tool",
    "fields",
    "units",
    "sample_range",
    "n_samples",
    "metrics",  # field -> mse, rel_l2, vrmse
    "histograms",  # field -> n_bins, range, js_bits, js_floor_bits, tv, tv_floor, clipped_fraction
    "spectrum_kind",  # "periodic", "wall" or "none"
    "spectrum_convention",
    "spectrum_k_nyquist",
    "spectrum_dk",
    "spectral_band_edges",
    "spectral_errors",  # E, Z, field_<f> -> label, log_spectral_distance, band_rel_error{low,mid,high}, totals, ...
    "prefix_scales",
    "prefix_rel_l2",  # field -> [rel_l2 of the first k scales, k = 1..K]
    "definitions",
    "checkpoint",  # TrainedModel.provenance()
    "data",  # path, size_bytes, mtime_utc, sha256 (with --hash_data), source (GustFile.identity), grid
    "code",  # solvers.common.hdf5_utils.provenance()
    "files",
)
METRICS_FILE, SPECTRA_FILE, HIST_FILE = "metrics.json", "spectra.npz", "histograms.npz"
SPECTRA_PLOT, HIST_PLOT = "spectra.png", "histograms.png"

PERIODIC_CONVENTION = (
    "doubly periodic square grid N x N of side L: shell sums S(k) = sum over modes with round(|k|/dk) = k of the "
    "mode's share of 1/2<f^2> (rfft2 Parseval, so sum over ALL shells k = 0..ceil(sqrt(2) N/2) equals 1/2<f^2> "
    "exactly), dk = 2pi/L, k in units of dk; E(k) for f = velocity (sum = 1/2<|u|^2>), Z(k) for f = vorticity "
    "(sum = 1/2<omega^2>); velocity from stored u,v when present, else from omega via psi_hat = omega_hat/|k|^2 "
    "(lap psi = -omega), u = dpsi/dy, v = -dpsi/dx (mean flow not recoverable, k = 0 of E is 0); first derivatives "
    "are 0 at the Nyquist wavenumber N/2 (its sine vanishes on the grid); sample-averaged; "
    "the Nyquist shell is k_N = N/2: plots and spectral errors use shells 1..k_N, the corner modes (shells > k_N) "
    "stay in spectra.npz and their share is reported as corner_fraction"
)
WALL_CONVENTION = (
    "wall-bounded in y (periodic x of length L_x): 1D spectra along x only; per row the horizontal mean is removed, "
    "S(k) = w_k/2 |f_hat_k / N_x|^2 (w_k = 1 at k = 0 and k = N_x/2, else 2) so sum_k S(k) = 1/2 <f'^2>_x, "
    "then averaged over height with trapezoidal weights in y (normalised to 1) and over samples; k in units of "
    "2pi/L_x, Nyquist k_N = N_x/2; E(k) = S_u + S_w when both velocity components are stored; no Z(k)"
)


# ======================================================================================================================
# Pointwise and distribution metrics (pure, numpy float64)
# ======================================================================================================================


def mse(pred, truth) -> float:
    """Mean square error, accumulated in float64."""
    d = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.mean(d * d))


def rel_l2(pred, truth) -> float:
    """sqrt(Σ (pred − truth)² / Σ truth²) over all elements (inf if truth is identically 0 and pred is not)."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    num, den = float(np.sum((p - t) ** 2)), float(np.sum(t * t))
    return math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)


def vrmse(pred, truth, eps: float = VRMSE_EPS) -> np.ndarray:
    """Per-sample VRMSE over the last two (spatial) axes: sqrt(mean (p − t)² / (Var(t) + eps)) (The Well), with the
    unbiased variance (ddof 1) as in The Well's code."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    err = np.mean((p - t) ** 2, axis=(-2, -1))
    var = np.var(t, axis=(-2, -1), ddof=1)
    return np.sqrt(err / (var + eps))


def histogram_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` equal-width float64 edges over [lo, hi] (widened by ±0.5 ulp-safe margin if lo == hi)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"histogram range must be finite with lo <= hi (got {lo!r}, {hi!r})")
    if hi == lo:
        pad = max(abs(lo) * 1e-6, 1e-12)
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, n_bins + 1)


def histogram_counts(values, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of ``values`` in ``edges`` with out-of-range values clipped into the end bins; returns (counts, n_out)."""
    v = np.asarray(values, np.float64).ravel()
    lo, hi = edges[0], edges[-1]
    n_out = int(np.count_nonzero((v < lo) | (v > hi)))
    counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
    return counts.astype(np.int64), n_out


def _pmf(counts) -> np.ndarray:
    c = np.asarray(counts, np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("histogram has no counts")
    return c / total


def js_divergence_bits(counts_p, counts_q) -> float:
    """Jensen–Shannon divergence of two histograms (normalised to PMFs), in bits: in [0, 1], 0 iff equal PMFs."""
    p, q = _pmf(counts_p), _pmf(counts_q)
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0)


def total_variation(counts_p, counts_q) -> float:
    """TV distance ½ Σ |p − q| of two histograms normalised to PMFs, in [0, 1]."""
    return float(0.5 * np.sum(np.abs(_pmf(counts_p) - _pmf(counts_q))))


# ======================================================================================================================
# Spectra (pure; periodic ones through py2d_core's Parseval-exact shell sums, in float64)
# ======================================================================================================================


@functools.lru_cache(maxsize=4)
def _spectral_grid(n: int) -> py2d_core.SpectralGrid:
    with jax.enable_x64(True):
        return py2d_core.SpectralGrid(n, dtype=jnp.float64)


def check_periodic_square(shape: tuple[int, int], length_x: float, length_y: float) -> str | None:
    """None if shell spectra apply to this doubly periodic grid, else the reason they do not."""
    h, w = shape
    if h != w:
        return f"shell spectra need a square grid (got {h}x{w})"
    if not math.isclose(length_x, length_y, rel_tol=1e-9):
        return f"shell spectra need equal side lengths (got L_x={length_x:g}, L_y={length_y:g})"
    if w < 8 or w % 2:
        return f"shell spectra need an even grid size >= 8 (got {w})"
    return None


def _hat(f, n: int):
    f = jnp.asarray(np.asarray(f, np.float64))
    if f.shape[-2:] != (n, n):
        raise ValueError(f"field shape {f.shape[-2:]} is not the grid {n}x{n}")
    return py2d_core.to_spectral(f)


def shell_wavenumbers(n: int, length: float = 2 * math.pi) -> tuple[np.ndarray, int]:
    """(k of every shell 0 … ceil(√2 N/2) in physical units k·2π/L, index of the Nyquist shell N/2)."""
    n_shells = math.ceil(math.sqrt(2.0) * n / 2) + 1  # as py2d_core._shell_sum
    return np.arange(n_shells) * (2 * math.pi / length), n // 2


def scalar_shell_spectrum(f, length: float = 2 * math.pi) -> np.ndarray:
    """Shell sums of ½|f̂|² (N⁴-normalised, rfft multiplicities): Σ_k S(k) = ½⟨f²⟩ exactly. (..., n_shells)."""
    del length  # ½⟨f²⟩ of a scalar does not depend on the wavenumber units
    f = np.asarray(f)
    n = f.shape[-1]
    with jax.enable_x64(True):
        # py2d_core.enstrophy_spectrum is exactly the shell sum of ½|ĝ|² of its argument ĝ, for any scalar field
        _, s = py2d_core.enstrophy_spectrum(_hat(f, n), _spectral_grid(n))
        return np.asarray(s, np.float64)


def energy_spectrum_from_omega(omega, length: float = 2 * math.pi) -> np.ndarray:
    """E(k) from vorticity through the streamfunction ψ̂ = ω̂/|k|²; Σ_k E(k) = ½⟨|u|²⟩ (without the mean flow)."""
    omega = np.asarray(omega)
    n = omega.shape[-1]
    with jax.enable_x64(True):
        _, e = py2d_core.energy_spectrum(_hat(omega, n), _spectral_grid(n))
        # py2d_core uses integer wavenumbers (L = 2π); for side L, |k|² scales by (2π/L)², so E by (L/2π)²
        return np.asarray(e, np.float64) * (length / (2 * math.pi)) ** 2


def energy_spectrum_from_velocity(u, v, length: float = 2 * math.pi) -> np.ndarray:
    """E(k) = S_u(k) + S_v(k) from stored velocity components; Σ_k E(k) = ½⟨u² + v²⟩."""
    return scalar_shell_spectrum(u, length) + scalar_shell_spectrum(v, length)


def enstrophy_spectrum_from_velocity(u, v, length: float = 2 * math.pi) -> np.ndarray:
    """Z(k) of ω = ∂v/∂x − ∂u/∂y (spectral derivatives); Σ_k Z(k) = ½⟨ω²⟩."""
    u, v = np.asarray(u), np.asarray(v)
    n = u.shape[-1]
    with jax.enable_x64(True):
        g = _spectral_grid(n)
        _, z = py2d_core.enstrophy_spectrum(py2d_core.uv2omega(_hat(u, n), _hat(v, n), g), g)
        return np.asarray(z, np.float64) * (2 * math.pi / length) ** 2


def trapezoid_weights(y) -> np.ndarray:
    """Trapezoidal quadrature weights of the points ``y``, normalised to sum to 1 (height average)."""
    y = np.asarray(y, np.float64)
    if y.size == 1:
        return np.ones(1)
    d = np.abs(np.diff(y))
    w = np.zeros_like(y)
    w[:-1] += 0.5 * d
    w[1:] += 0.5 * d
    return w / w.sum()


def wall_x_spectrum(f, y) -> np.ndarray:
    """1D x-spectrum of wall-bounded data (..., H, W) on heights ``y`` (H,): (..., W//2 + 1).

    Per row the horizontal mean is removed; S(k) = w_k ½|f̂_k/W|² (w_k = 1 for k = 0 and k = W/2, else 2) sums to
    ½⟨f'²⟩_x; rows are averaged with :func:`trapezoid_weights`. k counts 2π/L_x.
    """
    f = np.asarray(f, np.float64)
    w_pts = f.shape[-1]
    fp = f - f.mean(axis=-1, keepdims=True)
    dens = 0.5 * np.abs(np.fft.rfft(fp, axis=-1) / w_pts) ** 2
    mult = np.full(dens.shape[-1], 2.0)
    mult[0] = 1.0
    if w_pts % 2 == 0:
        mult[-1] = 1.0
    q = trapezoid_weights(y)
    if q.size != f.shape[-2]:
        raise ValueError(f"{q.size} heights for fields with {f.shape[-2]} rows")
    return np.einsum("...hk,h->...k", dens * mult, q)


def band_edges(k_nyquist: int) -> tuple[float, float, float, float]:
    """Edges (0, k_N/3, 2k_N/3, k_N) of the low/mid/high bands (shell indices; a band is (lo, hi])."""
    return (0.0, k_nyquist / 3, 2 * k_nyquist / 3, float(k_nyquist))


def log_spectral_distance(s_pred, s_true, k_nyquist: int) -> float | None:
    """sqrt(mean of [log10((S_p + δ)/(S_t + δ))]²) over the shells 1..k_N with S_t > δ, δ = 1e-12 · max S_t
    (None if the truth populates none of them)."""
    p = np.asarray(s_pred, np.float64)[1 : k_nyquist + 1]
    t = np.asarray(s_true, np.float64)[1 : k_nyquist + 1]
    delta = LSD_REL_FLOOR * float(t.max(initial=0.0))
    used = t > delta
    if not used.any():
        return None
    return float(np.sqrt(np.mean(np.log10((p[used] + delta) / (t[used] + delta)) ** 2)))


def band_relative_errors(s_pred, s_true, k_nyquist: int) -> dict[str, float | None]:
    """Signed Σ_band S_pred / Σ_band S_true − 1 for the bands of :func:`band_edges` (None for an empty band)."""
    p, t = np.asarray(s_pred, np.float64), np.asarray(s_true, np.float64)
    k = np.arange(p.size)
    e = band_edges(k_nyquist)
    out = {}
    for name, lo, hi in zip(("low", "mid", "high"), e[:-1], e[1:], strict=True):
        sel = (k > lo) & (k <= hi)
        tt = float(t[sel].sum())
        out[name] = None if not sel.any() or tt <= 0 else float(p[sel].sum()) / tt - 1.0
    return out


# ======================================================================================================================
# Which spectra a file gets
# ======================================================================================================================


@dataclasses.dataclass(frozen=True)
class SpectrumPlan:
    """The spectra computed for a grid and field list: name → (label, function of a {field: (B, H, W)} dict)."""

    kind: str  # "periodic", "wall" or "none"
    convention: str
    k: np.ndarray | None  # physical wavenumber of each spectrum entry
    k_nyquist: int
    dk: float
    specs: dict  # name -> (label, fn)


def spectrum_plan(grid, fields: Sequence[str], shape: tuple[int, int]) -> SpectrumPlan:
    """Spectra for this file, from its boundary conditions (``grid.bc_x``, ``grid.bc_y``, never guessed)."""
    fields = list(fields)
    vort = next((f for f in VORTICITY_NAMES if f in fields), None)
    vel = next(((a, b) for a, b in (("u", "v"), ("u", "w")) if a in fields and b in fields), None)
    specs: dict = {}
    if grid.bc_x == "periodic" and grid.bc_y == "periodic":
        why = check_periodic_square(shape, grid.length_x, grid.length_y)
        if why:
            return SpectrumPlan("none", f"no spectra: {why}", None, 0, 0.0, {})
        length = grid.length_x
        if vel:
            specs["E"] = (
                f"E(k), kinetic energy from {vel[0]},{vel[1]}",
                lambda d: energy_spectrum_from_velocity(d[vel[0]], d[vel[1]], length),
            )
        elif vort:
            specs["E"] = (
                f"E(k), kinetic energy from {vort} via ψ",
                lambda d: energy_spectrum_from_omega(d[vort], length),
            )
        if vort:
            specs["Z"] = (f"Z(k), enstrophy of {vort}", lambda d: scalar_shell_spectrum(d[vort], length))
        elif vel:
            specs["Z"] = (
                f"Z(k), enstrophy of ∂{vel[1]}/∂x − ∂{vel[0]}/∂y",
                lambda d: enstrophy_spectrum_from_velocity(d[vel[0]], d[vel[1]], length),
            )
        for f in fields:
            if f != vort:
                specs[f"field_{f}"] = (f"½|{f}|² shell spectrum", functools.partial(_field_spec, f, length))
        k, k_nyq = shell_wavenumbers(shape[1], length)
        return SpectrumPlan("periodic", PERIODIC_CONVENTION, k, k_nyq, 2 * math.pi / length, specs)
    if grid.bc_x == "periodic" and grid.bc_y == "wall":
        y = np.asarray(grid.y)
        if vel:
            specs["E"] = (
                f"E(k_x) = S_{vel[0]} + S_{vel[1]}",
                lambda d: wall_x_spectrum(d[vel[0]], y) + wall_x_spectrum(d[vel[1]], y),
            )
        for f in fields:
            specs[f"field_{f}"] = (f"1D x-spectrum of {f}", functools.partial(_wall_spec, f, y))
        dk = 2 * math.pi / grid.length_x
        w = shape[1]
        return SpectrumPlan("wall", WALL_CONVENTION, np.arange(w // 2 + 1) * dk, w // 2, dk, specs)
    return SpectrumPlan("none", f"no spectra: x boundary is {grid.bc_x!r} (needs a periodic x)", None, 0, 0.0, {})


def _field_spec(name, length, d):
    return scalar_shell_spectrum(d[name], length)


def _wall_spec(name, y, d):
    return wall_x_spectrum(d[name], y)


# ======================================================================================================================
# Streaming accumulation
# ======================================================================================================================


class Accumulator:
    """float64 running sums of every metric over batches of (B, C, H, W) truth / reconstruction."""

    def __init__(self, fields, edges, plan: SpectrumPlan, n_items: int, n_scales: int, panel_items, sample_start=0):
        self.fields = list(fields)
        self.panel_offset = sample_start  # stored sample index of item 0 (for plot titles)
        self.edges = edges
        self.plan = plan
        self.n_items = n_items
        self.half = n_items // 2
        c = len(self.fields)
        self.n = 0
        self.sse = np.zeros(c)
        self.sum_g2 = np.zeros(c)
        self.vrmse_sum = np.zeros(c)
        self.prefix_sse = np.zeros((n_scales, c))
        self.h_truth = [np.zeros(len(e) - 1, np.int64) for e in edges]
        self.h_recon = [np.zeros(len(e) - 1, np.int64) for e in edges]
        self.h_half = [[np.zeros(len(e) - 1, np.int64) for e in edges] for _ in range(2)]
        self.n_clipped = np.zeros(c, np.int64)
        self.spec_truth = {name: 0.0 for name in plan.specs}
        self.spec_recon = {name: 0.0 for name in plan.specs}
        self.panel_items = list(panel_items)
        self.panels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def update(self, start: int, truth: np.ndarray, recon: np.ndarray, prefixes: np.ndarray | None) -> None:
        g, r = truth.astype(np.float64), recon.astype(np.float64)
        b = g.shape[0]
        if not np.all(np.isfinite(r)):
            where = f"items {start}..{start + b - 1} of the selection"
            raise ValueError(f"the model's reconstruction of {where} has NaN/inf values: a broken checkpoint?")
        self.n += b
        d = r - g
        self.sse += np.sum(d * d, axis=(0, 2, 3))
        self.sum_g2 += np.sum(g * g, axis=(0, 2, 3))
        self.vrmse_sum += vrmse(r, g).sum(axis=0)
        if prefixes is not None:
            p = prefixes.astype(np.float64)
            self.prefix_sse += np.sum((p - g[None]) ** 2, axis=(1, 3, 4))
        items = np.arange(start, start + b)
        for c in range(len(self.fields)):
            ht, _ = histogram_counts(g[:, c], self.edges[c])
            hr, out = histogram_counts(r[:, c], self.edges[c])
            self.h_truth[c] += ht
            self.h_recon[c] += hr
            self.n_clipped[c] += out
            for h, sel in ((0, items < self.half), (1, items >= self.half)):
                if sel.any():
                    self.h_half[h][c] += histogram_counts(g[sel, c], self.edges[c])[0]
        gd = {f: g[:, c] for c, f in enumerate(self.fields)}
        rd = {f: r[:, c] for c, f in enumerate(self.fields)}
        for name, (_, fn) in self.plan.specs.items():
            self.spec_truth[name] = self.spec_truth[name] + fn(gd).sum(axis=0)
            self.spec_recon[name] = self.spec_recon[name] + fn(rd).sum(axis=0)
        for i in self.panel_items:
            if start <= i < start + b:
                self.panels[i] = (truth[i - start].copy(), recon[i - start].copy())

    def spectra(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {k: (self.spec_truth[k] / self.n, self.spec_recon[k] / self.n) for k in self.plan.specs}


# ======================================================================================================================
# The run
# ======================================================================================================================


def check_output_dir(path: str, overwrite: bool) -> None:
    """Before any work (the folder is made after the model pass): refuse an unusable or non-empty folder."""
    if problem := output_dir_problem(path, writable=True):
        raise ValueError(problem)
    if Path(path).is_dir() and any(Path(path).iterdir()) and not overwrite:
        raise FileExistsError(f"--output_dir {path} exists and is not empty; pass --overwrite to replace its files")


def gt_ranges(ds, block: int, progress: bool, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-field (min, max) of the ground truth over every item of ``ds`` (pass 1, ``block`` items per read);
    ``first`` is the stored index of item 0 (for the error message)."""
    from tqdm import tqdm

    c = len(ds.fields)
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    n = len(ds)
    with tqdm(total=n, disable=not progress, desc="truth range", unit="sample") as bar:
        for s in range(0, n, block):
            x = ds.read_batch(np.arange(s, min(s + block, n)))
            if not np.all(np.isfinite(x)):
                stored = f"{first + s}..{first + min(s + block, n) - 1}"
                raise ValueError(f"--data_path has non-finite values (NaN/inf) in samples {stored} (stored indices)")
            lo = np.minimum(lo, x.min(axis=(0, 2, 3)))
            hi = np.maximum(hi, x.max(axis=(0, 2, 3)))
            bar.update(x.shape[0])
    return lo, hi


def _pad(x: jax.Array, size: int) -> jax.Array:
    """Repeat the last sample so every model call sees the same batch size (one compilation)."""
    if x.shape[0] == size:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], axis=0)])


def analyze(args: argparse.Namespace, argv: list[str]) -> Path:
    """Body of the CLI; returns the output folder. ``ValueError`` / ``FileExistsError`` mean bad input."""
    from solvers.common.hdf5_utils import provenance as code_provenance

    check_output_dir(args.output_dir, args.overwrite)
    out = Path(args.output_dir)
    if args.n_bins < 2:
        raise ValueError(f"--n_bins must be >= 2 (got {args.n_bins})")
    if args.n_panel < 0:
        raise ValueError(f"--n_panel must be >= 0 (got {args.n_panel})")
    overrides = {k: getattr(args, k) for k in ARCH_KEYS if getattr(args, k) is not None}
    trained = load_trained(args.checkpoint, args.config_path, overrides)
    progress = not args.no_progress
    kw = dict(sample_start=args.sample_start, sample_stop=args.sample_stop, fields=args.fields)
    with open_matching(trained, args.data_path, **kw) as ds:
        n = len(ds)
        grid = ds.grid
        plan = spectrum_plan(grid, trained.fields, tuple(ds.shape))
        lo, hi = gt_ranges(ds, args.batch_size, progress, args.sample_start)
        edges = [histogram_edges(float(a), float(b), args.n_bins) for a, b in zip(lo, hi, strict=True)]
        panel_items = sorted(set(np.rint(np.linspace(0, n - 1, min(args.n_panel, n))).astype(int).tolist()))
        n_scales = len(trained.config.scales)
        acc = Accumulator(trained.fields, edges, plan, n, n_scales, panel_items, args.sample_start)
        bs = min(args.batch_size, n)
        for start, x in normalized_batches(trained, ds, args.batch_size, progress=progress, desc="reconstruct"):
            b = x.shape[0]
            xp = _pad(x, bs)
            pre = denormalize(trained, prefix_batch(trained.model, xp))[:, :b]
            recon = pre[-1]  # all K scales: the model's reconstruction (decode_indices of every scale)
            truth = ds.read_batch(np.arange(start, start + b))
            acc.update(start, truth, recon, pre)
        stat = Path(args.data_path).stat()
        data_prov = {
            "path": str(Path(args.data_path).resolve()),
            "size_bytes": stat.st_size,
            "mtime_utc": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "sha256": file_sha256(args.data_path) if args.hash_data else None,
            "source": ds.file(0).identity(),  # the run that wrote it (created, code version, solver, samples)
            "grid": {
                "shape": list(ds.shape),
                "bc_x": grid.bc_x,
                "bc_y": grid.bc_y,
                "length_x": grid.length_x,
                "length_y": grid.length_y,
                "vertical_name": grid.vertical_name,
            },
        }
    sample_range = [args.sample_start, args.sample_start + n]
    code = code_provenance([*PROG.split(), *argv])
    metrics = build_metrics(acc, plan, trained.config.scales, sample_range, trained.provenance(), data_prov, code)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, acc, plan, metrics, grid, overwrite=args.overwrite)
    return out


def build_metrics(
    acc: Accumulator, plan: SpectrumPlan, scales, sample_range, checkpoint_prov: dict, data_prov: dict, code: dict
) -> dict:
    """The metrics.json content (see :data:`METRICS_KEYS`) from a finished :class:`Accumulator`."""
    fields = acc.fields
    per_field, hists = {}, {}
    for c, f in enumerate(fields):
        size = acc.h_truth[c].sum()  # = number of values of this field
        per_field[f] = {
            "mse": float(acc.sse[c] / size),
            "rel_l2": float(math.sqrt(acc.sse[c] / acc.sum_g2[c])) if acc.sum_g2[c] > 0 else None,
            "vrmse": float(acc.vrmse_sum[c] / acc.n),
        }
        floor = acc.half >= 1 and acc.h_half[0][c].sum() > 0 and acc.h_half[1][c].sum() > 0
        hists[f] = {
            "n_bins": len(acc.edges[c]) - 1,
            "range": [float(acc.edges[c][0]), float(acc.edges[c][-1])],
            "js_bits": js_divergence_bits(acc.h_truth[c], acc.h_recon[c]),
            "js_floor_bits": js_divergence_bits(acc.h_half[0][c], acc.h_half[1][c]) if floor else None,
            "tv": total_variation(acc.h_truth[c], acc.h_recon[c]),
            "tv_floor": total_variation(acc.h_half[0][c], acc.h_half[1][c]) if floor else None,
            "clipped_fraction": float(acc.n_clipped[c] / size),
        }
    spec_err = {}
    for name, (s_t, s_r) in acc.spectra().items():
        total_t, total_r = float(s_t.sum()), float(s_r.sum())
        kn = plan.k_nyquist
        spec_err[name] = {
            "label": plan.specs[name][0],
            "log_spectral_distance": log_spectral_distance(s_r, s_t, kn),
            "band_rel_error": band_relative_errors(s_r, s_t, kn),
            "total_truth": total_t,
            "total_recon": total_r,
            "corner_fraction_truth": float(s_t[kn + 1 :].sum() / total_t) if total_t > 0 else None,
            "corner_fraction_recon": float(s_r[kn + 1 :].sum() / total_r) if total_r > 0 else None,
        }
    prefix = {
        f: [math.sqrt(float(sse) / acc.sum_g2[c]) if acc.sum_g2[c] > 0 else None for sse in acc.prefix_sse[:, c]]
        for c, f in enumerate(fields)
    }
    return {
        "tool": PROG,
        "fields": list(fields),
        "units": "physical (denormalised) units of each stored field",
        "sample_range": sample_range,
        "n_samples": acc.n,
        "metrics": per_field,
        "histograms": hists,
        "spectrum_kind": plan.kind,
        "spectrum_convention": plan.convention,
        "spectrum_k_nyquist": plan.k_nyquist,
        "spectrum_dk": plan.dk,
        "spectral_band_edges": list(band_edges(plan.k_nyquist)) if plan.specs else None,
        "spectral_errors": spec_err,
        "prefix_scales": [list(s) for s in scales],
        "prefix_rel_l2": prefix,
        "definitions": DEFINITIONS,
        "checkpoint": checkpoint_prov,
        "data": data_prov,
        "code": code,
    }


DEFINITIONS = {
    "mse": "mean over samples and grid points of (r - g)^2, physical units squared",
    "rel_l2": "sqrt(sum (r - g)^2 / sum g^2) over all samples and grid points",
    "vrmse": "mean over samples of sqrt(mean_xy (r - g)^2 / (var_xy(g) + 1e-7)), var with ddof 1 (The Well, Ohana "
    "et al. 2024)",
    "histograms": "bins: n_bins equal bins over [min g, max g] of the analysed samples, shared by g and r; r values "
    "outside are clipped into the end bins (clipped_fraction); js in bits (log2, in [0,1]); tv = 1/2 sum|p - q|; "
    "*_floor: the same between the first and second half of the analysed ground-truth samples",
    "log_spectral_distance": "sqrt(mean of log10((S_r + d)/(S_g + d))^2 over the shells 1..k_N with S_g > d), "
    "d = 1e-12 max S_g (shells the truth leaves empty, e.g. by dealiasing, are left out)",
    "band_rel_error": "sum_band S_r / sum_band S_g - 1 for bands (0, k_N/3], (k_N/3, 2k_N/3], (2k_N/3, k_N]",
    "corner_fraction": "share of the spectrum's total in shells beyond the Nyquist shell k_N (periodic grids)",
    "prefix_rel_l2": "rel_l2 of the reconstruction decoded from the first k scales only, k = 1..K",
}


# ======================================================================================================================
# Writing and plotting
# ======================================================================================================================


def _npz(path: Path, arrays: dict, overwrite: bool) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write, overwrite=overwrite)


def write_outputs(out: Path, acc: Accumulator, plan: SpectrumPlan, metrics: dict, grid, overwrite) -> None:
    import matplotlib

    matplotlib.use("Agg")

    spectra = acc.spectra()
    arrays = {"convention": np.array(plan.convention), "k_nyquist": np.array(plan.k_nyquist)}
    if plan.k is not None:
        arrays["k"] = np.asarray(plan.k)
    for name, (s_t, s_r) in spectra.items():
        arrays[f"{name}_truth"], arrays[f"{name}_recon"] = s_t, s_r
    hist = {}
    for c, f in enumerate(acc.fields):
        hist[f"{f}_edges"] = acc.edges[c]
        hist[f"{f}_truth"], hist[f"{f}_recon"] = acc.h_truth[c], acc.h_recon[c]
        hist[f"{f}_truth_half1"], hist[f"{f}_truth_half2"] = acc.h_half[0][c], acc.h_half[1][c]
    files = [METRICS_FILE, SPECTRA_FILE, HIST_FILE, HIST_PLOT]
    if spectra:
        files.append(SPECTRA_PLOT)
    files += [f"panels_{f}.png" for f in acc.fields] if acc.panels else []
    metrics["files"] = files
    names = (METRICS_FILE, SPECTRA_FILE, HIST_FILE, HIST_PLOT, SPECTRA_PLOT, "panels_*.png")
    if overwrite:
        # metrics.json, written last, marks a finished analysis: it goes first, so that a run killed while replacing
        # the other files never leaves the old metrics beside new arrays; then the earlier analysis' files that this
        # one does not rewrite (other fields, ...)
        (out / METRICS_FILE).unlink(missing_ok=True)
        for old in [p for n in names for p in out.glob(n)]:
            if old.name not in files:
                old.unlink(missing_ok=True)
    remove_temporaries(out, names)  # of writes a killed run left unfinished
    _npz(out / SPECTRA_FILE, arrays, overwrite)
    _npz(out / HIST_FILE, hist, overwrite)
    if spectra:
        plot_spectra(out / SPECTRA_PLOT, plan, spectra, metrics, overwrite)
    plot_histograms(out / HIST_PLOT, acc, metrics, overwrite)
    if acc.panels:
        for c, f in enumerate(acc.fields):
            plot_panels(out / f"panels_{f}.png", acc, c, grid, overwrite)
    atomic_text(out / METRICS_FILE, json.dumps(metrics, indent=2, allow_nan=False) + "\n", overwrite=overwrite)


def _save(fig, path: Path, overwrite: bool) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110), overwrite=overwrite)
    plt.close(fig)


def plot_spectra(path: Path, plan: SpectrumPlan, spectra: dict, metrics: dict, overwrite: bool) -> None:
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    names = list(spectra)
    ncol = min(len(names), 3)
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False)
    kn = plan.k_nyquist
    shells = np.arange(1, kn + 1)
    unit = "2π/L" if plan.kind == "periodic" else "2π/L_x"
    for ax, name in zip(axes.flat, names, strict=False):
        s_t, s_r = spectra[name]
        err = metrics["spectral_errors"][name]
        ax.loglog(shells, np.maximum(s_t[1 : kn + 1], 1e-300), "k-", lw=1.8, label="ground truth")
        ax.loglog(shells, np.maximum(s_r[1 : kn + 1], 1e-300), "C3--", lw=1.5, label="reconstruction")
        for e in band_edges(kn)[1:-1]:
            ax.axvline(e, color="0.7", lw=0.8, ls=":")
        b = err["band_rel_error"]
        bands = " ".join(f"{k} {v:+.0%}" if v is not None else f"{k} -" for k, v in b.items())
        lsd = err["log_spectral_distance"]
        lsd = "-" if lsd is None else f"{lsd:.3f}"
        ax.set_title(f"{plan.specs[name][0]}\nLSD {lsd}; band err {bands}", fontsize=9)
        if plan.kind == "periodic":
            ax.set_xlabel(f"shell k = round(|k|/({unit})), 1..N/2")
        else:
            ax.set_xlabel(f"k_x / ({unit}), 1..N_x/2")
        sym = {"E": "E(k)", "Z": "Z(k)"}.get(name, "S(k)")
        total = {"E": "½⟨|u|²⟩", "Z": "½⟨ω²⟩"}.get(name, "½⟨f²⟩")
        if plan.kind == "periodic":
            ax.set_ylabel(f"{sym}, shell sum (Σ_k = {total})")
        else:
            ax.set_ylabel(f"{sym}, height-averaged (Σ_k = ½⟨f'²⟩)")
        ax.grid(True, which="both", alpha=0.25)
        ticks = [t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000) if t < 0.8 * kn] + [kn]
        ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%d"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        both = np.concatenate([s_t[1 : kn + 1], s_r[1 : kn + 1]])
        top = float(both.max())
        if top > 0:  # shells emptied by dealiasing hold round-off (~1e-17 of the peak): leave them off the y-range
            shown = both[both > 1e-12 * top]
            ax.set_ylim(0.3 * float(shown.min()), 3 * top)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    what = "shell spectra, doubly periodic" if plan.kind == "periodic" else "1D x-spectra, wall-bounded in y"
    sep = "; " if ncol > 1 else "\n"  # one panel: two lines, so the title fits the figure's width
    fig.suptitle(f"{what}; sample-averaged{sep}dotted: low/mid/high band edges", fontsize=10)
    fig.tight_layout()
    _save(fig, path, overwrite)


def plot_histograms(path: Path, acc: Accumulator, metrics: dict, overwrite: bool) -> None:
    import matplotlib.pyplot as plt

    c_n = len(acc.fields)
    ncol = min(c_n, 3)
    nrow = math.ceil(c_n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), squeeze=False)
    for c, (ax, f) in enumerate(zip(axes.flat, acc.fields, strict=False)):
        e = acc.edges[c]
        h = metrics["histograms"][f]
        for counts, style, label in ((acc.h_truth[c], "k-", "ground truth"), (acc.h_recon[c], "C3-", "reconstruction")):
            p = counts / counts.sum()
            ax.stairs(np.where(p > 0, p, np.nan), e, color=style[:-1], lw=1.4, label=label)
        ax.set_yscale("log")
        fl = h["js_floor_bits"]
        floor = f" (floor {fl:.1e})" if fl is not None else ""
        ax.set_title(
            f"{f}: JS {h['js_bits']:.1e} bits{floor}\nTV {h['tv']:.3f}, clipped {h['clipped_fraction']:.1e}",
            fontsize=9,
        )
        ax.set_xlabel(f"{f} (simulation units)")
        ax.set_ylabel("probability per bin")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[c_n:]:
        ax.set_visible(False)
    fig.suptitle(f"value histograms, {len(acc.edges[0]) - 1} bins over the ground-truth range", fontsize=10)
    fig.tight_layout()
    _save(fig, path, overwrite)


def plot_panels(path: Path, acc: Accumulator, c: int, grid, overwrite: bool) -> None:
    import matplotlib.pyplot as plt

    f = acc.fields[c]
    items = sorted(acc.panels)
    x, y = np.asarray(grid.x), np.asarray(grid.y)
    aspect = (y.max() - y.min()) / max(x.max() - x.min(), 1e-300)
    width = 3.3  # inches per panel
    fig, axes = plt.subplots(
        len(items), 3, figsize=(3 * width + 1.2, len(items) * (width * aspect + 0.9) + 0.4), squeeze=False
    )
    vname = grid.vertical_name
    for row, i in enumerate(items):
        g, r = acc.panels[i][0][c], acc.panels[i][1][c]
        lo, hi = float(g.min()), float(g.max())
        err = r - g
        m = float(np.abs(err).max()) or 1.0
        cmap = "RdBu_r" if lo < 0 < hi else "viridis"
        for col, (data, title, kw) in enumerate(
            (
                (g, f"truth {f}, sample {acc.panel_offset + i}", dict(cmap=cmap, vmin=lo, vmax=hi)),
                (r, "reconstruction (same colour scale)", dict(cmap=cmap, vmin=lo, vmax=hi)),
                (err, f"error r − g, max |err| {m:.2g}", dict(cmap="PuOr_r", vmin=-m, vmax=m)),
            )
        ):
            ax = axes[row, col]
            im = ax.pcolormesh(x, y, data, shading="nearest", **kw)
            ax.set_aspect("equal")
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("x", fontsize=8)
            ax.set_ylabel(vname, fontsize=8)
            cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.ax.tick_params(labelsize=7)
    fig.suptitle(f"{f} (simulation units): ground truth, reconstruction, error", fontsize=10)
    fig.tight_layout()
    _save(fig, path, overwrite)


# ======================================================================================================================
# CLI
# ======================================================================================================================


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("run and data")
    add_trained_run_flags(g, "Gust .h5 file to reconstruct")
    g.add_argument("--output_dir", required=True, help="folder for metrics.json, spectra/histograms .npz and plots")
    g = p.add_argument_group("analysis")
    g.add_argument("--batch_size", type=positive_int, default=32, help="samples per model call (default 32)")
    g.add_argument("--n_bins", type=positive_int, default=100, help="histogram bins per field (default 100)")
    g.add_argument("--n_panel", type=int, default=3, help="samples shown in panels_<field>.png (default 3; 0: none)")
    g.add_argument("--hash_data", action="store_true", help="record the data file's sha256 (reads it once more)")
    g.add_argument("--overwrite", action="store_true", help="replace this tool's files in a non-empty --output_dir")
    g.add_argument("--no_progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("model checks (each must equal the checkpoint's value; see models.models.VQVAEConfig)")
    for name in ("ch", "num_res_blocks", "num_groups", "embed_dim", "codebook_size", "phi_kernel"):
        g.add_argument(f"--{name}", type=int, default=None)
    for name in ("beta", "phi_ratio"):
        g.add_argument(f"--{name}", type=float, default=None)
    g.add_argument("--ch_mult", type=int_list, default=None, help="e.g. 1,2")
    g.add_argument("--scales", type=scale_list, default=None, help="e.g. 1x1,2x2,4x4,8x8")
    g.add_argument("--upsample", choices=UPSAMPLE_METHODS, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main(PROG, build_parser(), analyze, argv)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    exit_process(main())
