"""Multi-scale VQ-VAE codes → token sequences for autoregressive training (issue 6).

    # statistics only, nothing written
    python -m models.tokenizer info --checkpoint runs/x/model.eqx --config_path runs/x/config.txt --data_path data.h5
    # tokenise and save (a validation/test split reuses the training split's vocabulary with --vocab_from)
    python -m models.tokenizer save --checkpoint runs/x/model.eqx --config_path runs/x/config.txt \
        --data_path data.h5 --output tokens.npz [--sample_start 0 --sample_stop 4000] [--vocab_from tokens_train.npz]

Vocabulary (:func:`fit`, :func:`build_vocabulary`). One encode pass counts, per scale k, how often each codebook index
is chosen. The codes used at scale k, sorted by codebook index, become that scale's tokens: scale k owns the
contiguous token range ``[start_k, end_k)`` and its i-th used code (in increasing codebook index) is token
``start_k + i``. Ranges follow the scale order, are disjoint and together cover ``[0, vocab_size)``.

Deterministic scales (the convention of this module). A scale whose fit split uses exactly one code is
*deterministic*: it is recorded with its constant code, owns no token id (its range is empty, ``start_k == end_k``)
and has no position in the token sequence. So a sequence holds the trainable scales only, scale-major in scale order
and row-major (y then x) inside a scale; its length is ``L = sum over trainable k of h_k * w_k`` and every entry is a
unified token id in ``[0, vocab_size)``. Decoding puts the constant code back at every deterministic scale.
``first_trainable_scale`` is the first scale with more than one code (``K`` when every scale is deterministic).

Out of vocabulary. Tokenising with a vocabulary fitted on another split (``--vocab_from``), a codebook index never
seen at that scale during the fit is replaced by the used code of that scale whose vector is nearest in cosine
similarity (both vectors L2-normalised, as :func:`models.models._quantize_single` compares them; ties go to the
smaller codebook index). Every replacement is counted per scale and reported (printed, and stored as ``oov_counts``),
never dropped silently. At a deterministic scale every code other than the constant one is out of vocabulary (and
maps to it); a scale deterministic on the fit split but with more than one code on this split is reported.

Bits per sample (``info``): ``sum over trainable k of h_k * w_k * log2(n_k)`` with ``n_k = end_k - start_k`` the
size of scale k's vocabulary, i.e. the length of a fixed-length code that spends log2(n_k) bits (not rounded up)
per token of scale k; deterministic scales cost 0 bits. Compression ratio: ``C * H * W * 32`` (the float32 fields)
divided by that.

Teacher forcing (:func:`teacher_forcing_inputs`). As in VAR (Tian et al. 2024, arXiv:2404.02905, section 3.2), the
transformer predicts scale k from the cumulative latent reconstruction of scales ``< k``, area-downsampled to scale
k's size: ``input_k = area_down(f_hat_{<k}, h_k, w_k)``, an array ``(B, h_k * w_k, D)`` (row-major positions, D the
code dimension). ``f_hat_{<0} = 0``, so scale 0's input is all zeros: an AR model puts its own start token there.

Output file (``save``, :func:`save_tokenized_data`; one ``.npz``, written atomically, read by
:func:`load_tokenized_data`):

- ``format`` = ``"gust-tokens"``, ``format_version`` = ``"1.0"``;
- ``indices_flat`` ``(n_samples, L)``: the token sequences, in the smallest unsigned integer dtype holding
  ``vocab_size - 1`` (uint8, uint16 or uint32);
- ``codebook`` ``(vocab_size, D)`` float32: the code vectors in unified-token order, L2-normalised (the unit vectors
  the quantiser looks up; its per-scale gain and phi_k are model parameters, applied when decoding);
- ``scales`` ``(K, 2)``, ``token_ranges`` ``(K, 2)`` ``[start_k, end_k)``, ``token_to_code`` ``(vocab_size,)``
  (codebook index of each token), ``code_to_token`` ``(K, codebook_size)`` (token of each codebook index at each scale,
  -1 where the code is not in that scale's vocabulary, and everywhere at a deterministic scale), ``code_counts``
  ``(K, codebook_size)`` (the fit counts, from which the vocabulary is rebuilt), ``deterministic_scales`` and
  ``deterministic_codes`` (same length), ``first_trainable_scale``, ``oov_counts`` ``(K,)`` (replacements made while
  tokenising this file), all int64;
- ``config_text`` (the run's ``config.txt``) and ``provenance`` (JSON: data file absolute path and the run that
  wrote it (``GustFile.identity``), sample range, checkpoint path and sha256, config path, ``--vocab_from`` file
  and hash, code version, command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.atomic import atomic_write, file_sha256
from solvers.common.cli import OneLineArgumentParser, add_trained_run_flags, exit_process, positive_int, tool_main

from .inference import (
    TrainedModel,
    decode_batch,
    denormalize,
    load_trained,
    normalized_batches,
    open_matching,
)
from .models import MultiScaleVQVAE, _l2_normalize, area_downsample

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TokenizedData",
    "TokenizedLoader",
    "Vocabulary",
    "build_vocabulary",
    "code_counts",
    "create_tokenized_dataloader",
    "decode_tokens",
    "fit",
    "load_tokenized_data",
    "oov_counts",
    "save_tokenized_data",
    "teacher_forcing_inputs",
    "tokenize",
    "tokens_to_indices",
]

PROG = "python -m models.tokenizer"
FORMAT, FORMAT_VERSION = "gust-tokens", "1.0"


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.int64)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
    """Per-scale used codes and their unified token ranges (see the module docstring for the conventions).

    scales: ``(h_k, w_k)`` of the model's K scales. codebook_size: V of the model. counts: ``(K, V)`` int64, how often
    each codebook index was chosen at each scale on the fit split. Everything else is derived from these.
    """

    scales: tuple[tuple[int, int], ...]
    codebook_size: int
    counts: np.ndarray

    def __post_init__(self):
        counts = np.asarray(self.counts)
        k = len(self.scales)
        if counts.shape != (k, self.codebook_size) or counts.dtype.kind not in "iu" or (counts < 0).any():
            raise ValueError(
                f"counts must be non-negative integers of shape ({k}, {self.codebook_size}) "
                f"(got {counts.dtype} {counts.shape})"
            )
        empty = [i for i in range(k) if not counts[i].any()]
        if empty:
            raise ValueError(f"scale {empty[0]} has no code counts; fit on at least one sample")
        object.__setattr__(self, "scales", tuple((int(h), int(w)) for h, w in self.scales))
        object.__setattr__(self, "counts", _frozen(counts))

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    @property
    def used(self) -> tuple[np.ndarray, ...]:
        """Per scale, the sorted codebook indices used on the fit split."""
        return tuple(np.flatnonzero(c) for c in self.counts)

    @property
    def deterministic(self) -> tuple[bool, ...]:
        return tuple(int(np.count_nonzero(c)) == 1 for c in self.counts)

    @property
    def deterministic_scales(self) -> tuple[int, ...]:
        return tuple(k for k, d in enumerate(self.deterministic) if d)

    @property
    def deterministic_codes(self) -> tuple[int, ...]:
        """The constant code of each scale in :attr:`deterministic_scales` (same order)."""
        return tuple(int(np.flatnonzero(self.counts[k])[0]) for k in self.deterministic_scales)

    @property
    def trainable_scales(self) -> tuple[int, ...]:
        return tuple(k for k, d in enumerate(self.deterministic) if not d)

    @property
    def first_trainable_scale(self) -> int:
        t = self.trainable_scales
        return t[0] if t else self.n_scales

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """``[start_k, end_k)`` per scale; empty at deterministic scales; contiguous and covering [0, vocab_size)."""
        out, start = [], 0
        for k, used in enumerate(self.used):
            n = 0 if self.deterministic[k] else used.size
            out.append((start, start + n))
            start += n
        return tuple(out)

    @property
    def vocab_size(self) -> int:
        return self.ranges[-1][1]

    @property
    def seq_len(self) -> int:
        """L: token positions per sample (trainable scales only)."""
        return sum(h * w for k, (h, w) in enumerate(self.scales) if not self.deterministic[k])

    @property
    def positions(self) -> tuple[tuple[int, int], ...]:
        """``[p_k, q_k)``: the slice of a token sequence holding scale k (empty at deterministic scales)."""
        out, p = [], 0
        for k, (h, w) in enumerate(self.scales):
            n = 0 if self.deterministic[k] else h * w
            out.append((p, p + n))
            p += n
        return tuple(out)

    @property
    def token_to_code(self) -> np.ndarray:
        """``(vocab_size,)``: the codebook index behind each unified token."""
        parts = [self.used[k] for k in self.trainable_scales]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    @property
    def code_to_token(self) -> np.ndarray:
        """``(K, codebook_size)``: token of each codebook index at each scale, -1 where it has none."""
        out = np.full((self.n_scales, self.codebook_size), -1, np.int64)
        for k in self.trainable_scales:
            start, end = self.ranges[k]
            out[k, self.used[k]] = np.arange(start, end)
        return out

    @property
    def perplexity(self) -> np.ndarray:
        """``(K,)``: exp of the entropy of each scale's code distribution on the fit split."""
        p = self.counts / self.counts.sum(axis=1, keepdims=True)
        logp = np.log(np.where(p > 0, p, 1.0))
        return np.exp(-(p * logp).sum(axis=1))

    @property
    def bits_per_sample(self) -> float:
        """``sum over trainable k of h_k * w_k * log2(n_k)`` (see the module docstring)."""
        total = 0.0
        for k in self.trainable_scales:
            h, w = self.scales[k]
            start, end = self.ranges[k]
            total += h * w * math.log2(end - start)
        return total

    def index_dtype(self) -> np.dtype:
        """Smallest unsigned dtype holding every token id."""
        top = max(self.vocab_size - 1, 0)
        return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if top <= np.iinfo(t).max))

    def lookup_tables(self, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K, V)`` token of every codebook index (out-of-vocabulary codes re-quantised) and ``(K, V)`` in-vocab mask.

        At a deterministic scale the token table holds the constant code's *codebook index* (the scale owns no
        tokens; the table is only used to count out-of-vocabulary codes there).
        """
        codebook = np.asarray(codebook, np.float32)
        if codebook.shape[0] != self.codebook_size:
            raise ValueError(
                f"codebook has {codebook.shape[0]} codes but the vocabulary was fitted on {self.codebook_size}"
            )
        cn = np.asarray(_l2_normalize(jnp.asarray(codebook)))
        table = np.zeros((self.n_scales, self.codebook_size), np.int64)
        known = self.counts > 0
        code_to_token = self.code_to_token
        for k, used in enumerate(self.used):
            nearest = used[np.argmax(cn @ cn[used].T, axis=1)]  # argmax: first maximum = smaller index on ties
            nearest[used] = used
            table[k] = nearest if self.deterministic[k] else code_to_token[k, nearest]
        return table, known


def code_counts(indices: Sequence[np.ndarray], codebook_size: int) -> np.ndarray:
    """``(K, V)`` int64 counts of each codebook index per scale from per-scale index maps ``(B, h_k, w_k)``."""
    return np.stack([np.bincount(np.asarray(i).ravel(), minlength=codebook_size) for i in indices]).astype(np.int64)


def build_vocabulary(counts: np.ndarray, scales: Sequence[Sequence[int]], codebook_size: int) -> Vocabulary:
    """The vocabulary of per-scale code counts ``(K, V)`` (pure; see :class:`Vocabulary`)."""
    return Vocabulary(tuple(tuple(s) for s in scales), int(codebook_size), np.asarray(counts))


# --------------------------------------------------------------------------------------------------------------------
# Encoding passes
# --------------------------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _batch_counts(model: MultiScaleVQVAE, x: jax.Array) -> jax.Array:
    idx = jax.vmap(model.encode_indices)(x)
    v = model.quantizer.codebook.shape[0]
    return jnp.stack([jnp.bincount(i.ravel(), length=v) for i in idx])


@eqx.filter_jit
def _batch_tokens(model: MultiScaleVQVAE, x: jax.Array, table: jax.Array, trainable: tuple[int, ...]):
    """Tokens ``(B, L)`` int32 and code counts ``(K, V)`` of one normalised batch."""
    idx = jax.vmap(model.encode_indices)(x)
    b, v = x.shape[0], model.quantizer.codebook.shape[0]
    toks = [table[k][idx[k].reshape(b, -1)] for k in trainable]
    counts = jnp.stack([jnp.bincount(i.ravel(), length=v) for i in idx])
    tokens = jnp.concatenate(toks, axis=1) if toks else jnp.zeros((b, 0), jnp.int32)
    return tokens.astype(jnp.int32), counts


def fit(trained: TrainedModel, ds, batch_size: int = 64, progress: bool = False) -> Vocabulary:
    """Encode every sample of ``ds`` (from :func:`models.inference.open_matching`) once; the vocabulary of its codes."""
    total = np.zeros((len(trained.config.scales), trained.config.codebook_size), np.int64)
    for _, x in normalized_batches(trained, ds, batch_size, progress=progress, desc="fit"):
        total += np.asarray(_batch_counts(trained.model, x), np.int64)
    return build_vocabulary(total, trained.config.scales, trained.config.codebook_size)


def _check_vocab(trained: TrainedModel, vocab: Vocabulary) -> None:
    c = trained.config
    if vocab.scales != tuple(c.scales) or vocab.codebook_size != c.codebook_size:
        raise ValueError(
            f"vocabulary (scales {vocab.scales}, {vocab.codebook_size} codes) does not fit this model "
            f"(scales {c.scales}, {c.codebook_size} codes)"
        )


def oov_counts(vocab: Vocabulary, counts: np.ndarray) -> np.ndarray:
    """``(K,)``: how many of the positions counted in ``counts`` ``(K, V)`` hold a code outside ``vocab``."""
    return np.where(vocab.counts > 0, 0, np.asarray(counts, np.int64)).sum(axis=1)


def _token_batches(
    trained: TrainedModel, ds, vocab: Vocabulary, batch_size: int, progress: bool
) -> Iterator[tuple[jax.Array, np.ndarray]]:
    _check_vocab(trained, vocab)
    table, _ = vocab.lookup_tables(np.asarray(trained.model.quantizer.codebook))
    table = jnp.asarray(table, jnp.int32)
    trainable = vocab.trainable_scales
    for _, x in normalized_batches(trained, ds, batch_size, progress=progress, desc="tokenize"):
        tokens, counts = _batch_tokens(trained.model, x, table, trainable)
        yield tokens, np.asarray(counts, np.int64)


def tokenize(
    trained: TrainedModel, ds, vocab: Vocabulary, batch_size: int = 64, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode ``ds`` and map its codes through ``vocab``.

    Returns the token sequences ``(n_samples, L)`` (in :meth:`Vocabulary.index_dtype`), the out-of-vocabulary counts
    ``(K,)`` and this split's own code counts ``(K, V)``.
    """
    out = np.zeros((len(ds), vocab.seq_len), vocab.index_dtype())
    counts = np.zeros_like(np.asarray(vocab.counts))
    start = 0
    for tokens, c in _token_batches(trained, ds, vocab, batch_size, progress):
        out[start : start + tokens.shape[0]] = np.asarray(tokens)
        start += tokens.shape[0]
        counts += c
    return out, oov_counts(vocab, counts), counts


class TokenizedLoader:
    """Iterable over token batches ``(B, L)`` int32 (jax arrays on the default device), straight from an HDF5 file.

    Each iteration opens the file, encodes it in order and closes it; the last batch may be smaller.
    ``oov_counts`` ``(K,)`` holds the out-of-vocabulary replacements of the latest (or current) pass.
    """

    def __init__(self, trained, data_path, vocab, batch_size, sample_start, sample_stop, fields, progress):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 (got {batch_size!r})")
        _check_vocab(trained, vocab)
        self.trained, self.data_path, self.vocab, self.batch_size = trained, data_path, vocab, int(batch_size)
        self.sample_start, self.sample_stop, self.fields, self.progress = sample_start, sample_stop, fields, progress
        self.oov_counts = np.zeros(vocab.n_scales, np.int64)
        with self._open() as ds:  # validate the data up front
            self.n_samples = len(ds)

    def _open(self):
        return open_matching(
            self.trained,
            self.data_path,
            sample_start=self.sample_start,
            sample_stop=self.sample_stop,
            fields=self.fields,
        )

    def __len__(self) -> int:
        return -(-self.n_samples // min(self.batch_size, self.n_samples))

    def __iter__(self) -> Iterator[jax.Array]:
        self.oov_counts = np.zeros(self.vocab.n_scales, np.int64)
        with self._open() as ds:
            for tokens, counts in _token_batches(self.trained, ds, self.vocab, self.batch_size, self.progress):
                self.oov_counts += oov_counts(self.vocab, counts)
                yield tokens


def create_tokenized_dataloader(
    trained: TrainedModel,
    data_path: str | os.PathLike,
    vocab: Vocabulary,
    batch_size: int = 64,
    sample_start: int = 0,
    sample_stop: int | None = None,
    *,
    fields: Sequence[str] | None = None,
    progress: bool = False,
) -> TokenizedLoader:
    """Token batches of ``data_path[sample_start:sample_stop]`` without writing a file (same tokens as ``save``)."""
    return TokenizedLoader(trained, data_path, vocab, batch_size, sample_start, sample_stop, fields, progress)


# --------------------------------------------------------------------------------------------------------------------
# Decoding and teacher forcing
# --------------------------------------------------------------------------------------------------------------------


def check_tokens(tokens, vocab: Vocabulary) -> np.ndarray:
    """``tokens`` as an array, or a ValueError unless it is ``(B, L)`` integers with each scale's positions in that
    scale's token range (so all in [0, vocab_size)). Reads only minima and maxima: no copy of the tokens."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != vocab.seq_len or tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers of shape (B, {vocab.seq_len}) (got {tokens.dtype} {tokens.shape})")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab.vocab_size):
        raise ValueError(f"tokens must lie in [0, {vocab.vocab_size}) (got {tokens.min()}..{tokens.max()})")
    for k, ((p, q), (start, end)) in enumerate(zip(vocab.positions, vocab.ranges, strict=True)):
        t = tokens[:, p:q]
        if t.size and (t.min() < start or t.max() >= end):
            raise ValueError(f"scale-{k} tokens must lie in [{start}, {end}) (got {t.min()}..{t.max()})")
    return tokens


def tokens_to_indices(tokens, vocab: Vocabulary) -> list[np.ndarray]:
    """Token sequences ``(B, L)`` → per-scale codebook index maps ``(B, h_k, w_k)`` int32 (all K scales)."""
    tokens = check_tokens(tokens, vocab)
    det = dict(zip(vocab.deterministic_scales, vocab.deterministic_codes, strict=True))
    b = tokens.shape[0]
    out = []
    for k, ((h, w), (p, q)) in enumerate(zip(vocab.scales, vocab.positions, strict=True)):
        if k in det:
            out.append(np.full((b, h, w), det[k], np.int32))
        else:
            out.append(vocab.token_to_code[tokens[:, p:q].astype(np.int64)].reshape(b, h, w).astype(np.int32))
    return out


def decode_tokens(trained: TrainedModel, tokens, vocab: Vocabulary) -> np.ndarray:
    """Token sequences ``(B, L)`` → fields ``(B, C, H, W)`` float32 in physical units (codes → f_hat → decoder)."""
    _check_vocab(trained, vocab)
    idx = [jnp.asarray(i) for i in tokens_to_indices(tokens, vocab)]
    return denormalize(trained, decode_batch(trained.model, idx))


@eqx.filter_jit
def _teacher_forcing(model: MultiScaleVQVAE, indices: list[jax.Array]) -> list[jax.Array]:
    q = model.quantizer
    cn = _l2_normalize(q.codebook)

    def one(idx):
        f_hat = jnp.zeros((q.codebook.shape[1], *q.latent_shape))
        out = []
        for k, (h, w) in enumerate(q.scales):
            out.append(area_downsample(f_hat, h, w).reshape(f_hat.shape[0], h * w).T)
            f_hat = f_hat + q._embed(k, cn[idx[k]])
        return out

    return jax.vmap(one)(indices)


def teacher_forcing_inputs(trained: TrainedModel, tokens, vocab: Vocabulary, *, concat: bool = False):
    """VAR's next-scale inputs from token sequences ``(B, L)`` (see the module docstring).

    Returns a list over all K scales of float32 arrays ``(B, h_k * w_k, D)``: ``area_down(f_hat_{<k}, h_k, w_k)``
    flattened row-major (entry 0 is zeros). With ``concat=True``, the trainable scales' entries concatenated into one
    ``(B, L, D)`` array aligned position by position with ``tokens``.
    """
    _check_vocab(trained, vocab)
    idx = [jnp.asarray(i) for i in tokens_to_indices(tokens, vocab)]
    out = [np.asarray(a, np.float32) for a in _teacher_forcing(trained.model, idx)]
    if not concat:
        return out
    b, d = len(tokens), trained.config.embed_dim
    parts = [out[k] for k in vocab.trainable_scales]
    return np.concatenate(parts, axis=1) if parts else np.zeros((b, 0, d), np.float32)


# --------------------------------------------------------------------------------------------------------------------
# File
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedData:
    """Contents of a tokens ``.npz`` (see the module docstring)."""

    tokens: np.ndarray
    vocab: Vocabulary
    codebook: np.ndarray
    oov_counts: np.ndarray
    config_text: str
    provenance: dict
    format_version: str


class _Foreign(Exception):
    """A readable file that is not a tokens file."""


_INT_KEYS = (
    "scales",
    "codebook_size",
    "token_ranges",
    "token_to_code",
    "code_to_token",
    "code_counts",
    "deterministic_scales",
    "deterministic_codes",
    "first_trainable_scale",
    "oov_counts",
)
_KEYS = ("format", "format_version", "indices_flat", "codebook", "config_text", "provenance", *_INT_KEYS)


def save_tokenized_data(
    path: str | os.PathLike,
    tokens: np.ndarray,
    vocab: Vocabulary,
    trained: TrainedModel,
    provenance: dict,
    overwrite: bool = False,
    oov_counts: np.ndarray | None = None,
) -> Path:
    """Write the tokens ``.npz`` atomically (``FileExistsError`` if ``path`` exists and not ``overwrite``).

    ``provenance`` (data, code, ...) is stored with the checkpoint's own entries (``trained.provenance()``: path,
    sha256, training data), which ``--vocab_from`` checks; ``oov_counts`` (K,) defaults to zeros.
    """
    _check_vocab(trained, vocab)
    tokens = check_tokens(tokens, vocab)
    oov = np.zeros(vocab.n_scales, np.int64) if oov_counts is None else np.asarray(oov_counts)
    if oov.shape != (vocab.n_scales,) or oov.dtype.kind not in "iu" or np.any(oov < 0):
        raise ValueError(f"oov_counts must be {vocab.n_scales} integer counts >= 0 (got {oov.tolist()})")
    provenance = {**provenance, **trained.provenance()}
    cn = np.asarray(_l2_normalize(trained.model.quantizer.codebook), np.float32)
    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "indices_flat": tokens.astype(vocab.index_dtype()),
        "codebook": cn[vocab.token_to_code],
        "scales": np.asarray(vocab.scales, np.int64).reshape(-1, 2),
        "codebook_size": np.int64(vocab.codebook_size),
        "token_ranges": np.asarray(vocab.ranges, np.int64).reshape(-1, 2),
        "token_to_code": vocab.token_to_code.astype(np.int64),
        "code_to_token": vocab.code_to_token,
        "code_counts": np.asarray(vocab.counts, np.int64),
        "deterministic_scales": np.asarray(vocab.deterministic_scales, np.int64),
        "deterministic_codes": np.asarray(vocab.deterministic_codes, np.int64),
        "first_trainable_scale": np.int64(vocab.first_trainable_scale),
        "oov_counts": oov.astype(np.int64),
        "config_text": np.array(trained.config_text),
        "provenance": np.array(json.dumps(provenance, sort_keys=True)),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write, overwrite=overwrite)


def load_tokenized_data(path: str | os.PathLike) -> TokenizedData:
    """Read and validate a tokens ``.npz``; a foreign, truncated or inconsistent file is a one-line ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise _Foreign("it holds a single array, not an .npz archive")
        with z:
            missing = [k for k in _KEYS if k not in z.files]
            if "format" in missing or str(z["format"]) != FORMAT:
                raise _Foreign(f"it has no format tag {FORMAT!r}")
            if missing:
                raise _Foreign(f"it lacks {', '.join(missing)}")
            a = {k: z[k] for k in _KEYS}
    except _Foreign as err:
        raise ValueError(f"{path} is not a tokens file of models.tokenizer: {err}") from None
    except Exception as err:  # zipfile, zlib, numpy and OS errors all mean a truncated, foreign or unreadable file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} cannot be read as a tokens .npz (truncated or foreign?): {reason}") from None

    def bad(msg: str) -> ValueError:
        return ValueError(f"{path} is an inconsistent tokens file: {msg}")

    if str(a["format_version"]).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise bad(f"format_version {a['format_version']} not readable by version {FORMAT_VERSION}")
    for k in _INT_KEYS:
        if a[k].dtype != np.int64:
            raise bad(f"{k} has dtype {a[k].dtype}, expected int64")
    for k in ("codebook_size", "first_trainable_scale"):
        if a[k].ndim != 0:
            raise bad(f"{k} has shape {a[k].shape}, expected a single number")
    scales = a["scales"]
    if scales.ndim != 2 or scales.shape[1] != 2 or scales.shape[0] < 1:
        raise bad(f"scales has shape {scales.shape}")
    try:
        vocab = build_vocabulary(a["code_counts"], scales.tolist(), int(a["codebook_size"]))
    except ValueError as err:
        raise bad(str(err)) from None
    checks = {
        "token_ranges": np.asarray(vocab.ranges, np.int64).reshape(-1, 2),
        "token_to_code": vocab.token_to_code,
        "code_to_token": vocab.code_to_token,
        "deterministic_scales": np.asarray(vocab.deterministic_scales, np.int64),
        "deterministic_codes": np.asarray(vocab.deterministic_codes, np.int64),
        "first_trainable_scale": np.int64(vocab.first_trainable_scale),
    }
    for k, want in checks.items():
        if a[k].shape != np.shape(want) or not np.array_equal(a[k], want):
            raise bad(f"{k} does not match the vocabulary of code_counts")
    tokens = a["indices_flat"]
    if tokens.ndim != 2 or tokens.shape[1] != vocab.seq_len or tokens.dtype != vocab.index_dtype():
        raise bad(f"indices_flat is {tokens.dtype} {tokens.shape}, expected {vocab.index_dtype()} (n, {vocab.seq_len})")
    try:
        check_tokens(tokens, vocab)
    except ValueError as err:
        raise bad(f"indices_flat: {err}") from None
    cb = a["codebook"]
    if cb.ndim != 2 or cb.shape[0] != vocab.vocab_size or cb.dtype != np.float32:
        raise bad(f"codebook is {cb.dtype} {cb.shape}, expected float32 ({vocab.vocab_size}, D)")
    if not np.all(np.isfinite(cb)):
        raise bad("codebook has non-finite values")
    if a["oov_counts"].shape != (vocab.n_scales,) or np.any(a["oov_counts"] < 0):
        raise bad(f"oov_counts must be {vocab.n_scales} counts >= 0 (got {a['oov_counts'].tolist()})")
    try:
        prov = json.loads(str(a["provenance"]))
    except json.JSONDecodeError:
        raise bad("provenance is not JSON") from None
    if not isinstance(prov, dict):
        raise bad(f"provenance is JSON {type(prov).__name__}, not an object")
    return TokenizedData(
        tokens=tokens,
        vocab=vocab,
        codebook=cb,
        oov_counts=a["oov_counts"],
        config_text=str(a["config_text"]),
        provenance=prov,
        format_version=str(a["format_version"]),
    )


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def report(
    vocab: Vocabulary,
    trained: TrainedModel,
    counts: np.ndarray,
    n_samples: int,
    oov: np.ndarray | None = None,
) -> str:
    """The ``info`` table.

    ``counts`` ``(K, V)``: this split's code counts (used and perplexity columns); ``vocab`` gives the token ranges
    (this split's own, or the ``--vocab_from`` one, then with the out-of-vocabulary counts ``oov``).
    """
    here = build_vocabulary(counts, vocab.scales, vocab.codebook_size)
    c = trained.config
    lines = [f"{n_samples} samples, {c.in_channels}x{c.height}x{c.width} fields {','.join(trained.fields)}"]
    head = f"{'scale':>5} {'size':>7} {'used':>11} {'perplexity':>10} {'determ.':>7} {'tokens':>15}"
    if oov is not None:
        head += f" {'oov':>8}"
    lines.append(head)
    for k, (h, w) in enumerate(vocab.scales):
        used = f"{np.count_nonzero(counts[k])}/{vocab.codebook_size}"
        if vocab.deterministic[k]:
            rng = f"code {vocab.deterministic_codes[vocab.deterministic_scales.index(k)]}"
        else:
            rng = "[{}, {})".format(*vocab.ranges[k])
        det = "yes" if vocab.deterministic[k] else "no"
        row = f"{k:>5} {f'{h}x{w}':>7} {used:>11} {here.perplexity[k]:>10.2f} {det:>7}"
        row += f" {rng:>15}"
        if oov is not None:
            row += f" {int(oov[k]):>8}"
        lines.append(row)
    bits = vocab.bits_per_sample
    ratio = c.in_channels * c.height * c.width * 32 / bits if bits > 0 else math.inf
    lines.append(
        f"sequence length L = {vocab.seq_len}, vocabulary size = {vocab.vocab_size}, "
        f"first trainable scale = {vocab.first_trainable_scale}"
    )
    lines.append(f"bits per sample = {bits:.1f}, compression ratio vs float32 fields = {ratio:.1f}")
    if oov is not None:
        lines.append(f"out-of-vocabulary codes (re-quantised to the nearest used code) = {int(oov.sum())}")
        lost = [k for k in vocab.deterministic_scales if here.counts[k].astype(bool).sum() > 1]
        if lost:
            lines.append(f"deterministic on the fit split but not here: scale(s) {', '.join(map(str, lost))}")
    return "\n".join(lines)


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,save}")
    for name, help_ in (("info", "print per-scale statistics; writes nothing"), ("save", "tokenise to an .npz")):
        s = sub.add_parser(name, help=help_, description=help_)
        s.error = p.error  # one-line errors for subcommands too
        add_trained_run_flags(s, "Gust .h5 file to tokenise")
        s.add_argument("--batch_size", type=positive_int, default=64, help="samples per encode batch (default 64)")
        s.add_argument(
            "--vocab_from", default=None, help="tokens .npz of the training split whose vocabulary is reused"
        )
        s.add_argument("--no_progress", action="store_true", help="no progress bar")
        if name == "save":
            s.add_argument("--output", required=True, help="tokens file to write (.npz)")
            s.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def _vocab_from(path: str, trained: TrainedModel) -> Vocabulary:
    try:
        data = load_tokenized_data(path)
    except ValueError as err:
        raise ValueError(f"--vocab_from {err}") from None
    sha = data.provenance.get("checkpoint_sha256")
    if sha != trained.checkpoint_sha256:
        raise ValueError(
            f"--vocab_from {path} was made with checkpoint sha256 {str(sha)[:12]}..., "
            f"not --checkpoint {trained.checkpoint} ({trained.checkpoint_sha256[:12]}...)"
        )
    _check_vocab(trained, data.vocab)
    return data.vocab


def run(args: argparse.Namespace, argv: list[str]) -> str:
    """Body of the CLI; returns the text to print. ``ValueError`` / ``FileExistsError`` mean bad input."""
    from solvers.common.hdf5_utils import provenance as code_provenance

    out = None
    if args.command == "save":
        out = Path(args.output)
        if out.suffix != ".npz":
            raise ValueError(f"--output {out} must end with .npz")
        if not out.parent.is_dir():
            raise ValueError(f"--output {out}: folder {out.parent} does not exist")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"--output {out} exists; pass --overwrite to replace it")
    trained = load_trained(args.checkpoint, args.config_path)
    progress = not args.no_progress
    train_vocab = _vocab_from(args.vocab_from, trained) if args.vocab_from else None
    kw = dict(sample_start=args.sample_start, sample_stop=args.sample_stop, fields=args.fields)
    with open_matching(trained, args.data_path, **kw) as ds:
        n = len(ds)
        source = ds.file(0).identity()
        if args.command == "info":
            here = fit(trained, ds, args.batch_size, progress)
            if train_vocab is None:
                return report(here, trained, here.counts, n)
            return report(train_vocab, trained, here.counts, n, oov_counts(train_vocab, here.counts))
        vocab = fit(trained, ds, args.batch_size, progress) if train_vocab is None else train_vocab
        tokens, oov, counts = tokenize(trained, ds, vocab, args.batch_size, progress)
    prov = {
        "data_path": str(Path(args.data_path).resolve()),
        "data_source": source,
        "sample_range": [args.sample_start, args.sample_start + n],
        "n_samples": n,
        "vocab_from": None if args.vocab_from is None else str(Path(args.vocab_from).resolve()),
        "vocab_from_sha256": None if args.vocab_from is None else file_sha256(args.vocab_from),
        **code_provenance([*PROG.split(), *argv]),
    }  # save_tokenized_data adds the checkpoint's entries
    save_tokenized_data(out, tokens, vocab, trained, prov, overwrite=args.overwrite, oov_counts=oov)
    table = report(vocab, trained, counts, n, None if train_vocab is None else oov)
    return f"{table}\n{out}"


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    exit_process(main())
