"""Multi-scale VQ-VAE (models/models.py) on tiny configs: shapes, padding, cosine lookup, validation, training,
compile-once, checkpoints."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.models import (
    UPSAMPLE_METHODS,
    Encoder,
    MultiScaleQuantizer,
    VQVAEConfig,
    _quantize_single,
    codebook_stats,
    load,
    make_model,
    pad_bc,
    restart_dead_codes,
    save,
    upsample,
    with_compute_dtype,
)

TINY = VQVAEConfig(
    in_channels=1,
    height=16,
    width=16,
    ch=8,
    ch_mult=(1, 2),
    num_groups=4,
    embed_dim=8,
    codebook_size=32,
    scales=((2, 2), (4, 4), (8, 8)),
)


def smooth_fields(key, n, c, h, w, n_modes=4):
    """Random sums of a few low Fourier modes (periodic, order-one amplitude), shape (n, c, h, w)."""
    ka, kk, kp = jax.random.split(key, 3)
    y, x = jnp.meshgrid(jnp.arange(h) / h, jnp.arange(w) / w, indexing="ij")
    amp = jax.random.normal(ka, (n, c, n_modes, 1, 1))
    kvec = jax.random.randint(kk, (n, c, n_modes, 2, 1, 1), 0, 3)
    phase = jax.random.uniform(kp, (n, c, n_modes, 1, 1), maxval=2 * jnp.pi)
    arg = 2 * jnp.pi * (kvec[:, :, :, 0] * y + kvec[:, :, :, 1] * x) + phase
    return jnp.sum(amp * jnp.cos(arg), axis=2)


@pytest.mark.parametrize(
    ("cfg", "latent"),
    [
        (TINY, (8, 8)),
        (  # Rayleigh–Bénard-like: aspect 4, wall in the vertical, three fields
            VQVAEConfig(
                in_channels=3,
                height=8,
                width=32,
                bc_y="wall",
                bc_x="periodic",
                ch=8,
                ch_mult=(1, 2),
                num_groups=4,
                embed_dim=4,
                codebook_size=16,
                scales=((1, 4), (2, 8), (4, 16)),
            ),
            (4, 16),
        ),
    ],
)
def test_shapes(cfg, latent):
    model = make_model(cfg, jax.random.PRNGKey(0))
    x = smooth_fields(jax.random.PRNGKey(1), 2, cfg.in_channels, cfg.height, cfg.width)

    @eqx.filter_jit
    def everything(m, batch):
        idx = m.encode_indices(batch[0])
        return jax.vmap(m)(batch), m.latent(batch[0]), idx, m.decode_indices(idx)

    (recon, aux), z, idx, decoded = everything(model, x)
    assert recon.shape == x.shape
    assert z.shape == (cfg.embed_dim, *latent)
    assert [tuple(i.shape) for i in aux["indices"]] == [(2, *s) for s in cfg.scales]
    assert aux["vq_loss"].shape == (2,)
    # counts normalised by each scale's own token count
    np.testing.assert_allclose(aux["code_probs"].sum(-1), 1.0, rtol=1e-6)
    assert all(i.dtype == jnp.int32 and tuple(i.shape) == s for i, s in zip(idx, cfg.scales, strict=True))
    np.testing.assert_allclose(decoded, recon[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"use jax\.vmap"):
        model(x)


def test_padding_wraps_periodic_and_repeats_wall():
    x = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    periodic = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="wrap")
    np.testing.assert_array_equal(pad_bc(jnp.asarray(x), 2, ("periodic", "periodic")), periodic)
    mixed = np.pad(np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge"), ((0, 0), (0, 0), (1, 1)), mode="wrap")
    np.testing.assert_array_equal(pad_bc(jnp.asarray(x), 1, ("wall", "periodic")), mixed)


def test_periodic_encoder_commutes_with_circular_shifts():
    """With circular padding everywhere, rolling the input by a multiple of the downsampling factor rolls the latent."""
    enc = Encoder(1, 4, 8, (1, 2), 1, 4, ("periodic", "periodic"), key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16))
    z = enc(x)
    z_shift = enc(jnp.roll(x, (4, -6), axis=(1, 2)))
    np.testing.assert_allclose(z_shift, jnp.roll(z, (2, -3), axis=(1, 2)), atol=1e-5)
    wall = Encoder(1, 4, 8, (1, 2), 1, 4, ("wall", "periodic"), key=jax.random.PRNGKey(0))
    assert not np.allclose(wall(jnp.roll(x, 4, axis=1)), jnp.roll(wall(x), 2, axis=1), atol=1e-3)


def test_quantize_single_picks_max_cosine_code():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4)).astype(np.float32)
    codebook = (rng.normal(size=(16, 4)) * rng.uniform(0.1, 5.0, size=(16, 1))).astype(np.float32)
    cos = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (codebook / np.linalg.norm(codebook, axis=1)[:, None]).T
    idx, codes = _quantize_single(jnp.asarray(z), jnp.asarray(codebook))
    np.testing.assert_array_equal(idx, cos.argmax(1))
    chosen = codebook[cos.argmax(1)]
    np.testing.assert_allclose(codes, chosen / np.linalg.norm(chosen, axis=1, keepdims=True), rtol=1e-5)
    # Max-cosine code is not the L2-nearest one: c0 is long and aligned with z, c1 short, close, and off-direction.
    z1 = np.array([[1.0, 0.2]], np.float32)
    c = np.array([[10.0, 0.0], [0.5, 0.5]], np.float32)
    assert np.linalg.norm(z1 - c, axis=1).argmin() == 1
    assert int(_quantize_single(jnp.asarray(z1), jnp.asarray(c))[0][0]) == 0


@pytest.mark.parametrize("method", UPSAMPLE_METHODS)
def test_upsampling_wraps_around_periodic_axes_only(method):
    """A periodic axis is interpolated as the periodic signal its cells sample: shifting the coarse grid by one cell
    shifts the result by the upsampling factor, and any ratio gives the middle of the resize of the signal tiled five
    times. A wall axis (and the pre-``wrap_upsample`` models) get ``jax.image.resize`` itself, which is not
    shift-equivariant near the edges."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 8))
    out = upsample(x, (16, 32), method, (True, True))
    np.testing.assert_allclose(
        upsample(jnp.roll(x, (1, -3), (1, 2)), (16, 32), method, (True, True)),
        jnp.roll(out, (4, -12), (1, 2)),
        atol=1e-5,
    )
    resized = jax.image.resize(x, (3, 16, 32), method)
    np.testing.assert_allclose(upsample(x, (16, 32), method, (False, False)), resized, atol=1e-5)
    assert not np.allclose(jax.image.resize(jnp.roll(x, 1, 2), (3, 16, 32), method), jnp.roll(resized, 4, 2), atol=0.1)
    # wall in y, periodic in x: wrapped along x (4 -> 4 rows is the identity), then resize's along y
    along_x = upsample(x, (4, 32), method, (True, True))
    expected = jax.image.resize(along_x, (3, 16, 32), method)
    np.testing.assert_allclose(upsample(x, (16, 32), method, (False, True)), expected, atol=1e-5)
    for n in (1, 2, 3):  # non-integer ratios too; one cell is a constant
        c = jax.random.normal(jax.random.PRNGKey(n), (2, n, n))
        tiled = jax.image.resize(jnp.tile(c, (1, 5, 5)), (2, 80, 80), method)[:, 32:48, 32:48]
        np.testing.assert_allclose(upsample(c, (16, 16), method, (True, True)), tiled, atol=1e-5)


def test_configs_written_before_wrap_upsample_load_without_it():
    text = "".join(line + "\n" for line in TINY.to_text().splitlines() if not line.startswith("wrap_upsample"))
    old = VQVAEConfig.from_text(text)
    assert old.wrap_upsample is False and TINY.wrap_upsample is True
    assert make_model(old, jax.random.PRNGKey(0)).quantizer.wrap == (False, False)
    assert make_model(TINY, jax.random.PRNGKey(0)).quantizer.wrap == (True, True)
    with pytest.raises(ValueError, match="wrap_upsample must be true or false"):
        VQVAEConfig(**{**TINY.__dict__, "wrap_upsample": 1})


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        (((2, 2), (4, 4)), "must end at the latent size"),
        (((4, 4), (2, 2), (8, 8)), "must be increasing"),
        (((2, 2), (2, 2), (8, 8)), "must be increasing"),
        (((2, 4), (4, 2), (8, 8)), "must be increasing"),
        ((), "must not be empty"),
        (((0, 1), (8, 8)), "must be positive"),
    ],
)
def test_scale_validation(scales, message):
    with pytest.raises(ValueError, match=message) as info:
        VQVAEConfig(**{**TINY.__dict__, "scales": scales})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        MultiScaleQuantizer(8, 4, scales, (8, 8), ("periodic", "periodic"), key=jax.random.PRNGKey(0))


def test_config_validation_one_line():
    for bad in ({"height": 17}, {"bc_x": "open"}, {"num_groups": 3}, {"upsample": "nearest"}, {"ch": 8.5}):
        with pytest.raises(ValueError) as info:
            VQVAEConfig(**{**TINY.__dict__, **bad})
        assert "\n" not in str(info.value) and str(next(iter(bad))) in str(info.value)


def test_config_text_round_trip():
    cfg = VQVAEConfig(**{**TINY.__dict__, "bc_y": "wall", "beta": 0.1, "upsample": "bilinear"})
    text = cfg.to_text()
    assert len(text.splitlines()) == len(cfg.__dict__) and 'bc_y = "wall"' in text
    assert VQVAEConfig.from_text(text) == cfg
    assert VQVAEConfig.from_text("# provenance\n" + text + 'data_path = "a.h5"\n', ignore_unknown=True) == cfg
    with pytest.raises(ValueError, match="unknown config key 'data_path'"):
        VQVAEConfig.from_text(text + 'data_path = "a.h5"\n')
    with pytest.raises(ValueError, match="missing keys: beta"):
        VQVAEConfig.from_text("\n".join(line for line in text.splitlines() if not line.startswith("beta")))


def test_codebook_stats_and_dead_code_restart():
    probs = jnp.array([[[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]]])
    usage, perplexity = codebook_stats(probs)  # batch of 2 samples, 2 scales, 4 codes
    np.testing.assert_allclose(usage, [1.0, 0.25])
    np.testing.assert_allclose(perplexity, [4.0, 1.0], rtol=1e-6)
    codebook = jnp.arange(12.0).reshape(4, 3)
    vectors = -jnp.arange(1.0, 31.0).reshape(10, 3)
    new, n_dead = restart_dead_codes(codebook, jnp.array([3.0, 0.0, 1.0, 0.0]), vectors, jax.random.PRNGKey(0))
    assert int(n_dead) == 2
    np.testing.assert_array_equal(new[jnp.array([0, 2])], codebook[jnp.array([0, 2])])
    for row in (1, 3):
        assert any(np.array_equal(new[row], v) for v in np.asarray(vectors))
    # every code dead, as many rows as codes: each gets its own row (drawn with replacement, 8 codes from 8 rows
    # would share one with probability 1 − 8!/8⁸ = 0.998, and a shared row leaves all but one of its codes dead)
    many = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    new, n_dead = restart_dead_codes(jnp.zeros((8, 3)), jnp.zeros(8), many, jax.random.PRNGKey(2))
    assert int(n_dead) == 8 and len({tuple(np.asarray(r).tolist()) for r in new}) == 8


@pytest.fixture(scope="module")
def trained():
    """30 AdamW steps on a fixed batch; records losses, per-step trace count and prefix errors before/after."""
    model = make_model(TINY, jax.random.PRNGKey(0))
    x = smooth_fields(jax.random.PRNGKey(1), 8, 1, 16, 16)
    optimizer = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(3e-3, weight_decay=1e-4))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    traces = []

    def loss_fn(m, batch):
        recon, aux = jax.vmap(m)(batch)
        return jnp.mean((recon - batch) ** 2) + jnp.mean(aux["vq_loss"])

    @eqx.filter_jit
    def step(m, state, batch):
        traces.append(1)  # runs only while tracing
        loss, grads = eqx.filter_value_and_grad(loss_fn)(m, batch)
        updates, state = optimizer.update(grads, state, eqx.filter(m, eqx.is_inexact_array))
        return eqx.apply_updates(m, updates), state, loss

    losses = []
    for _ in range(30):
        model, opt_state, loss = step(model, opt_state, x)
        losses.append(float(loss))

    prefixes, recon, latent_err = evaluate(model, x)
    return {
        "model": model,
        "x": x,
        "losses": losses,
        "traces": len(traces),
        "prefix": np.sqrt(np.sum((np.asarray(prefixes) - np.asarray(x)) ** 2, axis=(1, 2, 3, 4)) / np.sum(x**2)),
        "latent": np.asarray(latent_err),
        "last_prefix_minus_recon": float(jnp.max(jnp.abs(prefixes[-1] - recon))),
    }


@eqx.filter_jit
def evaluate(m, batch):
    """Prefix reconstructions (K, B, C, H, W), full reconstruction, mean latent prefix errors (K,)."""
    recon, aux = jax.vmap(m)(batch)
    return jnp.stack(jax.vmap(m.prefix_reconstructions)(batch)), recon, aux["prefix_latent_error"].mean(0)


def test_loss_falls_on_fixed_batch(trained):
    first, last = np.mean(trained["losses"][:3]), np.mean(trained["losses"][-3:])
    assert np.all(np.isfinite(trained["losses"]))
    assert last < 0.5 * first, f"loss {first:.4f} -> {last:.4f} over 30 steps"


def test_train_step_compiles_once(trained):
    assert trained["traces"] == 1, f"train step traced {trained['traces']} times in 30 calls"


def test_prefix_errors_decrease_with_scales(trained):
    err = trained["prefix"]
    assert np.all(np.diff(err) < 0), f"relative L2 error per prefix k=1..K: {err}"
    assert trained["last_prefix_minus_recon"] < 1e-5  # all K scales reproduce the full forward pass
    latent_err = trained["latent"]
    assert np.all(np.diff(latent_err) < 0), f"latent prefix errors: {latent_err}"


def test_save_load_identical(trained, tmp_path):
    model, x = trained["model"], trained["x"][:2]
    save(tmp_path / "model.eqx", tmp_path / "config.txt", model, TINY)
    loaded, cfg = load(tmp_path / "model.eqx", tmp_path / "config.txt")
    assert cfg == TINY
    for a, b in zip(evaluate(loaded, x), evaluate(model, x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change", [{"codebook_size": 16}, {"num_res_blocks": 2}, {"ch_mult": (1,), "scales": ((16, 16),)}]
)
def test_mismatched_checkpoint_rejected(tmp_path, change):
    model = make_model(TINY, jax.random.PRNGKey(0))
    save(tmp_path / "model.eqx", tmp_path / "config.txt", model, TINY)
    (tmp_path / "other.txt").write_text(VQVAEConfig(**{**TINY.__dict__, **change}).to_text())
    with pytest.raises(ValueError, match="does not match config") as info:
        load(tmp_path / "model.eqx", tmp_path / "other.txt")
    assert "\n" not in str(info.value)


def test_empty_checkpoint_is_named_as_such(tmp_path):
    (tmp_path / "model.eqx").write_bytes(b"")
    (tmp_path / "config.txt").write_text(TINY.to_text())
    with pytest.raises(ValueError, match=r"model.eqx is empty \(0 bytes\)"):
        load(tmp_path / "model.eqx", tmp_path / "config.txt")


def test_continuous_latent_diagnostic_bypasses_the_codes_and_restores_them():
    # benchmarks.vqvae_floor trains with the decoder fed the encoder output; outside its block nothing changes
    from benchmarks.vqvae_floor import continuous_latent

    model = make_model(TINY, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16))
    quantised = model(x)[0]
    with continuous_latent():
        free, aux = model(x)
        np.testing.assert_array_equal(free, model.decoder(model.encoder(x)))
        assert len(aux["indices"]) == 3  # the quantiser still runs (its losses and usage are logged)
    assert not np.allclose(free, quantised)
    np.testing.assert_array_equal(model(x)[0], quantised)


def test_bfloat16_compute_casts_the_encoder_and_decoder_only_and_gradients_reach_float32_parameters():
    model = make_model(TINY, jax.random.PRNGKey(0))
    assert with_compute_dtype(model, "float32") is model
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        with_compute_dtype(model, "float16")
    mixed = with_compute_dtype(model, "bfloat16")

    def dtypes(tree):
        return {a.dtype.name for a in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))}

    assert dtypes(mixed.encoder) == dtypes(mixed.decoder) == {"bfloat16"}
    assert dtypes(mixed.quantizer) == {"float32"}  # cosine lookup, gains, phi and the vq losses stay float32
    x = smooth_fields(jax.random.PRNGKey(1), 8, 1, 16, 16)

    def rel(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    # jitted: one compilation each instead of op-by-op dispatch (bfloat16 convolutions are slow eagerly on a CPU)
    latent = eqx.filter_jit(lambda m, x: jax.vmap(m.latent)(x))
    decode = eqx.filter_jit(lambda m, z: jax.vmap(m.decode)(z))
    z, z_mixed = latent(model, x), latent(mixed, x)
    recon, recon_mixed = decode(model, z), decode(mixed, z)
    assert z_mixed.dtype == recon_mixed.dtype == jnp.float32  # handed to the quantiser and the loss in float32
    assert eqx.filter_eval_shape(jax.vmap(mixed), x)[0].dtype == jnp.float32
    # bfloat16 keeps 8 significant bits (rounding 2^-9, 0.2%); over this encoder's and decoder's 8 layers each the
    # rounding adds up to about 1%. Zero would mean float32 arithmetic; several percent, a coarser format.
    for name, a, b in (("latent", z_mixed, z), ("decoder output", recon_mixed, recon)):
        assert 1e-3 < rel(a, b) < 0.05, f"{name}: rel difference {rel(a, b):.2e} from float32"

    def loss(m, dtype):
        mm = with_compute_dtype(m, dtype)
        return jnp.mean((jax.vmap(mm.decode)(jax.vmap(mm.latent)(x)) - x) ** 2)

    grad = eqx.filter_jit(eqx.filter_grad(loss))
    g, g_mixed = (grad(model, d) for d in ("float32", "bfloat16"))
    assert dtypes(g_mixed) == {"float32"}  # the optimiser updates float32 parameters
    flat = [jnp.concatenate([v.ravel() for v in jax.tree_util.tree_leaves(t)]) for t in (g, g_mixed)]
    cosine = float(flat[0] @ flat[1] / (jnp.linalg.norm(flat[0]) * jnp.linalg.norm(flat[1])))
    assert cosine > 0.999, f"bfloat16 gradient points {cosine:.5f} (cosine) along the float32 one"
