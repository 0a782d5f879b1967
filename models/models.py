"""Multi-scale residual VQ-VAE in Equinox (issue 5): convolutional ResNet encoder/decoder and a VAR-style quantiser.

The model maps one sample ``x`` of shape ``(C, H, W)`` (C stacked fields, axis 1 vertical, axis 2 x, as in the Gust
file format) to a latent grid ``z`` of shape ``(D, h, w)`` with ``h = H / 2**(len(ch_mult) - 1)`` (same for w), and
quantises ``z`` with multi-scale residual quantisation on that one grid (Tian et al. 2024, "Visual Autoregressive
Modeling: Scalable Image Generation via Next-Scale Prediction", arXiv:2404.02905, section 3.2 and Algorithm 1):

    f_rest = z, f_hat = 0
    for k = 1..K with scale (h_k, w_k):
        r_k   = argmax_v cos(area_down(f_rest, h_k, w_k), c_v)            # one shared codebook c_1..c_V
        e_k   = phi_k(upsample(g_k * c_{r_k} / |c_{r_k}|, h, w))          # g_k: learned per-scale gain
        f_hat = f_hat + e_k,   f_rest = f_rest - e_k

The decoder sees ``z + stop_gradient(f_hat - z)`` (straight-through estimator). The loss added to the reconstruction
loss is, averaged over scales, ``|f_hat_k - sg(z)|^2 + beta |sg(f_hat_k) - z|^2`` with ``f_hat_k`` the cumulative
reconstruction after k scales (VAR's ``VectorQuantizer2``; beta = 0.25 as in van den Oord et al. 2017).

Design choices (documented here once):
- Padding is explicit (``jnp.pad``) and convolutions use ``padding=0``. A periodic axis is padded circularly
  ("wrap"). A wall axis is padded with ``"edge"``: it repeats the wall value, which for Gust's Dirichlet walls
  (no-slip u = w = 0, fixed temperature) is the known boundary value, never mixes the two walls (as circular padding
  would), and works for any pad width, including 1-cell latents where ``"reflect"`` has nothing to mirror.
- The lookup is cosine nearest-neighbour (both the residual and the codebook L2-normalised), which bounds the
  commitment term. Magnitude is carried by a learned gain per scale (``log_gains``, initialised at 0) and by phi_k.
- Upsampling from scale k to the latent grid is bicubic (``jax.image.resize``'s Keys kernel, a = −0.5; VAR's
  ``F.interpolate`` uses a = −0.75) or bilinear, applied as one small matrix per axis (:func:`upsample_matrix`).
  Along a periodic axis it wraps around (``wrap_upsample``, the default): the coarse grid is interpolated as the
  periodic signal it samples, so a circular shift of the coarse codes shifts their contribution. Along a wall axis it is
  ``jax.image.resize`` itself. Configs written before ``wrap_upsample`` existed load with it off (their models were
  trained with ``jax.image.resize`` on every axis, which near a periodic edge extrapolates instead of wrapping).
- Mixed precision: an encoder or decoder computes in the dtype of its own weights (its input is cast to it), and
  the quantiser always in its codebook's dtype (float32), so the cosine lookup, the codebook and commitment losses
  and the cumulative reconstruction never round to bfloat16. :func:`with_compute_dtype` returns the model with
  bfloat16 encoder/decoder weights for the forward pass of a training step; gradients flow back through the casts
  to the float32 parameters, which are what the optimiser updates and checkpoints hold. GroupNorm computes its
  statistics in float32 whatever its input (Equinox upcasts).
- Area downsampling is adaptive average pooling (PyTorch's ``mode="area"``): output cell i averages input cells
  ``floor(i H / h) .. ceil((i + 1) H / h) - 1``, so any scale up to the latent size is allowed.

Checkpoints are a pair (STYLE habit 11): ``model.eqx`` (``eqx.tree_serialise_leaves``) and ``config.txt`` (every
hyperparameter of ``VQVAEConfig``, ``key = value`` per line, values in JSON). ``load`` rebuilds the skeleton from the
config and fills it, rejecting a checkpoint that does not match with a one-line ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

BOUNDARIES = ("periodic", "wall")
_PAD_MODE = {"periodic": "wrap", "wall": "edge"}
UPSAMPLE_METHODS = ("bicubic", "bilinear")
# dtypes the encoder and decoder may compute in (:func:`with_compute_dtype`); parameters are always stored in float32
COMPUTE_DTYPES = ("float32", "bfloat16")
# VQVAEConfig fields added after models were saved, with the value those models were built with (absent from their
# config.txt).
LEGACY_VALUES = {"wrap_upsample": False}


# --------------------------------------------------------------------------------------------------------------------
# Validation shared by the config and the modules
# --------------------------------------------------------------------------------------------------------------------


def validate_scales(scales: Sequence[Sequence[int]], latent_shape: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Return ``scales`` as a tuple of (h_k, w_k) int pairs, or raise a one-line ``ValueError``.

    Scales must be positive, non-decreasing in both axes, strictly increasing in token count, and end at the latent
    grid ``latent_shape``.
    """
    try:
        out = tuple((int(h), int(w)) for h, w in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be a sequence of (h, w) integer pairs (got {scales!r})") from None
    if any(float(a) != float(b) for pair, ref in zip(out, scales, strict=True) for a, b in zip(pair, ref, strict=True)):
        raise ValueError(f"scales must be integer pairs (got {scales!r})")
    if not out:
        raise ValueError(f"scales must not be empty; the last scale must be the latent size {latent_shape}")
    for h, w in out:
        if h < 1 or w < 1:
            raise ValueError(f"scales must be positive (got {(h, w)} in {out})")
    for (h0, w0), (h1, w1) in itertools.pairwise(out):
        if h1 < h0 or w1 < w0 or h1 * w1 <= h0 * w0:
            raise ValueError(f"scales must be increasing (got {(h0, w0)} followed by {(h1, w1)} in {out})")
    if out[-1] != tuple(latent_shape):
        raise ValueError(f"scales must end at the latent size {tuple(latent_shape)} (got {out[-1]} last in {out})")
    return out


def _check_bc(name: str, value: str) -> None:
    if value not in BOUNDARIES:
        raise ValueError(f"{name} must be one of {BOUNDARIES} (got {value!r})")


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


def pad_bc(x: Float[Array, "c h w"], pad: int, bc: tuple[str, str]) -> Float[Array, "c h+2p w+2p"]:
    """Pad the two spatial axes of ``x`` by ``pad`` cells each side: circular on "periodic", edge on "wall"."""
    if pad == 0:
        return x
    x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)), mode=_PAD_MODE[bc[0]])
    return jnp.pad(x, ((0, 0), (0, 0), (pad, pad)), mode=_PAD_MODE[bc[1]])


class PaddedConv(eqx.Module):
    """2D convolution with boundary-condition padding done by :func:`pad_bc` (the conv itself uses padding=0)."""

    conv: eqx.nn.Conv2d
    pad: int = eqx.field(static=True)
    bc: tuple[str, str] = eqx.field(static=True)

    def __init__(self, cin: int, cout: int, kernel: int, bc: tuple[str, str], *, stride: int = 1, key: PRNGKeyArray):
        if kernel % 2 != 1:
            raise ValueError(f"kernel size must be odd for symmetric padding (got {kernel})")
        self.conv = eqx.nn.Conv2d(cin, cout, kernel, stride=stride, padding=0, key=key)
        self.pad = kernel // 2
        self.bc = tuple(bc)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "o h2 w2"]:
        return self.conv(pad_bc(x, self.pad, self.bc))


class ResBlock(eqx.Module):
    """GroupNorm → SiLU → conv3 → GroupNorm → SiLU → conv3, plus a (1×1-projected where needed) skip."""

    norm1: eqx.nn.GroupNorm
    conv1: PaddedConv
    norm2: eqx.nn.GroupNorm
    conv2: PaddedConv
    skip: PaddedConv | None

    def __init__(self, cin: int, cout: int, groups: int, bc: tuple[str, str], *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.GroupNorm(groups, cin)
        self.conv1 = PaddedConv(cin, cout, 3, bc, key=k1)
        self.norm2 = eqx.nn.GroupNorm(groups, cout)
        self.conv2 = PaddedConv(cout, cout, 3, bc, key=k2)
        self.skip = PaddedConv(cin, cout, 1, bc, key=k3) if cin != cout else None

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "o h w"]:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class Encoder(eqx.Module):
    """Convolutional ResNet ``(C, H, W) -> (D, H / f, W / f)``, ``f = 2**(len(ch_mult) - 1)``.

    Level i has ``num_res_blocks`` residual blocks at ``ch * ch_mult[i]`` channels, followed (except after the last
    level) by a stride-2 3×3 convolution. ``bc`` is (vertical axis, x axis), each "periodic" or "wall".
    """

    conv_in: PaddedConv
    blocks: list[ResBlock | PaddedConv]
    mid: ResBlock
    norm_out: eqx.nn.GroupNorm
    conv_out: PaddedConv
    in_channels: int = eqx.field(static=True)
    factor: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        num_groups: int,
        bc: tuple[str, str],
        *,
        key: PRNGKeyArray,
    ):
        keys = iter(jax.random.split(key, 3 + len(ch_mult) * (num_res_blocks + 1)))
        self.conv_in = PaddedConv(in_channels, ch, 3, bc, key=next(keys))
        blocks: list[ResBlock | PaddedConv] = []
        cin = ch
        for i, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cin, ch * mult, num_groups, bc, key=next(keys)))
                cin = ch * mult
            if i < len(ch_mult) - 1:
                blocks.append(PaddedConv(cin, cin, 3, bc, stride=2, key=next(keys)))
        self.blocks = blocks
        self.mid = ResBlock(cin, cin, num_groups, bc, key=next(keys))
        self.norm_out = eqx.nn.GroupNorm(num_groups, cin)
        self.conv_out = PaddedConv(cin, embed_dim, 3, bc, key=next(keys))
        self.in_channels = in_channels
        self.factor = 2 ** (len(ch_mult) - 1)

    def __call__(self, x: Float[Array, "c H W"]) -> Float[Array, "d h w"]:
        if x.ndim != 3 or x.shape[0] != self.in_channels:
            raise ValueError(f"Encoder expects one sample (C={self.in_channels}, H, W) (got {x.shape}); use jax.vmap")
        if x.shape[1] % self.factor or x.shape[2] % self.factor:
            raise ValueError(f"image size {x.shape[1:]} must be divisible by the downsampling factor {self.factor}")
        h = self.conv_in(x.astype(self.conv_in.conv.weight.dtype))  # computes in its weights' dtype
        for block in self.blocks:
            h = block(h)
        h = self.mid(h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


class Decoder(eqx.Module):
    """Mirror of :class:`Encoder`: ``(D, h, w) -> (C, h f, w f)`` with nearest ×2 upsampling + 3×3 conv per level."""

    conv_in: PaddedConv
    mid: ResBlock
    blocks: list[ResBlock | PaddedConv]
    norm_out: eqx.nn.GroupNorm
    conv_out: PaddedConv

    def __init__(
        self,
        out_channels: int,
        embed_dim: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        num_groups: int,
        bc: tuple[str, str],
        *,
        key: PRNGKeyArray,
    ):
        keys = iter(jax.random.split(key, 3 + len(ch_mult) * (num_res_blocks + 1)))
        cin = ch * ch_mult[-1]
        self.conv_in = PaddedConv(embed_dim, cin, 3, bc, key=next(keys))
        self.mid = ResBlock(cin, cin, num_groups, bc, key=next(keys))
        blocks: list[ResBlock | PaddedConv] = []
        for i in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cin, ch * ch_mult[i], num_groups, bc, key=next(keys)))
                cin = ch * ch_mult[i]
            if i > 0:
                blocks.append(PaddedConv(cin, cin, 3, bc, key=next(keys)))  # applied after a nearest ×2 upsample
        self.blocks = blocks
        self.norm_out = eqx.nn.GroupNorm(num_groups, cin)
        self.conv_out = PaddedConv(cin, out_channels, 3, bc, key=next(keys))

    def __call__(self, z: Float[Array, "d h w"]) -> Float[Array, "c H W"]:
        h = self.mid(self.conv_in(z.astype(self.conv_in.conv.weight.dtype)))  # computes in its weights' dtype
        for block in self.blocks:
            if isinstance(block, PaddedConv):
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = block(h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------------------------------------
# Quantiser
# --------------------------------------------------------------------------------------------------------------------


def _l2_normalize(v: Float[Array, "... d"], eps: float = 1e-6) -> Float[Array, "... d"]:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


def _quantize_single(
    z: Float[Array, "... d"], codebook: Float[Array, "v d"]
) -> tuple[Int[Array, ...], Float[Array, "... d"]]:
    """Cosine nearest neighbour: both ``z`` and the codebook are L2-normalised, index = argmax of the dot product.

    Returns the indices and the selected *normalised* (unit-length) codes. Zero vectors are left at zero length
    before the comparison (``eps`` floor), so they map to an arbitrary but deterministic code.
    """
    zn = _l2_normalize(z)
    cn = _l2_normalize(codebook)
    idx = jnp.argmax(zn @ cn.T, axis=-1).astype(jnp.int32)
    return idx, cn[idx]


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) adaptive-average-pooling weights (PyTorch ``mode="area"``)."""
    a = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


@functools.cache
def upsample_matrix(n_out: int, n_in: int, method: str, periodic: bool) -> np.ndarray:
    """(n_out, n_in) weights of ``jax.image.resize(..., method)`` from n_in to n_out cells along one axis.

    With ``periodic`` the n_in values are one period of a periodic signal: the matrix is the middle block of the
    resize of enough periods side by side that no output cell sees an edge (the cubic kernel reaches two input cells).
    Output cell centres sit at the same positions as without it, so interior rows are unchanged.
    """
    reps = 1 + 2 * -(-2 // n_in) if periodic else 1
    eye = np.tile(np.eye(n_in, dtype=np.float32), (reps, 1))
    with jax.ensure_compile_time_eval():
        m = np.asarray(jax.image.resize(eye, (reps * n_out, n_in), method=method))
    lo = (reps // 2) * n_out
    return m[lo : lo + n_out]


def upsample(
    x: Float[Array, "d h w"], shape: tuple[int, int], method: str, periodic: tuple[bool, bool]
) -> Float[Array, "d H W"]:
    """Interpolate ``x`` to ``shape`` with ``method``, wrapping around along the axes that ``periodic`` marks."""
    my = upsample_matrix(shape[0], x.shape[1], method, periodic[0])
    mx = upsample_matrix(shape[1], x.shape[2], method, periodic[1])
    return jnp.einsum("iy,dyx,jx->dij", my, x, mx)


def area_downsample(x: Float[Array, "d H W"], h: int, w: int) -> Float[Array, "d h w"]:
    if (h, w) == x.shape[1:]:
        return x
    return jnp.einsum("iy,dyx,jx->dij", _area_matrix(h, x.shape[1]), x, _area_matrix(w, x.shape[2]))


class MultiScaleQuantizer(eqx.Module):
    """VAR-style residual quantisation on one latent grid with ONE shared codebook (see the module docstring).

    ``__call__(z)`` on one latent ``(D, h, w)`` returns ``(z_st, aux)``: ``z_st = z + sg(f_hat - z)`` for the decoder
    and ``aux`` with ``vq_loss`` (codebook + beta × commitment, mean over scales), ``commit_loss``, ``codebook_loss``,
    ``indices`` (list of (h_k, w_k) int32), ``code_probs`` (K, V): per-scale code counts divided by that scale's token
    count h_k w_k, ``prefix_latent_error`` (K,): |f_hat_k - z|² / |z|² after k scales, and ``prefix_latents``
    (K, D, h, w): the cumulative reconstructions f_hat_1..f_hat_K themselves, differentiable in the codebook, gains and
    φ (for a loss on decoded prefixes; the last equals the decoder input's value).
    """

    codebook: Float[Array, "v d"]
    log_gains: Float[Array, " k"]
    phis: list[PaddedConv]
    scales: tuple[tuple[int, int], ...] = eqx.field(static=True)
    latent_shape: tuple[int, int] = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    phi_ratio: float = eqx.field(static=True)
    upsample: str = eqx.field(static=True)
    wrap: tuple[bool, bool] = eqx.field(static=True)

    def __init__(
        self,
        codebook_size: int,
        embed_dim: int,
        scales: Sequence[Sequence[int]],
        latent_shape: tuple[int, int],
        bc: tuple[str, str],
        *,
        beta: float = 0.25,
        phi_ratio: float = 0.5,
        phi_kernel: int = 3,
        upsample: str = "bicubic",
        wrap_upsample: bool = True,
        key: PRNGKeyArray,
    ):
        self.scales = validate_scales(scales, latent_shape)
        if upsample not in UPSAMPLE_METHODS:
            raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS} (got {upsample!r})")
        kc, *kp = jax.random.split(key, 1 + len(self.scales))
        self.codebook = jax.random.normal(kc, (codebook_size, embed_dim))
        self.log_gains = jnp.zeros(len(self.scales))
        self.phis = [PaddedConv(embed_dim, embed_dim, phi_kernel, bc, key=k) for k in kp]
        self.latent_shape = tuple(latent_shape)
        self.beta = float(beta)
        self.phi_ratio = float(phi_ratio)
        self.upsample = upsample
        self.wrap = tuple(bool(wrap_upsample) and b == "periodic" for b in bc)

    def _embed(self, k: int, codes: Float[Array, "hk wk d"]) -> Float[Array, "d h w"]:
        """Scale-k contribution to the cumulative reconstruction from its unit-length codes."""
        q = jnp.moveaxis(codes, -1, 0) * jnp.exp(self.log_gains[k])
        if q.shape[1:] != self.latent_shape:
            q = upsample(q, self.latent_shape, self.upsample, self.wrap)
        # VAR's Phi: a residual mix of identity and a conv, ratio phi_ratio (0.5 in VAR).
        return (1.0 - self.phi_ratio) * q + self.phi_ratio * self.phis[k](q)

    def __call__(self, z: Float[Array, "d h w"]) -> tuple[Float[Array, "d h w"], dict]:
        if z.shape[1:] != self.latent_shape:
            raise ValueError(f"latent grid {z.shape[1:]} does not match the quantiser's {self.latent_shape}")
        sg = jax.lax.stop_gradient
        f = sg(z)
        f_rest, f_hat = f, jnp.zeros_like(z)
        indices, probs, cb_losses, commit_losses, prefix_err, f_hats = [], [], [], [], [], []
        norm = jnp.maximum(jnp.mean(f**2), 1e-12)
        for k, (h, w) in enumerate(self.scales):
            idx, codes = _quantize_single(jnp.moveaxis(area_downsample(f_rest, h, w), 0, -1), self.codebook)
            e_k = self._embed(k, codes)
            f_hat = f_hat + e_k
            f_rest = f_rest - sg(e_k)
            indices.append(idx)
            probs.append(jnp.bincount(idx.ravel(), length=self.codebook.shape[0]) / (h * w))
            cb_losses.append(jnp.mean((f_hat - f) ** 2))
            commit_losses.append(jnp.mean((sg(f_hat) - z) ** 2))
            prefix_err.append(sg(jnp.mean((f_hat - f) ** 2) / norm))
            f_hats.append(f_hat)
        codebook_loss = jnp.mean(jnp.stack(cb_losses))
        commit_loss = jnp.mean(jnp.stack(commit_losses))
        aux = {
            "vq_loss": codebook_loss + self.beta * commit_loss,
            "codebook_loss": codebook_loss,
            "commit_loss": commit_loss,
            "indices": indices,
            "code_probs": jnp.stack(probs),
            "prefix_latent_error": jnp.stack(prefix_err),
            "prefix_latents": jnp.stack(f_hats),
        }
        return z + sg(f_hat - z), aux

    def indices_to_latent(self, indices: Sequence[Int[Array, "hk wk"]], n_scales: int | None = None):
        """Cumulative reconstruction f_hat from the first ``n_scales`` (default all) index maps."""
        n = len(indices) if n_scales is None else n_scales
        for k in range(n):
            if tuple(indices[k].shape) != self.scales[k]:
                raise ValueError(f"indices[{k}] has shape {tuple(indices[k].shape)}; expected {self.scales[k]}")
        cn = _l2_normalize(self.codebook)
        f_hat = jnp.zeros((self.codebook.shape[1], *self.latent_shape))
        for k in range(n):
            f_hat = f_hat + self._embed(k, cn[indices[k]])
        return f_hat


def codebook_stats(code_probs: Float[Array, "... k v"]) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
    """Per-scale usage (fraction of codes used) and perplexity exp(-Σ p log p) from ``code_probs``.

    ``code_probs`` is the quantiser's per-sample (K, V) array, or a batch of them (averaged over leading axes first,
    so usage is that of the whole batch at each scale, each scale normalised by its own token count).
    """
    p = code_probs.reshape(-1, *code_probs.shape[-2:]).mean(axis=0)
    usage = jnp.mean(p > 0, axis=-1)
    perplexity = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1))
    return usage, perplexity


def restart_dead_codes(
    codebook: Float[Array, "v d"],
    counts: Float[Array, " v"],
    vectors: Float[Array, "n d"],
    key: PRNGKeyArray,
    *,
    threshold: float = 0.0,
) -> tuple[Float[Array, "v d"], Int[Array, ""]]:
    """Replace every code with ``counts <= threshold`` by a random row of ``vectors`` (recent encoder outputs), each
    dead code by a different row when there are at least as many rows as codes.

    Pure: returns the new codebook and the number of restarted codes. ``counts`` is any usage accumulator over recent
    steps (e.g. summed ``code_probs`` over scales and batches); live codes are returned unchanged.
    """
    dead = counts <= threshold
    v, n = codebook.shape[0], vectors.shape[0]
    if n >= v:  # distinct rows: a row copied into two dead codes leaves all but one of them dead (ties break low)
        pick = jax.random.permutation(key, n)[:v]
    else:
        pick = jax.random.randint(key, (v,), 0, n)
    new = jnp.where(dead[:, None], vectors[pick].astype(codebook.dtype), codebook)
    return new, jnp.sum(dead).astype(jnp.int32)


# --------------------------------------------------------------------------------------------------------------------
# Config, model, checkpoints
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
    """Every hyperparameter of :class:`MultiScaleVQVAE`; validated at construction (one-line ``ValueError``s).

    in_channels: number of stacked fields C. height, width: input grid (H, W). bc_y, bc_x: "periodic" or "wall" for
    the vertical axis and for x. ch, ch_mult, num_res_blocks, num_groups: ResNet width, per-level multipliers, blocks
    per level, GroupNorm groups (must divide every width). embed_dim: latent channels D. codebook_size: V.
    scales: (h_k, w_k) increasing, ending at the latent size (H, W) / 2**(len(ch_mult) - 1). beta: commitment weight.
    phi_ratio, phi_kernel: VAR's phi mix ratio and conv size. upsample: "bicubic" or "bilinear". wrap_upsample: the
    upsampling wraps around periodic axes (False only in configs written before it existed; see :data:`LEGACY_VALUES`).
    """

    in_channels: int = 1
    height: int = 32
    width: int = 32
    bc_y: str = "periodic"
    bc_x: str = "periodic"
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    num_groups: int = 8
    embed_dim: int = 16
    codebook_size: int = 512
    scales: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (4, 4), (8, 8))
    beta: float = 0.25
    phi_ratio: float = 0.5
    phi_kernel: int = 3
    upsample: str = "bicubic"
    wrap_upsample: bool = True

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{f.name} must be an integer (got {v!r})")
            if f.type == "bool" and not isinstance(v, bool):
                raise ValueError(f"{f.name} must be true or false (got {v!r})")
            if f.type == "float":
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise ValueError(f"{f.name} must be a finite number (got {v!r})")
                object.__setattr__(self, f.name, float(v))
        for name in ("in_channels", "height", "width", "ch", "num_res_blocks", "num_groups", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 (got {self.codebook_size})")
        _check_bc("bc_y", self.bc_y)
        _check_bc("bc_x", self.bc_x)
        mult = tuple(self.ch_mult)
        if not mult or any(not isinstance(m, int) or m < 1 for m in mult):
            raise ValueError(f"ch_mult must be a non-empty tuple of positive integers (got {self.ch_mult!r})")
        object.__setattr__(self, "ch_mult", mult)
        for m in mult:
            if (self.ch * m) % self.num_groups:
                raise ValueError(f"num_groups={self.num_groups} must divide every width ch*ch_mult (got {self.ch * m})")
        f = self.downsample_factor
        if self.height % f or self.width % f:
            raise ValueError(
                f"height={self.height} and width={self.width} must be divisible by the downsampling factor {f} "
                "= 2**(len(ch_mult) - 1)"
            )
        object.__setattr__(self, "scales", validate_scales(self.scales, self.latent_shape))
        if not 0.0 <= self.beta:
            raise ValueError(f"beta must be >= 0 (got {self.beta})")
        if not 0.0 <= self.phi_ratio <= 1.0:
            raise ValueError(f"phi_ratio must be in [0, 1] (got {self.phi_ratio})")
        if self.phi_kernel < 1 or self.phi_kernel % 2 != 1:
            raise ValueError(f"phi_kernel must be a positive odd integer (got {self.phi_kernel})")
        if self.upsample not in UPSAMPLE_METHODS:
            raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS} (got {self.upsample!r})")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.height // self.downsample_factor, self.width // self.downsample_factor)

    def to_text(self) -> str:
        """One ``key = value`` line per field, values as JSON (tuples written as lists)."""
        return "".join(f"{f.name} = {json.dumps(getattr(self, f.name))}\n" for f in dataclasses.fields(self))

    @classmethod
    def from_text(cls, text: str, *, ignore_unknown: bool = False) -> VQVAEConfig:
        """Parse :meth:`to_text` output. Blank lines and ``#`` comments are skipped; every field must be present,
        except those in :data:`LEGACY_VALUES` (added later: absent, they take the value older models were built with).

        With ``ignore_unknown`` other keys (e.g. a training CLI's provenance lines in the same file) are skipped.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, raw = line.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"config line {n} is not 'key = value': {line!r}")
            if key not in names:
                if ignore_unknown:
                    continue
                raise ValueError(f"unknown config key {key!r} on line {n}; allowed: {', '.join(sorted(names))}")
            try:
                value = json.loads(raw.strip())
            except json.JSONDecodeError:
                raise ValueError(f"config line {n}: value of {key!r} is not valid JSON: {raw.strip()!r}") from None
            if key == "ch_mult":
                value = tuple(value) if isinstance(value, list) else value
            if key == "scales":
                value = (
                    tuple(tuple(s) if isinstance(s, list) else s for s in value) if isinstance(value, list) else value
                )
            values[key] = value
        values = {**LEGACY_VALUES, **values}
        missing = sorted(names - values.keys())
        if missing:
            raise ValueError(f"config is missing keys: {', '.join(missing)}")
        return cls(**values)


class MultiScaleVQVAE(eqx.Module):
    """Encoder → :class:`MultiScaleQuantizer` → Decoder on one sample ``(C, H, W)``; batches by ``jax.vmap``."""

    encoder: Encoder
    quantizer: MultiScaleQuantizer
    decoder: Decoder
    input_shape: tuple[int, int, int] = eqx.field(static=True)
    bc: tuple[str, str] = eqx.field(static=True)  # (vertical axis, x axis), each "periodic" or "wall"

    def __init__(self, config: VQVAEConfig, *, key: PRNGKeyArray):
        ke, kq, kd = jax.random.split(key, 3)
        c = config
        bc = (c.bc_y, c.bc_x)
        self.encoder = Encoder(c.in_channels, c.embed_dim, c.ch, c.ch_mult, c.num_res_blocks, c.num_groups, bc, key=ke)
        self.quantizer = MultiScaleQuantizer(
            c.codebook_size,
            c.embed_dim,
            c.scales,
            c.latent_shape,
            bc,
            beta=c.beta,
            phi_ratio=c.phi_ratio,
            phi_kernel=c.phi_kernel,
            upsample=c.upsample,
            wrap_upsample=c.wrap_upsample,
            key=kq,
        )
        self.decoder = Decoder(c.in_channels, c.embed_dim, c.ch, c.ch_mult, c.num_res_blocks, c.num_groups, bc, key=kd)
        self.input_shape = (c.in_channels, c.height, c.width)
        self.bc = bc

    def _check(self, x) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"expected one sample of shape {self.input_shape} (got {tuple(x.shape)}); use jax.vmap")

    def __call__(self, x: Float[Array, "c H W"], *, key: PRNGKeyArray | None = None):
        """Return ``(recon, aux)``; see :class:`MultiScaleQuantizer` for ``aux``. ``key`` is unused (no dropout)."""
        del key
        z_st, aux = self.quantizer(self.latent(x))
        return self.decode(z_st), aux

    def latent(self, x: Float[Array, "c H W"]) -> Float[Array, "d h w"]:
        """Encoder output in the quantiser's dtype (e.g. the ``vectors`` for :func:`restart_dead_codes`, after
        reshaping to (h w, d))."""
        self._check(x)
        return self.encoder(x).astype(self.quantizer.codebook.dtype)

    def decode(self, z: Float[Array, "d h w"]) -> Float[Array, "c H W"]:
        """Decoder output for the latent ``z``, in the quantiser's dtype (float32 also under mixed precision)."""
        return self.decoder(z).astype(self.quantizer.codebook.dtype)

    def encode_indices(self, x: Float[Array, "c H W"]) -> list[Int[Array, "hk wk"]]:
        return self.quantizer(self.latent(x))[1]["indices"]

    def decode_indices(self, indices: Sequence[Int[Array, "hk wk"]]) -> Float[Array, "c H W"]:
        if len(indices) != len(self.quantizer.scales):
            raise ValueError(f"expected {len(self.quantizer.scales)} index maps, one per scale (got {len(indices)})")
        return self.decode(self.quantizer.indices_to_latent(indices))

    def prefix_reconstructions(self, x: Float[Array, "c H W"]) -> list[Float[Array, "c H W"]]:
        """Decoded reconstructions from the first k scales, k = 1..K (the last equals ``decode_indices`` of all)."""
        idx = self.encode_indices(x)
        return [self.decode(self.quantizer.indices_to_latent(idx, k)) for k in range(1, len(idx) + 1)]

    def with_codebook(self, codebook: Float[Array, "v d"]) -> MultiScaleVQVAE:
        return eqx.tree_at(lambda m: m.quantizer.codebook, self, codebook)


@eqx.filter_jit
def all_finite(model: eqx.Module) -> jax.Array:
    """Whether every floating leaf of ``model`` is finite (one compiled reduction; a diverged training has NaNs)."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def with_compute_dtype(model: MultiScaleVQVAE, dtype: str) -> MultiScaleVQVAE:
    """``model`` with its encoder's and decoder's floating-point leaves cast to ``dtype`` (one of
    :data:`COMPUTE_DTYPES`); the quantiser is left in float32. Differentiable: the gradient with respect to the
    original model's parameters arrives in their own dtype. ``"float32"`` returns ``model`` itself."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES} (got {dtype!r})")
    if dtype == "float32":
        return model

    def cast(tree):
        return jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)

    return eqx.tree_at(lambda m: (m.encoder, m.decoder), model, (cast(model.encoder), cast(model.decoder)))


def make_model(config: VQVAEConfig, key: PRNGKeyArray) -> MultiScaleVQVAE:
    return MultiScaleVQVAE(config, key=key)


def save(model_path: str | Path, config_path: str | Path, model: MultiScaleVQVAE, config: VQVAEConfig) -> None:
    """Write ``model`` leaves to ``model_path`` and ``config.to_text()`` to ``config_path``."""
    Path(config_path).write_text(config.to_text())
    eqx.tree_serialise_leaves(model_path, model)


def load(model_path: str | Path, config_path: str | Path) -> tuple[MultiScaleVQVAE, VQVAEConfig]:
    """Rebuild the model skeleton from ``config_path`` and fill it from ``model_path``; one-line error on mismatch."""
    config = VQVAEConfig.from_text(Path(config_path).read_text(), ignore_unknown=True)
    like = eqx.filter_eval_shape(make_model, config, jax.random.PRNGKey(0))
    try:
        with open(model_path, "rb") as fh:
            model = eqx.tree_deserialise_leaves(fh, like)
            trailing = fh.read(1)
    except Exception as err:  # numpy/equinox raise several types for a truncated or mismatched file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if Path(model_path).stat().st_size == 0:
            msg = f"checkpoint {model_path} is empty (0 bytes); expected the parameters of {config_path}"
        else:
            msg = f"checkpoint {model_path} is truncated or does not match config {config_path}: {reason}"
        raise ValueError(msg) from None
    if trailing:
        raise ValueError(f"checkpoint {model_path} does not match config {config_path}: it has more parameters")
    return model, config
