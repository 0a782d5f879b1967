"""Train the multi-scale VQ-VAE on a Gust file (issue 5, "Training").

    python -m models.train_vqvae --data_path run.h5 --fields omega --output_dir runs/x --steps 200 --batch_size 8 \
        --sample_start 0 --sample_stop 96 [--val_start 96 --val_stop 128] [--resume | --overwrite]

The CLI parses its flags into a frozen :class:`TrainConfig` and calls :func:`train`. Fields are normalised with
statistics of the training range only (``compute_stats``); the model's boundary conditions come from the file's grid.
Loss: mean over channels of the per-channel MSE of the normalised fields (a variance-normalised MSE) + the
quantiser's ``vq_loss`` + ``spectral_weight`` × a log-spectral distance (off by default). Optimiser: one factory,
:func:`make_optimizer`, returning ``chain(clip_by_global_norm(0.5), adamw(warm-up + cosine, mask))``.

Outputs in ``--output_dir`` (process 0 writes; every file is written to a temporary name in the same folder and then
``os.replace``d, so a killed run never leaves a half-written file):

- ``model.eqx`` + ``config.txt``: the checkpoint pair for :func:`models.models.load` (``config.txt`` holds the
  ``VQVAEConfig`` lines, every training hyperparameter, data source, fields, sample ranges, normalisation mean/std,
  code version and step, one ``key = JSON value`` per line); ``stats.json``: the ``FieldStats``.
- ``metrics.jsonl``: one JSON line per logging step (loss parts, grad norm, learning rate, per-scale usage and
  perplexity, validation loss when a validation range is given, ``elapsed_s``: wall seconds since this process
  started its training loop); ``loss.png``: the loss curves, drawn at the first checkpoint, then at most every
  ``PLOT_EVERY_S`` seconds (a draw costs about 0.4 s on a CPU) and at the end of the run.
- ``checkpoint.json`` → ``ckpt_<step>.eqx``: model and optimiser state (``eqx.tree_serialise_leaves`` of the pair),
  step and the ``BatchLoader.state()``. The ``.eqx`` is written first, then the JSON pointer is replaced, then older
  ``.eqx`` files are removed: whenever the process dies, ``checkpoint.json`` names a complete file. ``--resume``
  continues from it and reaches bit-identical parameters to an uninterrupted run (CPU). The checkpoint also holds the
  code-usage counts since the last dead-code restart; the restarts' random draws use ``fold_in(PRNGKey(seed), step)``
  (no dropout otherwise), so the seed, the step and the loader state are the whole RNG state.

Codebook health: every ``restart_every`` steps the codes no scale used since the last restart are re-initialised
from random encoder outputs of the current batch (``restarted`` in the metrics log counts them since the last line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dataloaders import BatchLoader, FieldStats, GustDataset, batch_sharding, compute_stats
from solvers.common import stop
from solvers.common.atomic import atomic_text, atomic_write, file_sha256, remove_temporaries, temporary_files
from solvers.common.cli import (
    OneLineArgumentParser,
    add_distributed_flags,
    check_seed,
    comma_list,
    exit_process,
    int_list,
    run_main,
    scale_list,
)
from solvers.common.driver import BlowUpError
from solvers.common.hdf5_utils import RESUME_KEYS, provenance

from .models import (
    COMPUTE_DTYPES,
    LEGACY_VALUES,
    UPSAMPLE_METHODS,
    MultiScaleVQVAE,
    VQVAEConfig,
    all_finite,
    codebook_stats,
    make_model,
    restart_dead_codes,
    with_compute_dtype,
)

PROG = "python -m models.train_vqvae"
MODEL_FILE, CONFIG_FILE, STATS_FILE = "model.eqx", "config.txt", "stats.json"
METRICS_FILE, PLOT_FILE, CKPT_POINTER = "metrics.jsonl", "loss.png", "checkpoint.json"
PLOT_EVERY_S = 60.0  # loss.png is redrawn at a checkpoint when this long has passed since its last draw
_MODEL_KEYS = ("ch", "ch_mult", "num_res_blocks", "num_groups", "embed_dim", "codebook_size", "scales", "beta")
_MODEL_KEYS += ("phi_ratio", "phi_kernel", "upsample")
# Keys that may differ between a run and its --resume (they do not change the trained parameters).
_RESUME_FREE = ("log_every", "checkpoint_every")
# settings added after runs were made, with the value those runs trained with (absent from their config.txt)
LEGACY_TRAIN_VALUES = {"prefix_weight": 0.0, "compute_dtype": "float32", "prefix_every": 1}


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; validated at construction (one-line ``ValueError`` naming the flag).

    Data: data_path, fields, training samples [sample_start, sample_stop) (stop None: all committed), optional
    validation samples [val_start, val_stop) (used when val_stop is given). Optimisation: steps, batch_size, lr (peak),
    warmup_steps (linear from 0; None: steps // 10), end_lr_ratio (cosine decay to lr × end_lr_ratio at `steps`),
    weight_decay, spectral_weight, prefix_weight and prefix_every (see :func:`loss_fn`), seed (model init, batch
    order, restart and prefix draws), log_every, checkpoint_every,
    restart_every (dead-code restarts every this many steps; 0: off), compute_dtype (the encoder's and decoder's
    arithmetic in training: "float32", or "bfloat16" for mixed precision with float32 parameters, optimiser state and
    quantiser; see :func:`models.models.with_compute_dtype`). Model: the
    architecture keys of :class:`VQVAEConfig` (scales None: 1, 2, 4, ... capped at and ending on the latent size).
    """

    data_path: str
    fields: tuple[str, ...]
    steps: int = 100
    batch_size: int = 8
    sample_start: int = 0
    sample_stop: int | None = None
    val_start: int | None = None
    val_stop: int | None = None
    lr: float = 2e-3
    warmup_steps: int | None = None
    end_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    spectral_weight: float = 0.0
    prefix_weight: float = 0.1
    prefix_every: int = 1
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    restart_every: int = 100
    compute_dtype: str = "float32"
    ch: int = 16
    ch_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    num_groups: int = 8
    embed_dim: int = 8
    codebook_size: int = 64
    scales: tuple[tuple[int, int], ...] | None = None
    beta: float = 0.25
    phi_ratio: float = 0.5
    phi_kernel: int = 3
    upsample: str = "bicubic"

    def __post_init__(self):
        def integer(name, minimum, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
                raise ValueError(f"--{name} must be an integer >= {minimum} (got {v!r})")
            if name in STEP_COUNTS and v > MAX_STEPS:
                raise ValueError(f"--{name} must be <= {MAX_STEPS} (the step counter is a 32-bit integer; got {v})")
            object.__setattr__(self, name, int(v))

        def number(name, lo, lo_open=False, hi=math.inf):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
            if not ok:
                op = ">" if lo_open else ">="
                rng = f"{op} {lo}" + (f" and <= {hi}" if math.isfinite(hi) else "")
                raise ValueError(f"--{name} must be a finite number {rng} (got {v!r})")
            object.__setattr__(self, name, float(v))

        if not isinstance(self.data_path, str | os.PathLike) or not str(self.data_path):
            raise ValueError(f"--data_path must be a file path (got {self.data_path!r})")
        object.__setattr__(self, "data_path", str(self.data_path))
        fields = (self.fields,) if isinstance(self.fields, str) else tuple(self.fields)
        if not fields or any(not isinstance(f, str) or not f for f in fields):
            raise ValueError(f"--fields must be a comma-separated list of field names (got {self.fields!r})")
        if len(set(fields)) != len(fields):
            raise ValueError(f"--fields {','.join(fields)} contains a duplicate")
        object.__setattr__(self, "fields", fields)
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            integer(name, 1)
        if self.warmup_steps is None:
            object.__setattr__(self, "warmup_steps", self.steps // 10)
        for name in ("sample_start", "seed", "warmup_steps", "restart_every"):
            integer(name, 0)
        for name in ("sample_stop", "val_start", "val_stop"):
            integer(name, 0, allow_none=True)
        check_seed(self.seed)
        if self.sample_stop is not None and self.sample_stop <= self.sample_start:
            raise ValueError(
                f"--sample_start={self.sample_start} --sample_stop={self.sample_stop} is an empty sample range; "
                "need sample_stop > sample_start"
            )
        if self.val_start is not None and self.val_stop is None:
            raise ValueError(f"--val_start={self.val_start} needs --val_stop (the validation range's end)")
        if self.val_stop is not None and self.val_stop <= (self.val_start or 0):
            raise ValueError(
                f"--val_start={self.val_start or 0} --val_stop={self.val_stop} is an empty validation range; "
                "need val_stop > val_start"
            )
        if (
            self.val_stop is not None
            and (self.val_start or 0) < (self.sample_stop or math.inf)
            and (self.sample_start < self.val_stop)
        ):
            train_end = "the end" if self.sample_stop is None else self.sample_stop
            raise ValueError(
                f"the validation range [{self.val_start or 0}, {self.val_stop}) overlaps the training range "
                f"[{self.sample_start}, {train_end}): a held-out loss needs disjoint --val_start/--val_stop"
            )
        if self.warmup_steps >= self.steps:
            raise ValueError(f"--warmup_steps={self.warmup_steps} must be < --steps={self.steps}")
        number("lr", 0.0, lo_open=True)
        number("end_lr_ratio", 0.0, hi=1.0)
        number("weight_decay", 0.0)
        number("spectral_weight", 0.0)
        number("prefix_weight", 0.0)
        integer("prefix_every", 1)
        if self.prefix_every > self.batch_size:
            raise ValueError(
                f"--prefix_every={self.prefix_every} must be <= --batch_size={self.batch_size} (every n-th sample of a "
                "batch decodes a prefix)"
            )
        if self.scales is not None:
            try:
                scales = tuple((int(h), int(w)) for h, w in self.scales)
            except (TypeError, ValueError):
                raise ValueError(f"--scales must be pairs like 1x1,2x2,4x4 (got {self.scales!r})") from None
            object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        if self.upsample not in UPSAMPLE_METHODS:
            raise ValueError(f"--upsample must be one of {UPSAMPLE_METHODS} (got {self.upsample!r})")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--compute_dtype must be one of {', '.join(COMPUTE_DTYPES)} (got {self.compute_dtype!r})")

    @property
    def has_val(self) -> bool:
        return self.val_stop is not None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


MAX_STEPS = 2**31 - 1  # the optimiser's step count and the schedules run on int32
STEP_COUNTS = ("steps", "warmup_steps", "log_every", "checkpoint_every", "restart_every")


def default_scales(latent_shape: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """1×1, 2×2, 4×4, ... (each axis capped at the latent size), ending at the latent size."""
    h, w = latent_shape
    out: list[tuple[int, int]] = []
    k = 1
    while k < max(h, w):
        s = (min(k, h), min(k, w))
        if not out or s[0] * s[1] > out[-1][0] * out[-1][1]:
            out.append(s)
        k *= 2
    if not out or out[-1] != (h, w):
        out.append((h, w))
    return tuple(out)


def model_config(config: TrainConfig, height: int, width: int, bc_y: str, bc_x: str) -> VQVAEConfig:
    """The :class:`VQVAEConfig` of a run on ``(height, width)`` fields with the file's boundary conditions."""
    f = 2 ** (len(config.ch_mult) - 1)
    if height % f or width % f:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the downsampling factor {f} = 2**(len(ch_mult) - 1) "
            f"of --ch_mult {','.join(map(str, config.ch_mult))}"
        )
    if config.spectral_weight > 0 and "periodic" not in (bc_y, bc_x):
        raise ValueError(
            f"--spectral_weight={config.spectral_weight:g} needs a periodic axis; the data's boundary conditions are "
            f"y: {bc_y}, x: {bc_x} (use --spectral_weight 0)"
        )
    scales = config.scales if config.scales is not None else default_scales((height // f, width // f))
    kwargs = {k: getattr(config, k) for k in _MODEL_KEYS if k != "scales"}
    try:
        return VQVAEConfig(
            in_channels=len(config.fields), height=height, width=width, bc_y=bc_y, bc_x=bc_x, scales=scales, **kwargs
        )
    except ValueError as err:
        raise ValueError(f"model: {err}") from None


# --------------------------------------------------------------------------------------------------------------------
# Optimiser, loss, train step
# --------------------------------------------------------------------------------------------------------------------


def make_schedule(config: TrainConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.lr,
        warmup_steps=config.warmup_steps,
        decay_steps=config.steps,
        end_value=config.lr * config.end_lr_ratio,
    )


def decay_mask(params) -> object:
    """True for the convolution kernels only: the codebook, norm scales, biases and gains get no weight decay."""

    def keep(path, leaf) -> bool:
        last = path[-1]
        return isinstance(last, jax.tree_util.GetAttrKey) and last.name == "weight" and len(leaf.shape) >= 2

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(config: TrainConfig, params) -> optax.GradientTransformation:
    """The one optimiser: ``chain(clip_by_global_norm(0.5), adamw(warm-up + cosine, weight_decay, mask))``.

    ``params`` (``eqx.filter(model, eqx.is_inexact_array)``) fixes the weight-decay mask.
    """
    mask = decay_mask(params)
    return optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(make_schedule(config), weight_decay=config.weight_decay, mask=mask),
    )


def log_spectral_loss(
    recon: jax.Array, target: jax.Array, bc: tuple[str, str] = ("periodic", "periodic"), eps: float = 1e-8
) -> jax.Array:
    """Mean squared log ratio of the batch-averaged power spectra of each channel, (B, C, H, W) inputs.

    ``bc`` (vertical axis, x axis) picks the transform: the Fourier transform runs over the periodic axes only
    (``rfft2`` when both are). Along a wall axis the field is not periodic (e.g. Rayleigh–Bénard's temperature jumps
    from 1 to 0 between the walls), so a transform there would mostly measure the wall jump's leakage; instead the
    power of each row's transform is averaged over that axis, the height-averaged 1D spectrum of
    ``analyze_reconstruction``'s wall convention (unweighted mean over rows). ``eps`` sets a floor per channel,
    eps × (mean target power) + eps, that keeps empty modes from dominating the log.
    """
    fft_axes = tuple(a for a, b in zip((-2, -1), bc, strict=True) if b == "periodic")
    if not fft_axes:
        raise ValueError(f"log_spectral_loss needs a periodic axis (boundary conditions {bc})")
    p_r = jnp.mean(jnp.abs(jnp.fft.rfftn(recon, axes=fft_axes)) ** 2, axis=0)  # (C, H', W')
    p_t = jnp.mean(jnp.abs(jnp.fft.rfftn(target, axes=fft_axes)) ** 2, axis=0)
    wall_axes = tuple(a for a, b in zip((-2, -1), bc, strict=True) if b != "periodic")
    if wall_axes:
        p_r, p_t = jnp.mean(p_r, axis=wall_axes), jnp.mean(p_t, axis=wall_axes)
    floor = eps * jnp.mean(p_t, axis=tuple(range(1, p_t.ndim)), keepdims=True) + eps
    return jnp.mean(jnp.log((p_r + floor) / (p_t + floor)) ** 2)


def _channel_mse(recon: jax.Array, batch: jax.Array) -> jax.Array:
    return jnp.mean(jnp.mean((recon - batch) ** 2, axis=(0, 2, 3)))  # per channel, then over channels


def loss_fn(
    model: MultiScaleVQVAE,
    batch: jax.Array,
    spectral_weight: float,
    prefix_weight: float = 0.0,
    key: jax.Array | None = None,
    compute_dtype: str = "float32",
    prefix_every: int = 1,
) -> tuple[jax.Array, dict]:
    """Total loss and its parts on a normalised batch (B, C, H, W).

    The encoder and decoder compute in ``compute_dtype`` (:func:`models.models.with_compute_dtype`); the quantiser
    and every loss in float32.

    With ``prefix_weight`` > 0 each sample also decodes the cumulative reconstruction of its first k scales, k drawn
    uniformly from 1..K−1 with ``key``, and ``prefix_weight`` × that reconstruction's MSE is added (``prefix_mse``):
    the decoder otherwise only ever sees full latents, and the coarse prefixes decode to worse than nothing.
    ``prefix_every`` = n > 1 decodes prefixes for samples 0, n, 2n, ... of the batch only (a random subset, batches
    being shuffled; strided, so a batch sharded over devices keeps them spread): the prefix loss then costs one
    n-th of a decoder pass per sample instead of a whole one, with the same expected value and more variance.
    """
    model = with_compute_dtype(model, compute_dtype)
    recon, aux = jax.vmap(model)(batch)
    mse = _channel_mse(recon, batch)
    vq = jnp.mean(aux["vq_loss"])
    loss = mse + vq
    metrics = {"mse": mse, "vq_loss": vq, "commit_loss": jnp.mean(aux["commit_loss"])}
    metrics["codebook_loss"] = jnp.mean(aux["codebook_loss"])
    if spectral_weight > 0:
        spec = log_spectral_loss(recon, batch, model.bc)
        metrics["spectral_loss"] = spec
        loss = loss + spectral_weight * spec
    n_scales = aux["prefix_latents"].shape[1]
    if prefix_weight > 0 and n_scales > 1:
        if key is None:
            raise ValueError("loss_fn: prefix_weight > 0 needs a PRNG key (which prefix each sample decodes)")
        candidates, targets = aux["prefix_latents"][::prefix_every], batch[::prefix_every]  # static slices
        k = jax.random.randint(key, (targets.shape[0],), 0, n_scales - 1)  # prefix of k + 1 scales, never all K
        latents = candidates[jnp.arange(targets.shape[0]), k]
        prefix = _channel_mse(jax.vmap(model.decode)(latents), targets)
        metrics["prefix_mse"] = prefix
        loss = loss + prefix_weight * prefix
    metrics["loss"] = loss
    metrics["usage"], metrics["perplexity"] = codebook_stats(aux["code_probs"])
    metrics["code_counts"] = jnp.sum(aux["code_probs"], axis=(0, 1))  # (V,): any use at any scale counts
    return loss, metrics


def restart_due(step: jax.Array, restart_every: int) -> jax.Array:
    """True after steps restart_every, 2 restart_every, ... (``step`` counts completed steps); never for 0."""
    return (restart_every > 0) & (step % max(restart_every, 1) == 0)


def make_train_step(
    optimizer: optax.GradientTransformation,
    spectral_weight: float,
    *,
    prefix_weight: float = 0.0,
    prefix_every: int = 1,
    restart_every: int = 0,
    seed: int = 0,
    compute_dtype: str = "float32",
    on_trace: Callable[[], None] | None = None,
):
    """``train_step(model, opt_state, counts, batch, step) -> (model, opt_state, counts, metrics)``, one ``filter_jit``.

    ``counts`` (V,) accumulates every scale's code usage since the last restart; ``step`` is the number of the step
    being taken (1-based). After the update, when ``restart_every`` divides ``step``, every code unused since the last
    restart is replaced by a random encoder output of this batch (:func:`models.models.restart_dead_codes`, key
    ``fold_in(PRNGKey(seed), step)``: a pure function of seed and step, so a resumed run draws the same numbers) and
    ``counts`` is reset; ``metrics["restarted"]`` is the number of codes replaced (0 on other steps). The optimiser
    state of a restarted row is kept on purpose: its first moment has decayed to ~0 while the code got no gradient,
    and its second moment (older gradient scales) only makes the new code's first steps cautious, whereas zeroing it
    without a per-row bias correction would make them up to ~6.6× larger than Adam's usual step (β = 0.9, 0.999).
    The prefix-loss draws (``prefix_weight`` > 0 and ``prefix_every``, see :func:`loss_fn`) use
    ``fold_in(fold_in(PRNGKey(seed), step), 1)``.
    ``compute_dtype`` is the encoder's and decoder's arithmetic in the loss (see :func:`loss_fn`); the restart's
    encoder outputs are float32. ``on_trace`` is called each time JAX traces the step (tests use it to check the step
    compiles once).
    """
    base_key = jax.random.PRNGKey(seed)

    @eqx.filter_jit
    def train_step(model, opt_state, counts, batch, step):
        if on_trace is not None:
            on_trace()
        grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)
        prefix_key = jax.random.fold_in(jax.random.fold_in(base_key, step), 1)
        (_, metrics), grads = grad_fn(
            model, batch, spectral_weight, prefix_weight, prefix_key, compute_dtype, prefix_every
        )
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        counts = counts + metrics.pop("code_counts")

        def restart(_):
            latents = jax.vmap(model.latent)(batch)  # (B, D, h, w) encoder outputs of this batch
            vectors = jnp.moveaxis(latents, 1, -1).reshape(-1, latents.shape[1])
            key = jax.random.fold_in(base_key, step)
            codebook, n = restart_dead_codes(model.quantizer.codebook, counts, vectors, key)
            return codebook, jnp.zeros_like(counts), n

        def keep(_):
            return model.quantizer.codebook, counts, jnp.zeros((), jnp.int32)

        codebook, counts, metrics["restarted"] = jax.lax.cond(restart_due(step, restart_every), restart, keep, None)
        return model.with_codebook(codebook), opt_state, counts, metrics

    return train_step


def train_step_for(config: TrainConfig, optimizer: optax.GradientTransformation, *, on_trace=None):
    """:func:`make_train_step` with the loss weights, restart cadence, seed and compute dtype of ``config``."""
    return make_train_step(
        optimizer,
        config.spectral_weight,
        prefix_weight=config.prefix_weight,
        prefix_every=config.prefix_every,
        restart_every=config.restart_every,
        seed=config.seed,
        compute_dtype=config.compute_dtype,
        on_trace=on_trace,
    )


@eqx.filter_jit
def _eval_step(model, batch, spectral_weight, prefix_weight, compute_dtype, prefix_every):
    # a fixed key: the validation loss of every logging step sees the same prefix draws
    key = jax.random.PRNGKey(0)
    metrics = loss_fn(model, batch, spectral_weight, prefix_weight, key, compute_dtype, prefix_every)[1]
    del metrics["code_counts"]
    return metrics


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def config_text(
    mconfig: VQVAEConfig,
    config: TrainConfig,
    stats: FieldStats,
    step: int,
    prov: dict,
    model_sha256: str | None = None,
    data_grid: dict | None = None,
    resumes: list[dict] | None = None,
    data_source: dict | None = None,
) -> str:
    """``config.txt``: the model's lines (``VQVAEConfig.to_text``), then training, data and provenance lines.

    ``model_sha256`` (of the ``model.eqx`` saved with it) and ``data_grid`` (the training grid's lengths and
    :meth:`Grid.fingerprint`) let the tools refuse a model from another run or data on another grid; ``data_source``
    (:meth:`GustFile.identity`) names the run that wrote the training file. ``prov`` is the
    provenance of the run's first start; ``resumes`` lists each ``--resume`` (the step it went on from, its code
    version, backend, command line and time)."""
    lines = [mconfig.to_text(), "# training (models.train_vqvae)\n"]
    extra = {k: v for k, v in config.to_dict().items() if k not in _MODEL_KEYS}
    extra["data_path"] = str(Path(config.data_path).resolve())
    extra.update(norm_fields=list(stats.fields), norm_mean=list(stats.mean), norm_std=list(stats.std))
    extra["norm_count"] = stats.count
    if data_grid is not None:
        extra["data_grid"] = data_grid
    if data_source is not None:
        extra["data_source"] = data_source
    extra["step"] = step
    if model_sha256 is not None:
        extra["model_sha256"] = model_sha256
    extra.update(prov)
    if resumes:
        extra["resumes"] = resumes
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}\n")
    return "".join(lines)


def read_settings(text: str, source: str = "config") -> dict:
    """Every ``key = JSON value`` line of a ``config.txt`` (the inverse of :func:`config_text`) as a dict.

    Blank lines and ``#`` comments are skipped; a malformed line is a one-line ``ValueError`` naming ``source``.
    """
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise ValueError(f"{source}: line {n} is not 'key = value': {line!r}")
        try:
            out[key.strip()] = json.loads(raw.strip())
        except json.JSONDecodeError:
            raise ValueError(f"{source}: line {n} has a value that is not JSON: {raw.strip()!r}") from None
    return out


def flags_of_run(text: str, source: str = "config") -> list[str]:
    """The command-line flags of the run whose ``config.txt`` is ``text``: every :class:`TrainConfig` setting it holds
    (data path and range, schedule, seed, losses, architecture), as ``--name value`` pairs ``main`` accepts.

    Settings added since the run was made take the value it trained with (``LEGACY_TRAIN_VALUES``); ``--output_dir``
    and the run options (``--resume``, ...) are not settings and are not included.
    """
    settings = {**LEGACY_TRAIN_VALUES, **read_settings(text, source)}
    flags = []
    for f in dataclasses.fields(TrainConfig):
        value = settings.get(f.name)
        if value is None:  # absent, or an optional range end that was not given
            continue
        if f.name == "scales":
            value = ",".join(f"{h}x{w}" for h, w in value)
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flags += [f"--{f.name}", str(value)]
    return flags


def _plot(path: Path, records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in records]
    for key in ("loss", "mse", "vq_loss", "spectral_loss", "prefix_mse", "val_loss"):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key, marker="o" if key == "val_loss" else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"VQ-VAE training ({steps[-1] if steps else 0} steps)")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


_OUTPUTS = (MODEL_FILE, CONFIG_FILE, STATS_FILE, METRICS_FILE, PLOT_FILE, CKPT_POINTER, "ckpt_*.eqx")


def _ours(output_dir: Path) -> list[Path]:
    """This tool's files in ``output_dir`` (the temporaries of interrupted writes included)."""
    return [p for name in _OUTPUTS for p in output_dir.glob(name)] + temporary_files(output_dir, _OUTPUTS)


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------


def _open_data(config: TrainConfig, start: int, stop: int | None, what: str) -> GustDataset:
    try:
        return GustDataset(config.data_path, list(config.fields), sample_start=start, sample_stop=stop)
    except FileNotFoundError:
        raise ValueError(f"--data_path {config.data_path} does not exist") from None
    except OSError as err:
        raise ValueError(f"--data_path {config.data_path} cannot be read: {err}") from None
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _stats_or_fail(ds: GustDataset, what: str) -> FieldStats:
    try:
        stats = compute_stats(ds)
    except ValueError as err:
        raise ValueError(f"non-finite or constant data in the {what}: {err}") from None
    if not all(math.isfinite(m) for m in stats.mean):
        raise ValueError(f"non-finite data (NaN/inf) in the {what}")
    return stats


def placements() -> tuple[jax.sharding.NamedSharding, jax.sharding.NamedSharding]:
    """(batch, replicated): the batch axis laid out over every device, and the model, optimiser state and usage counts
    copied to each. The one place training's arrays are laid out, so that a benchmark timing the step on arrays placed
    the same way compiles the very program training runs, and the persistent compilation cache serves training's own
    compilation (the program's shardings are part of the cache key)."""
    sharding = batch_sharding()
    return sharding, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


def train(
    config: TrainConfig,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    stop_after: int | None = None,
    deadline: float | None = None,
    on_trace: Callable[[], None] | None = None,
) -> Path:
    """Train as ``config`` says into ``output_dir``; return it. ``stop_after``: stop (with a checkpoint) once this many
    steps are done, as a killed run would; a later ``resume=True`` continues to ``config.steps``. ``deadline``: a
    ``time.monotonic()`` value; once it has passed, stop the same way after the step in flight (a benchmark's time
    budget: the run and its figures stay usable, and resumable, instead of being killed).

    Raises ValueError (bad input) or FileExistsError (output exists) before anything is written.
    """
    from tqdm import tqdm

    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other; pick one")
    out = Path(output_dir)
    main = jax.process_index() == 0

    # ---- everything is checked before anything is written
    ckpt_info = None
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output_dir {out} exists and is not a directory")
    nonempty = out.is_dir() and any(out.iterdir())
    if nonempty and not (resume or overwrite):
        raise FileExistsError(f"--output_dir {out} is not empty; use --resume to continue or --overwrite to restart")
    if resume and (out / CKPT_POINTER).exists():
        try:
            ckpt_info = json.loads((out / CKPT_POINTER).read_text())
        except ValueError as e:
            ckpt_info = e
        if not isinstance(ckpt_info, dict) or not {"file", "step", "loader"} <= ckpt_info.keys():
            raise ValueError(f"--resume: {out / CKPT_POINTER} is not a checkpoint record; use --overwrite to restart")
        saved_text = (out / CONFIG_FILE).read_text()
        saved = read_settings(saved_text, str(out / CONFIG_FILE))
        for k, v in config.to_dict().items():
            if k in _RESUME_FREE or k in _MODEL_KEYS:  # the model keys are compared once the model config is known
                continue
            sv = saved[k] if k in saved else LEGACY_TRAIN_VALUES.get(k)
            mine = str(Path(v).resolve()) if k == "data_path" else json.loads(json.dumps(v))
            if sv != mine:
                raise ValueError(f"--resume: --{k}={v!r} differs from the run in {out} ({k} = {json.dumps(sv)})")
    elif resume and nonempty:
        if set(out.iterdir()) - set(_ours(out)):
            raise ValueError(f"--resume: {out} has no {CKPT_POINTER} and holds other files; use --overwrite")
        if main:  # killed before its first checkpoint: nothing to go on from (as a solver stopped in its spin-up)
            print(f"{PROG}: {out} has no checkpoint yet (stopped before the first); starting it again", file=sys.stderr)
        resume, overwrite = False, True

    train_ds = _open_data(config, config.sample_start, config.sample_stop, "training range")
    val_ds = None
    try:
        gf = train_ds.file(0)
        height, width = train_ds.shape
        mconfig = model_config(config, height, width, gf.grid.bc_y, gf.grid.bc_x)
        if ckpt_info is not None:
            saved_model = VQVAEConfig.from_text(saved_text, ignore_unknown=True)
            # a run made before a model setting without a flag existed goes on as it was built
            mconfig = dataclasses.replace(mconfig, **{k: getattr(saved_model, k) for k in LEGACY_VALUES})
            if saved_model != mconfig:
                diff = [k for k in _MODEL_KEYS if getattr(saved_model, k) != getattr(mconfig, k)] or ["grid"]
                raise ValueError(f"--resume: the model settings ({', '.join(diff)}) differ from the run in {out}")
        n_dev = jax.device_count()
        if config.batch_size % n_dev:
            raise ValueError(f"--batch_size={config.batch_size} is not divisible by the {n_dev} devices")
        if config.batch_size > len(train_ds):
            raise ValueError(f"--batch_size={config.batch_size} exceeds the {len(train_ds)} training samples")
        stats = _stats_or_fail(train_ds, "training range")
        if ckpt_info is not None:  # the same path may now hold other data: the normalisation would change under it
            was = (saved.get("norm_mean"), saved.get("norm_std"))
            if None not in was and not np.allclose(np.array(was, float), [stats.mean, stats.std], rtol=1e-9, atol=0):
                raise ValueError(
                    f"--resume: the training data's statistics (mean {list(stats.mean)}, std {list(stats.std)}) differ "
                    f"from the run's (mean {was[0]}, std {was[1]}): {config.data_path} has changed since the run began"
                )
        if config.has_val:
            if config.val_stop > gf.n_samples:
                raise ValueError(
                    f"--val_stop={config.val_stop} is beyond the {gf.n_samples} committed samples of "
                    f"{config.data_path}; use --val_stop <= {gf.n_samples}"
                )
            val_ds = _open_data(config, config.val_start or 0, config.val_stop, "validation range")
            _stats_or_fail(val_ds, "validation range")
        prov, resumes, data_source = provenance(argv), [], gf.identity()
        if ckpt_info is not None:  # the run keeps its first start's provenance and data source; each resume is listed
            entry = {"step": int(ckpt_info["step"]), **{k: prov[k] for k in RESUME_KEYS}}
            first = saved.get("data_source")
            if first is not None and {k: first.get(k) for k in data_source} != data_source:
                entry["data_source"] = data_source  # the file was replaced (by one with equal statistics)
            resumes = [*saved.get("resumes", []), entry]
            prov = {k: saved[k] for k in prov if k in saved} if "code_version" in saved else prov
            data_source = first or data_source

        sharding, replicated = placements()
        model = make_model(mconfig, jax.random.PRNGKey(config.seed))
        params = eqx.filter(model, eqx.is_inexact_array)
        optimizer = make_optimizer(config, params)
        opt_state = optimizer.init(params)
        counts = jnp.zeros(mconfig.codebook_size, jnp.float32)  # code usage since the last dead-code restart
        step, records, restarted = 0, [], 0
        loader_kw = {"normalize": stats, "sharding": sharding}
        if ckpt_info is not None:
            try:
                with open(out / ckpt_info["file"], "rb") as fh:
                    model, opt_state, counts = eqx.tree_deserialise_leaves(fh, (model, opt_state, counts))
            except Exception as e:  # truncated or foreign file: equinox/numpy raise many kinds
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(f"--resume: checkpoint {out / ckpt_info['file']} cannot be read ({msg})") from e
            step, restarted = int(ckpt_info["step"]), int(ckpt_info.get("restarted_since_log", 0))
            loader = BatchLoader.from_state(train_ds, ckpt_info["loader"], **loader_kw)
            if (out / METRICS_FILE).exists():
                records = [json.loads(s) for s in (out / METRICS_FILE).read_text().splitlines() if s.strip()]
                records = [r for r in records if r["step"] <= step]
        else:
            loader = BatchLoader(train_ds, config.batch_size, seed=config.seed, **loader_kw)

        end = config.steps if stop_after is None else min(config.steps, stop_after)
        if ckpt_info is not None and step >= end:  # nothing to do: leave every file (and its provenance) as it is
            if main:
                print(f"{PROG}: {out} has done its {step} steps; nothing to resume", file=sys.stderr)
            return out

        # ---- from here on the output directory is written
        if main:
            if overwrite:
                for p in _ours(out):
                    p.unlink(missing_ok=True)
            elif out.is_dir():
                remove_temporaries(out, _OUTPUTS)  # of writes a killed run left unfinished
            out.mkdir(parents=True, exist_ok=True)
            atomic_text(out / STATS_FILE, json.dumps(stats.to_dict(), indent=1) + "\n")

        model, opt_state, counts = jax.device_put((model, opt_state, counts), replicated)
        schedule = make_schedule(config)
        train_step = train_step_for(config, optimizer, on_trace=on_trace)

        grid = gf.grid
        data_grid = {"length_y": grid.length_y, "length_x": grid.length_x, "fingerprint": grid.fingerprint()}
        saved_step = step if ckpt_info is not None else None  # the last checkpoint's step (kept if it diverges)

        def check_finite(loss: float | None = None) -> None:
            """Stop with exit code 3 (as a solver's blow-up) when the training diverged: a non-finite logged ``loss``,
            or (``loss`` None, before a save) non-finite weights, so that no NaN model is ever saved."""
            if math.isfinite(loss) if loss is not None else bool(all_finite(model)):
                return
            what = f"loss {loss}" if loss is not None else "non-finite weights"
            kept = "no checkpoint yet" if saved_step is None else f"its checkpoint of step {saved_step}"
            raise BlowUpError(
                f"training diverged by step {step} ({what}); the run in {out} keeps {kept} (lower --lr or raise "
                "--warmup_steps)"
            )

        plotted_at = None  # monotonic time of loss.png's last draw

        def save_all(with_ckpt: bool, final: bool = False) -> None:
            nonlocal saved_step, plotted_at
            check_finite()
            if not main:
                return
            atomic_write(out / MODEL_FILE, lambda p: eqx.tree_serialise_leaves(p, model))
            sha = file_sha256(out / MODEL_FILE)
            text = config_text(mconfig, config, stats, step, prov, sha, data_grid, resumes, data_source)
            atomic_text(out / CONFIG_FILE, text)
            atomic_text(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))
            if records and (final or plotted_at is None or time.monotonic() - plotted_at >= PLOT_EVERY_S):
                _plot(out / PLOT_FILE, records)
                plotted_at = time.monotonic()
            if with_ckpt:
                name = f"ckpt_{step:08d}.eqx"
                atomic_write(out / name, lambda p: eqx.tree_serialise_leaves(p, (model, opt_state, counts)))
                info = {"file": name, "step": step, "loader": loader.state(), "restarted_since_log": restarted}
                atomic_text(out / CKPT_POINTER, json.dumps(info, indent=1) + "\n")
                for old in out.glob("ckpt_*.eqx"):
                    if old.name != name:
                        old.unlink(missing_ok=True)
                saved_step = step

        bar = tqdm(total=config.steps, initial=step, disable=not (progress and main), desc="train_vqvae")
        t_start = time.monotonic()
        poll_every = 1 if jax.process_count() == 1 else config.log_every  # stop.requested() is collective there
        halted = False
        with loader, stop.graceful():
            while step < end and (deadline is None or time.monotonic() < deadline):
                if step % poll_every == 0 and stop.requested():  # SIGTERM: checkpoint this step, then stop
                    halted = True
                    break
                batch = next(loader)
                model, opt_state, counts, metrics = train_step(
                    model, opt_state, counts, batch, jnp.asarray(step + 1, jnp.int32)
                )
                step += 1
                if restart_due(step, config.restart_every):
                    restarted += int(metrics["restarted"])
                if step % config.log_every == 0 or step == config.steps:  # not at a stop_after: a killed run logs none
                    rec = {"step": step, "lr": float(schedule(step - 1)), "restarted": restarted}
                    restarted = 0
                    for k, v in metrics.items():
                        if k == "restarted":
                            continue
                        v = np.asarray(v)
                        rec[k] = v.tolist() if v.ndim else float(v)
                    check_finite(rec["loss"])
                    if val_ds is not None:
                        rec["val_loss"] = _val_loss(model, val_ds, stats, config, replicated)
                    # wall seconds since this process started its loop (compilation included; a resume starts again
                    # from 0): differences between rows give the loop's real time per step
                    rec["elapsed_s"] = round(time.monotonic() - t_start, 3)
                    records.append(rec)
                    usage = ",".join(f"{u:.2f}" for u in rec["usage"])
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", usage=usage)
                bar.update(1)
                if step % config.checkpoint_every == 0 and step < end:
                    save_all(True)
        bar.close()
        save_all(True, final=True)
        if halted:
            raise stop.Terminated(
                f"stopped by SIGTERM at step {step} of {config.steps}, with a checkpoint: rerun with --resume to "
                "continue"
            )
    finally:
        train_ds.close()
        if val_ds is not None:
            val_ds.close()
    return out


def _val_loss(model, val_ds: GustDataset, stats: FieldStats, config: TrainConfig, replicated) -> float:
    """Mean loss over the validation range (every sample once, batches of at most --batch_size)."""
    total, count = 0.0, 0
    bs = min(config.batch_size, len(val_ds))
    with BatchLoader(val_ds, bs, shuffle=False, drop_remainder=False, epochs=1, normalize=stats) as vl:
        for batch in vl:
            batch = jax.device_put(batch, replicated)
            m = _eval_step(
                model, batch, config.spectral_weight, config.prefix_weight, config.compute_dtype, config.prefix_every
            )
            total += float(m["loss"]) * batch.shape[0]
            count += batch.shape[0]
    return total / count


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def build_parser() -> OneLineArgumentParser:
    d = TrainConfig(data_path="-", fields=("-",))
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("data")
    g.add_argument("--data_path", required=True, help="Gust .h5 file (solver output)")
    g.add_argument("--fields", required=True, type=comma_list, help="comma-separated field names, e.g. omega")
    g.add_argument("--output_dir", required=True, help="folder for model, config, metrics and checkpoints")
    g.add_argument("--sample_start", type=int, default=0, help="first training sample (default 0)")
    g.add_argument("--sample_stop", type=int, default=None, help="end of the training samples (default: all)")
    g.add_argument("--val_start", type=int, default=None, help="first validation sample (default 0 with --val_stop)")
    g.add_argument("--val_stop", type=int, default=None, help="end of the validation samples (default: no validation)")
    g = p.add_argument_group("optimisation")
    for name, typ, help_ in (
        ("steps", int, "optimiser steps"),
        ("batch_size", int, "samples per step, a multiple of the device count"),
        ("lr", float, "peak learning rate"),
        ("warmup_steps", int, "linear warm-up steps, < --steps (default --steps // 10)"),
        ("end_lr_ratio", float, "final learning rate / peak after the cosine decay"),
        ("weight_decay", float, "AdamW weight decay on conv kernels (not codebook, norms, biases)"),
        ("spectral_weight", float, "weight of the log-spectral loss (0: off)"),
        ("prefix_weight", float, "weight of the MSE of a decoded random coarse prefix of scales (0: off)"),
        ("prefix_every", int, "decode that prefix for every n-th sample of a batch only (1: every sample)"),
        ("seed", int, "model initialisation and batch order"),
        ("log_every", int, "steps between metrics lines"),
        ("checkpoint_every", int, "steps between checkpoints (one is also written at the end)"),
        ("restart_every", int, "steps between dead-code restarts from the batch's encoder outputs (0: off)"),
    ):
        default = None if name == "warmup_steps" else getattr(d, name)
        g.add_argument(
            f"--{name}", type=typ, default=default, help=help_ if default is None else f"{help_} (default {default})"
        )
    g.add_argument(
        "--compute_dtype",
        choices=COMPUTE_DTYPES,
        default=d.compute_dtype,
        help="encoder/decoder arithmetic: bfloat16 is mixed precision (float32 parameters, quantiser and losses) "
        f"(default {d.compute_dtype})",
    )
    g = p.add_argument_group("model (see models.models.VQVAEConfig)")
    for name in ("ch", "num_res_blocks", "num_groups", "embed_dim", "codebook_size", "phi_kernel"):
        g.add_argument(f"--{name}", type=int, default=getattr(d, name), help=f"(default {getattr(d, name)})")
    for name in ("beta", "phi_ratio"):
        g.add_argument(f"--{name}", type=float, default=getattr(d, name), help=f"(default {getattr(d, name)})")
    g.add_argument("--ch_mult", type=int_list, default=d.ch_mult, help="per-level width multipliers (default 1,2)")
    g.add_argument(
        "--scales", type=scale_list, default=None, help="e.g. 1x1,2x2,4x4,8x8 (default: powers of 2 to latent)"
    )
    g.add_argument("--upsample", choices=UPSAMPLE_METHODS, default=d.upsample, help=f"(default {d.upsample})")
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output_dir")
    g.add_argument("--overwrite", action="store_true", help="delete this tool's files in --output_dir and restart")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_distributed_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), TrainConfig, train, None if argv is None else list(argv))


if __name__ == "__main__":
    exit_process(main())
