"""Initial vorticity fields ω(y, x) for the turbulence solver, as float64 numpy arrays (ny, nx).

- ``random``: a seeded random field whose angle-summed energy spectrum equals, shell by shell,
  E(k) = A k⁴ exp(−(k/k_p)²) with A = 4 k_p⁻⁵/(3π) (the spectrum py2d's random initialiser aims
  for; its total energy is 1/(2√π) ≈ 0.28 for large N). Phases come from Gaussian white noise, so the
  field is real by construction; each integer shell is rescaled to the target exactly, modes beyond
  the 2/3-rule cut-off are zero.
- ``taylor_green``: ψ = sin x sin y, ω = 2 sin x sin y. A steady solution of the inviscid equations
  (ω = 2ψ, so u·∇ω = 0) that decays as exp(−2t/Re) without forcing and drag.
- a file: ``.npy`` array (N, N) laid out (y, x), or a Gust HDF5 file and a sample index.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from .py2d_core import coordinates, grid_arrays


def target_energy_spectrum(k, k_peak: float):
    """E(k) = A k⁴ exp(−(k/k_p)²), A = 4 k_p⁻⁵/(3π)."""
    a = 4.0 * k_peak**-5 / (3.0 * math.pi)
    return a * np.asarray(k, dtype=np.float64) ** 4 * np.exp(-((np.asarray(k, dtype=np.float64) / k_peak) ** 2))


def random_field(n: int, seed: int, trajectory: int, k_peak: float = 10.0) -> np.ndarray:
    """Random vorticity with the prescribed shell spectrum; trajectory m uses key fold_in(PRNGKey(seed), m)."""
    if not k_peak > 0:
        raise ValueError(f"--ic_kpeak must be > 0 (got {k_peak!r})")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), trajectory)
    noise = np.asarray(jax.device_get(jax.random.normal(key, (n, n), dtype="float32")), dtype=np.float64)
    grid = grid_arrays(n)
    w_hat = np.fft.rfft2(noise)
    mag = np.abs(w_hat)
    w_hat = np.divide(w_hat, mag, out=np.zeros_like(w_hat), where=mag > 0) * grid["dealias"]
    w_hat[0, 0] = 0.0
    # energy density per mode for unit |ω̂|: ½ w |ω̂|²/(K² N⁴); rescale each shell to E(k)
    shell = np.rint(np.sqrt(grid["ksq"])).astype(int)
    dens = 0.5 * grid["weight"] * np.abs(w_hat) ** 2 * grid["inv_ksq"] / float(n) ** 4
    shell_energy = np.bincount(shell.ravel(), weights=dens.ravel(), minlength=shell.max() + 1)
    target = target_energy_spectrum(np.arange(shell_energy.size), k_peak)
    scale = np.sqrt(np.divide(target, shell_energy, out=np.zeros_like(target), where=shell_energy > 0))
    return np.fft.irfft2(w_hat * scale[shell], s=(n, n))


def taylor_green(n: int) -> np.ndarray:
    x = coordinates(n)
    return 2.0 * np.sin(x)[:, None] * np.sin(x)[None, :]


MEAN_TOLERANCE = 1e-4  # largest |mean ω| / rms(ω) of an --ic_file field taken as round-off


def from_file(path: str | Path, n: int, sample: int = 0) -> np.ndarray:
    """Read one (N, N) vorticity field (y, x) from a ``.npy`` file or a Gust HDF5 file's ``omega``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--ic_file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            field = np.load(path)
        except (ValueError, OSError) as e:  # a pickled object array, a truncated or foreign file
            raise ValueError(f"--ic_file {str(path)!r} is not a readable numeric .npy array ({e})") from e
        if not np.issubdtype(field.dtype, np.floating) and not np.issubdtype(field.dtype, np.integer):
            raise ValueError(f"--ic_file {str(path)!r} holds {field.dtype} values; a real (y, x) vorticity is needed")
    elif path.suffix in (".h5", ".hdf5"):
        from ..common.hdf5_utils import open_dataset

        with open_dataset(path) as f:
            if "omega" not in f.fields:
                raise ValueError(f"--ic_file {str(path)!r} has no 'omega' field (fields: {', '.join(f.fields)})")
            if f.n_samples == 0:
                raise ValueError(f"--ic_file {str(path)!r} has no committed samples yet")
            if not 0 <= sample < f.n_samples:
                raise ValueError(f"--ic_sample must be in [0, {f.n_samples - 1}] for {str(path)!r} (got {sample})")
            field = f.read("omega", sample, sample + 1)[0]
    else:
        raise ValueError(f"--ic_file must be a .npy or a Gust .h5 file (got {str(path)!r})")
    if field.shape != (n, n):
        raise ValueError(f"--ic_file field has shape {field.shape}, expected ({n}, {n}) laid out (y, x) for --NX {n}")
    if not np.all(np.isfinite(field)):
        raise ValueError(f"--ic_file field in {str(path)!r} contains non-finite values")
    field = np.asarray(field, dtype=np.float64)
    # a periodic velocity field has zero mean vorticity (∫ω dA is the circulation around the box's edge, 0 by
    # periodicity): a mean beyond round-off means a wrong field; round-off (float32 storage) is removed
    with np.errstate(over="ignore", invalid="ignore"):  # a field near float64's limit: the solver reports it
        mean, rms = field.mean(), field.std()
    if abs(mean) > MEAN_TOLERANCE * max(rms, np.finfo(np.float64).tiny):
        raise ValueError(
            f"--ic_file field in {str(path)!r} has mean vorticity {mean:.6g} (rms about it {rms:.6g}); a doubly "
            "periodic flow has zero mean vorticity: subtract the mean"
        )
    return field - mean
