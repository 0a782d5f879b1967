"""Use a trained VQ-VAE run: load it, open matching data, encode / decode / reconstruct in batches.

The one place the tokenizer (``models.tokenizer``) and the reconstruction analysis (``models.analyze_reconstruction``)
load a run written by ``models.train_vqvae``:

    trained = load_trained("runs/x/model.eqx", "runs/x/config.txt")
    with open_matching(trained, "data.h5", sample_start=4000, sample_stop=5000) as ds:
        for start, x in normalized_batches(trained, ds, batch_size=64):
            idx = encode_batch(trained.model, x)  # list of (B, h_k, w_k) int32, one per scale
            y = decode_batch(trained.model, idx)  # (B, C, H, W), normalised units
            fields = trained.stats.denormalize(np.asarray(y))

``config.txt`` holds the model's ``VQVAEConfig`` lines plus the training lines (fields, normalisation mean/std, data
source, step); everything needed to rebuild and use the model comes from it. Every failure is a one-line
``ValueError`` naming the bad value, for the CLIs to print.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from dataloaders import BatchLoader, FieldStats, GustDataset
from solvers.common.atomic import file_sha256

from .models import MultiScaleVQVAE, VQVAEConfig, all_finite, load
from .train_vqvae import read_settings

__all__ = [
    "TrainedModel",
    "decode_batch",
    "denormalize",
    "encode_batch",
    "load_trained",
    "normalized_batches",
    "open_matching",
    "prefix_batch",
    "reconstruct_batch",
]


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained model with what it was trained on: field names (channel order) and their normalisation."""

    model: MultiScaleVQVAE
    config: VQVAEConfig
    fields: tuple[str, ...]
    stats: FieldStats
    config_text: str
    settings: dict
    checkpoint: Path
    config_path: Path
    checkpoint_sha256: str

    def provenance(self) -> dict:
        """JSON-ready description of the checkpoint (paths, hash, training data and step)."""
        s = self.settings
        return {
            "checkpoint": str(self.checkpoint.resolve()),
            "checkpoint_sha256": self.checkpoint_sha256,
            "config_path": str(self.config_path.resolve()),
            "train_data_path": s.get("data_path"),
            "train_sample_range": [s.get("sample_start"), s.get("sample_stop")],
            "train_step": s.get("step"),
            "fields": list(self.fields),
        }


def load_trained(
    checkpoint: str | os.PathLike, config_path: str | os.PathLike, overrides: Mapping[str, object] | None = None
) -> TrainedModel:
    """Load ``model.eqx`` + ``config.txt`` of a ``models.train_vqvae`` run.

    ``overrides`` maps ``VQVAEConfig`` keys to values a user gave explicitly (e.g. ``--codebook_size 512``); each must
    equal the checkpoint's value, else a one-line ``ValueError`` (an override never silently changes a trained model).
    """
    ckpt, cfg_path = Path(checkpoint), Path(config_path)
    for flag, p in (("--checkpoint", ckpt), ("--config_path", cfg_path)):
        if not p.is_file():
            raise ValueError(f"{flag} {p} does not exist or is not a file")
    try:
        text = cfg_path.read_text()
    except UnicodeDecodeError:
        raise ValueError(
            f"--config_path {cfg_path} is not a text config.txt (a model.eqx given in its place?)"
        ) from None
    settings = read_settings(text, f"--config_path {cfg_path}")
    try:
        config = VQVAEConfig.from_text(text, ignore_unknown=True)
    except ValueError as err:
        raise ValueError(f"--config_path {cfg_path}: {err}") from None
    for key, value in (overrides or {}).items():
        if key not in {f.name for f in dataclasses.fields(VQVAEConfig)}:
            raise ValueError(
                f"unknown model option {key!r}; allowed: {', '.join(f.name for f in dataclasses.fields(VQVAEConfig))}"
            )
        saved = getattr(config, key)
        given = value
        if isinstance(saved, tuple):
            given = tuple(tuple(v) if isinstance(v, list | tuple) else v for v in value)
        if given != saved:
            raise ValueError(f"--{key}={value!r} contradicts the checkpoint's config ({key} = {json.dumps(saved)})")
    missing = [k for k in ("norm_fields", "norm_mean", "norm_std", "norm_count") if k not in settings]
    if missing:
        raise ValueError(
            f"--config_path {cfg_path} has no {', '.join(missing)}: not a config.txt written by models.train_vqvae"
        )
    try:
        stats = FieldStats(settings["norm_fields"], settings["norm_mean"], settings["norm_std"], settings["norm_count"])
    except ValueError as err:
        raise ValueError(f"--config_path {cfg_path}: {err}") from None
    if len(stats.fields) != config.in_channels:
        raise ValueError(
            f"--config_path {cfg_path}: {len(stats.fields)} normalised fields but in_channels = {config.in_channels}"
        )
    model, _ = load(ckpt, cfg_path)
    sha = file_sha256(ckpt)
    if "model_sha256" in settings and settings["model_sha256"] != sha:  # runs before 2026-11-27 do not record it
        # train_vqvae replaces model.eqx, then config.txt: a training killed between the two leaves such a pair
        killed = (
            " (or, if its training was killed while saving, rerun it with --resume)"
            if ckpt.parent == cfg_path.parent and (ckpt.parent / "checkpoint.json").is_file()
            else ""
        )
        raise ValueError(
            f"--checkpoint {ckpt} is not the model that --config_path {cfg_path} describes (its sha256 differs from "
            f"the config's model_sha256): use the model.eqx and config.txt of one run folder{killed}"
        )
    if not bool(all_finite(model)):
        raise ValueError(f"--checkpoint {ckpt} has non-finite (NaN/inf) weights: its training diverged")
    return TrainedModel(
        model=model,
        config=config,
        fields=stats.fields,
        stats=stats,
        config_text=text,
        settings=settings,
        checkpoint=ckpt,
        config_path=cfg_path,
        checkpoint_sha256=sha,
    )


def open_matching(
    trained: TrainedModel,
    data_path: str | os.PathLike,
    *,
    sample_start: int = 0,
    sample_stop: int | None = None,
    fields: Sequence[str] | None = None,
) -> GustDataset:
    """Open ``data_path`` restricted to ``[sample_start, sample_stop)`` with the model's fields, grid and boundaries.

    ``fields`` (optional) must be exactly the model's fields in its channel order.
    """
    if fields is not None and tuple(fields) != trained.fields:
        raise ValueError(
            f"--fields {','.join(fields)} do not match the model's fields {','.join(trained.fields)} (in that order)"
        )
    if not Path(data_path).is_file():
        raise ValueError(f"--data_path {data_path} does not exist or is not a file")
    if sample_stop is not None and sample_stop <= sample_start:
        raise ValueError(f"--sample_start {sample_start} and --sample_stop {sample_stop} leave an empty sample range")
    try:
        ds = GustDataset(data_path, list(trained.fields), sample_start=sample_start, sample_stop=sample_stop)
    except OSError as err:
        raise ValueError(f"--data_path {data_path} cannot be read as a Gust file: {err}") from None
    c = trained.config
    problem = None
    if tuple(ds.shape) != (c.height, c.width):
        problem = f"grid {ds.shape[0]}x{ds.shape[1]} but the model was trained on {c.height}x{c.width}"
    elif (ds.grid.bc_y, ds.grid.bc_x) != (c.bc_y, c.bc_x):
        problem = f"boundaries (y {ds.grid.bc_y}, x {ds.grid.bc_x}) but the model's are (y {c.bc_y}, x {c.bc_x})"
    elif (grid := trained.settings.get("data_grid")) and grid["fingerprint"] != ds.grid.fingerprint():
        problem = (
            f"another grid (lengths y {ds.grid.length_y:g}, x {ds.grid.length_x:g}, or other coordinates) than the "
            f"model was trained on (lengths y {grid['length_y']:g}, x {grid['length_x']:g})"
        )
    if problem:
        ds.close()
        raise ValueError(f"--data_path {data_path} has {problem}")
    return ds


def normalized_batches(
    trained: TrainedModel,
    ds: GustDataset,
    batch_size: int,
    *,
    progress: bool = False,
    desc: str = "batches",
) -> Iterator[tuple[int, jax.Array]]:
    """Yield ``(first_item_index, batch)`` over every item of ``ds`` in order, normalised with the model's stats.

    Batches are ``(B, C, H, W)`` float32 on the default device (the GPU when present), read ahead in a background
    thread; the last one may be smaller.
    """
    from tqdm import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"--batch_size must be an integer >= 1 (got {batch_size!r})")
    bs = min(int(batch_size), len(ds))
    start = 0
    with (
        BatchLoader(ds, bs, shuffle=False, drop_remainder=False, epochs=1, normalize=trained.stats) as loader,
        tqdm(total=len(ds), disable=not progress, desc=desc, unit="sample") as bar,
    ):
        for batch in loader:
            if not bool(jax.numpy.isfinite(batch).all()):
                stop = start + batch.shape[0] - 1
                raise ValueError(f"--data_path has non-finite values (NaN/inf) in items {start}..{stop} of the range")
            yield start, batch
            start += batch.shape[0]
            bar.update(batch.shape[0])


@eqx.filter_jit
def encode_batch(model: MultiScaleVQVAE, x: jax.Array) -> list[jax.Array]:
    """Code indices of a normalised batch: a list with one ``(B, h_k, w_k)`` int32 array per scale."""
    return jax.vmap(model.encode_indices)(x)


@eqx.filter_jit
def decode_batch(model: MultiScaleVQVAE, indices: Sequence[jax.Array]) -> jax.Array:
    """Decoded fields ``(B, C, H, W)`` (normalised units) from per-scale index maps ``(B, h_k, w_k)``."""
    return jax.vmap(model.decode_indices)(list(indices))


@eqx.filter_jit
def reconstruct_batch(model: MultiScaleVQVAE, x: jax.Array) -> jax.Array:
    """Encode → quantise → decode a normalised batch: ``decode_batch(encode_batch(x))`` in one program (equal up to
    float rounding, ~1e-7, since XLA fuses the two differently)."""
    return jax.vmap(lambda s: model.decode_indices(model.encode_indices(s)))(x)


@eqx.filter_jit
def prefix_batch(model: MultiScaleVQVAE, x: jax.Array) -> jax.Array:
    """``(K, B, C, H, W)``: the decoded reconstruction from the first k = 1..K scales of each sample."""
    out = jax.vmap(model.prefix_reconstructions)(x)
    return jax.numpy.stack(out)


def denormalize(trained: TrainedModel, x: jax.Array | np.ndarray) -> np.ndarray:
    """Normalised ``(..., C, H, W)`` model output back to physical units, as float32 numpy."""
    return np.asarray(trained.stats.denormalize(np.asarray(x, dtype=np.float32)), dtype=np.float32)
