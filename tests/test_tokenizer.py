"""models.tokenizer: vocabulary conventions, exact round trip, out-of-vocabulary remapping, file, loader, CLI.

Data: the session fixtures ``py2d_tiny_data`` (a real py2d run, 16², 18 samples of omega) and ``tiny_trained_run``
(a tiny VQ-VAE, 8×8 latent, scales 1, 2, 4, 8, 32 codes, trained 6 steps on samples [0, 14)). Every model call is
jitted (the tokenizer's own functions and ``models.inference``'s batch functions).
"""

import json
import math
import re
import shutil
from pathlib import Path

import equinox as eqx
import h5py
import jax
import numpy as np
import pytest

from models.inference import (
    decode_batch,
    denormalize,
    encode_batch,
    load_trained,
    normalized_batches,
    open_matching,
    reconstruct_batch,
)
from models.models import area_downsample, load
from models.tokenizer import (
    build_vocabulary,
    code_counts,
    create_tokenized_dataloader,
    decode_tokens,
    fit,
    load_tokenized_data,
    main,
    oov_counts,
    report,
    save_tokenized_data,
    teacher_forcing_inputs,
    tokenize,
    tokens_to_indices,
)
from solvers.common.atomic import file_sha256
from solvers.common.hdf5_utils import Grid, GustFile, create_writer

N = 18  # samples in py2d_tiny_data


@pytest.fixture(scope="module")
def run_dir(tiny_trained_run):
    return Path(tiny_trained_run)


@pytest.fixture(scope="module")
def trained(run_dir):
    return load_trained(run_dir / "model.eqx", run_dir / "config.txt")


@pytest.fixture(scope="module")
def encoded(trained, py2d_tiny_data):
    """Reference codes of all 18 samples through ``models.inference`` (one batch): (x, per-scale indices)."""
    with open_matching(trained, py2d_tiny_data) as ds:
        [(_, x)] = list(normalized_batches(trained, ds, N))
    return x, [np.asarray(i) for i in encode_batch(trained.model, x)]


@pytest.fixture(scope="module")
def vocab(trained, py2d_tiny_data):
    with open_matching(trained, py2d_tiny_data) as ds:
        return fit(trained, ds, batch_size=N)


def cli(*args):
    """Run the CLI in-process; an argparse error (SystemExit) becomes its exit code."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


def base_args(run_dir, data, *extra):
    return ["--checkpoint", run_dir / "model.eqx", "--config_path", run_dir / "config.txt", "--data_path", data, *extra]


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary as a pure function of code counts
# ----------------------------------------------------------------------------------------------------------------


def test_deterministic_scales_on_a_constructed_case():
    # 3 samples; scale 0 (1x1) always code 5, scale 1 (2x2) codes {3, 6}, scale 2 (2x2) always code 2.
    scales, v = ((1, 1), (2, 2), (2, 2)), 8
    idx = [
        np.full((3, 1, 1), 5),
        np.array([[[3, 6], [6, 6]], [[3, 3], [3, 3]], [[6, 6], [6, 6]]]),
        np.full((3, 2, 2), 2),
    ]
    vocab = build_vocabulary(code_counts(idx, v), scales, v)
    assert vocab.deterministic_scales == (0, 2) and vocab.deterministic_codes == (5, 2)
    assert vocab.first_trainable_scale == 1
    assert vocab.ranges == ((0, 0), (0, 2), (2, 2))  # deterministic scales own no token ids
    assert vocab.vocab_size == 2 and vocab.seq_len == 4  # only scale 1 is in the sequence
    assert vocab.token_to_code.tolist() == [3, 6]
    assert vocab.bits_per_sample == 4.0  # 4 tokens x log2(2)
    assert vocab.index_dtype() == np.uint8
    tokens = np.array([[0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    back = tokens_to_indices(tokens, vocab)
    for a, b in zip(back, idx, strict=True):
        np.testing.assert_array_equal(a, b)


def test_middle_deterministic_scale_ranges_and_bijection():
    scales, v = ((1, 1), (2, 2), (4, 4)), 8
    counts = np.zeros((3, v), np.int64)
    counts[0, [1, 4]] = [1, 1]
    counts[1, 7] = 8
    counts[2, [0, 2, 5]] = [10, 20, 2]
    vocab = build_vocabulary(counts, scales, v)
    assert vocab.first_trainable_scale == 0 and vocab.deterministic_scales == (1,)
    assert vocab.ranges == ((0, 2), (2, 2), (2, 5)) and vocab.seq_len == 1 + 16
    assert vocab.positions == ((0, 1), (1, 1), (1, 17))
    assert math.isclose(vocab.bits_per_sample, 1 * 1 + 16 * math.log2(3))
    # perplexity of scale 2: p = (10, 20, 2) / 32, exp(-sum p log p)
    p = np.array([10, 20, 2]) / 32
    assert math.isclose(vocab.perplexity[2], math.exp(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="scale 1 has no code counts"):
        build_vocabulary(np.where(np.arange(3)[:, None] == 1, 0, counts), scales, v)


def test_remap_is_a_bijection_and_ranges_cover_the_vocabulary(vocab, trained, encoded):
    # the fixture checks itself: every position of every sample was counted once
    for k, (h, w) in enumerate(vocab.scales):
        assert vocab.counts[k].sum() == N * h * w
        np.testing.assert_array_equal(vocab.counts[k], np.bincount(encoded[1][k].ravel(), minlength=32))
    ranges = vocab.ranges
    assert ranges[0][0] == 0 and ranges[-1][1] == vocab.vocab_size
    assert all(ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1))  # contiguous, disjoint
    t2c, c2t = vocab.token_to_code, vocab.code_to_token
    assert t2c.shape == (vocab.vocab_size,)
    for k in vocab.trainable_scales:
        start, end = ranges[k]
        used = vocab.used[k]
        assert end - start == used.size >= 2 and np.all(np.diff(used) > 0)  # sorted by codebook index
        np.testing.assert_array_equal(c2t[k, used], np.arange(start, end))  # code -> token -> code is identity
        np.testing.assert_array_equal(t2c[start:end], used)
        assert np.all(c2t[k, np.setdiff1d(np.arange(32), used)] == -1)


# ----------------------------------------------------------------------------------------------------------------
# Encoding, decoding, out of vocabulary, teacher forcing
# ----------------------------------------------------------------------------------------------------------------


def test_tokens_decode_to_exactly_the_model_reconstruction(trained, py2d_tiny_data, vocab, encoded):
    _, idx = encoded
    with open_matching(trained, py2d_tiny_data) as ds:
        tokens, oov, counts = tokenize(trained, ds, vocab, batch_size=N)
    assert tokens.shape == (N, vocab.seq_len) and tokens.dtype == vocab.index_dtype()
    assert oov.tolist() == [0] * len(vocab.scales)
    np.testing.assert_array_equal(counts, vocab.counts)
    back = tokens_to_indices(tokens, vocab)
    for a, b in zip(back, idx, strict=True):
        np.testing.assert_array_equal(a, b)
    reference = denormalize(trained, decode_batch(trained.model, [jax.numpy.asarray(i) for i in idx]))
    fields = decode_tokens(trained, tokens, vocab)
    assert fields.dtype == np.float32 and fields.shape == (N, 1, 16, 16)
    assert np.array_equal(fields, reference)
    assert np.std(fields) > 0
    # and the model's own reconstruction of the same samples (one jitted encode → decode program, which XLA fuses
    # differently: equal to float32 rounding, not bit for bit)
    x, _ = encoded
    own = denormalize(trained, reconstruct_batch(trained.model, x))
    np.testing.assert_allclose(fields, own, rtol=0, atol=1e-5 * np.abs(own).max())


def test_out_of_vocabulary_codes_are_requantised_and_counted(trained, py2d_tiny_data, vocab, encoded):
    _, idx = encoded
    k = int(np.argmax([u.size for u in vocab.used]))  # the scale with most codes
    c = int(np.argmax(vocab.counts[k]))  # drop its most frequent code from the vocabulary
    counts = np.array(vocab.counts)
    counts[k, c] = 0
    small = build_vocabulary(counts, vocab.scales, vocab.codebook_size)
    with open_matching(trained, py2d_tiny_data) as ds:
        tokens, oov, _ = tokenize(trained, ds, small, batch_size=N)
    expected_oov = np.zeros(len(vocab.scales), np.int64)
    expected_oov[k] = vocab.counts[k, c]
    np.testing.assert_array_equal(oov, expected_oov)
    # expected: c goes to the used code of scale k with the largest cosine similarity (numpy, independent of the module)
    cb = np.asarray(trained.model.quantizer.codebook, np.float64)
    cn = cb / np.linalg.norm(cb, axis=1, keepdims=True)
    used = small.used[k]
    nearest = used[np.argmax(cn[used] @ cn[c])]
    assert nearest != c
    p, q = small.positions[k]
    want = small.code_to_token[k][np.where(idx[k] == c, nearest, idx[k]).reshape(N, -1)]
    np.testing.assert_array_equal(tokens[:, p:q], want)
    # the streaming loader reports the same counts
    loader = create_tokenized_dataloader(trained, py2d_tiny_data, small, batch_size=N)
    assert np.array_equal(np.concatenate([np.asarray(t) for t in loader]), tokens)
    np.testing.assert_array_equal(loader.oov_counts, expected_oov)


def test_scale_deterministic_on_fit_but_not_here_is_reported(trained, py2d_tiny_data, vocab, encoded):
    _, idx = encoded
    k = int(np.argmax([u.size for u in vocab.used]))
    c = int(np.argmax(vocab.counts[k]))
    counts = np.array(vocab.counts)
    counts[k] = 0
    counts[k, c] = 1  # scale k deterministic (code c) on the "fit split"
    det = build_vocabulary(counts, vocab.scales, vocab.codebook_size)
    assert k in det.deterministic_scales and det.seq_len == vocab.seq_len - vocab.scales[k][0] * vocab.scales[k][1]
    with open_matching(trained, py2d_tiny_data) as ds:
        tokens, oov, here = tokenize(trained, ds, det, batch_size=N)
    assert oov[k] == np.sum(idx[k] != c) > 0
    text = report(det, trained, here, N, oov)
    assert f"deterministic on the fit split but not here: scale(s) {k}" in text
    assert tokens_to_indices(tokens, det)[k].tolist() == np.full_like(idx[k], c).tolist()


def test_teacher_forcing_inputs(trained, vocab, encoded):
    _, idx = encoded
    tokens = np.concatenate([vocab.code_to_token[k][idx[k].reshape(N, -1)] for k in vocab.trainable_scales], axis=1)
    tf = teacher_forcing_inputs(trained, tokens[:4], vocab)
    d = trained.config.embed_dim
    assert [a.shape for a in tf] == [(4, h * w, d) for h, w in vocab.scales]
    assert np.all(tf[0] == 0)  # no prefix before scale 0: zeros, the AR model's start token goes there
    q = trained.model.quantizer

    @eqx.filter_jit
    def prefix(quant, i, n, h, w):  # area_down(f_hat after n scales) via the model's own indices_to_latent
        return jax.vmap(lambda s: area_downsample(quant.indices_to_latent(s, n), h, w))(i)

    sub = [jax.numpy.asarray(i[:4]) for i in idx]
    for k in range(1, len(vocab.scales)):
        h, w = vocab.scales[k]
        ref = np.asarray(prefix(q, sub, k, h, w)).reshape(4, d, h * w).transpose(0, 2, 1)
        np.testing.assert_allclose(tf[k], ref, rtol=1e-5, atol=1e-6)
    assert np.abs(tf[-1]).max() > 0
    flat = teacher_forcing_inputs(trained, tokens[:4], vocab, concat=True)
    assert flat.shape == (4, vocab.seq_len, d)
    np.testing.assert_array_equal(flat, np.concatenate([tf[k] for k in vocab.trainable_scales], axis=1))


# ----------------------------------------------------------------------------------------------------------------
# File and CLI
# ----------------------------------------------------------------------------------------------------------------


def test_save_writes_a_valid_file_equal_to_the_streaming_loader(run_dir, trained, py2d_tiny_data, vocab, tmp_path):
    out = tmp_path / "tokens.npz"
    assert cli("save", *base_args(run_dir, py2d_tiny_data, "--output", out, "--batch_size", N, "--no_progress")) == 0
    data = load_tokenized_data(out)
    assert data.tokens.shape == (N, vocab.seq_len) and data.tokens.dtype == np.uint8
    np.testing.assert_array_equal(data.vocab.counts, vocab.counts)
    assert data.oov_counts.tolist() == [0] * len(vocab.scales)
    cb = np.asarray(trained.model.quantizer.codebook)
    cn = cb / np.maximum(np.linalg.norm(cb, axis=1, keepdims=True), 1e-6)
    np.testing.assert_allclose(data.codebook, cn[vocab.token_to_code], rtol=1e-6)
    prov = data.provenance
    assert prov["checkpoint_sha256"] == trained.checkpoint_sha256
    assert prov["data_path"] == str(Path(py2d_tiny_data).resolve()) and prov["sample_range"] == [0, N]
    with GustFile(py2d_tiny_data) as f:
        assert prov["data_source"] == f.identity() and prov["data_source"]["created"] == f.attrs["created"]
    assert "code_version" in prov and data.config_text == (run_dir / "config.txt").read_text()
    batches = list(create_tokenized_dataloader(trained, py2d_tiny_data, vocab, batch_size=np.int64(4)))  # any int
    assert [b.shape[0] for b in batches] == [4, 4, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([np.asarray(b) for b in batches]), data.tokens)


def test_info_prints_the_table_and_writes_nothing(run_dir, py2d_tiny_data, vocab, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(run_dir.iterdir()), sorted(tmp_path.iterdir())
    assert cli("info", *base_args(run_dir, py2d_tiny_data, "--no_progress")) == 0
    assert (sorted(run_dir.iterdir()), sorted(tmp_path.iterdir())) == before
    text = capsys.readouterr().out
    for k, (h, w) in enumerate(vocab.scales):
        assert f"{h}x{w}" in text and f"{np.count_nonzero(vocab.counts[k])}/32" in text
    assert f"sequence length L = {vocab.seq_len}, vocabulary size = {vocab.vocab_size}" in text
    assert f"bits per sample = {vocab.bits_per_sample:.1f}" in text
    assert f"compression ratio vs float32 fields = {16 * 16 * 32 / vocab.bits_per_sample:.1f}" in text


def test_vocab_from_the_training_split(run_dir, trained, py2d_tiny_data, tmp_path, capsys):
    train = tmp_path / "train.npz"
    assert cli("save", *base_args(run_dir, py2d_tiny_data, "--sample_stop", 4, "--output", train, "--no_progress")) == 0
    tv = load_tokenized_data(train).vocab
    with open_matching(trained, py2d_tiny_data) as ds:
        here = fit(trained, ds, N).counts
    expected = oov_counts(tv, here)
    capsys.readouterr()
    assert cli("info", *base_args(run_dir, py2d_tiny_data, "--vocab_from", train, "--no_progress")) == 0
    assert f"(re-quantised to the nearest used code) = {expected.sum()}" in capsys.readouterr().out
    out = tmp_path / "all.npz"
    args = base_args(run_dir, py2d_tiny_data, "--vocab_from", train, "--output", out, "--no_progress")
    assert cli("save", *args) == 0
    data = load_tokenized_data(out)
    np.testing.assert_array_equal(data.oov_counts, expected)
    np.testing.assert_array_equal(data.vocab.counts, tv.counts)
    assert data.provenance["vocab_from"] == str(train.resolve())


def test_save_refuses_an_existing_output(run_dir, py2d_tiny_data, tmp_path, capsys):
    out = tmp_path / "tokens.npz"
    out.write_bytes(b"keep me")
    args = base_args(run_dir, py2d_tiny_data, "--output", out, "--no_progress")
    assert cli("save", *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert cli("save", *args, "--overwrite") == 0
    load_tokenized_data(out)


def _bad_inputs(run_dir, tmp_path, good_npz):
    cfg = tmp_path / "config16.txt"
    text = (run_dir / "config.txt").read_text()
    assert "codebook_size = 32\n" in text
    cfg.write_text(text.replace("codebook_size = 32\n", "codebook_size = 16\n"))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3))
    truncated = tmp_path / "truncated.npz"
    raw = good_npz.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    other = tmp_path / "other.npz"  # a valid tokens file, but made by another checkpoint
    with np.load(good_npz) as z:
        arrays = dict(z)
    prov = {**json.loads(str(arrays["provenance"])), "checkpoint_sha256": "0" * 64}
    arrays["provenance"] = np.array(json.dumps(prov))
    np.savez(other, **arrays)
    load_tokenized_data(other)
    return {
        "config": (["--config_path", cfg], "does not match config"),
        "config_binary": (["--config_path", run_dir / "model.eqx"], "is not a text config.txt"),
        "fields": (["--fields", "u"], "--fields u do not match the model's fields omega"),
        "foreign": (["--vocab_from", foreign], "no format tag"),
        "truncated": (["--vocab_from", truncated], "cannot be read as a tokens .npz"),
        "garbage": (["--vocab_from", garbage], "--vocab_from"),
        "missing": (["--vocab_from", tmp_path / "nope.npz"], "does not exist"),
        "batch": (["--batch_size", "0"], "--batch_size"),
        "other_checkpoint": (["--vocab_from", other], "was made with checkpoint sha256 000000000000"),
        "empty_range": (["--sample_start", "5", "--sample_stop", "5"], "--sample_start 5 and --sample_stop 5 leave an"),
    }


@pytest.mark.parametrize(
    "case",
    [
        *("config", "config_binary", "fields", "foreign", "truncated", "garbage", "missing", "batch"),
        *("other_checkpoint", "empty_range"),
    ],
)
def test_bad_input_is_one_line_exit_2(case, run_dir, py2d_tiny_data, tmp_path, capsys):
    good = tmp_path / "good.npz"
    assert cli("save", *base_args(run_dir, py2d_tiny_data, "--sample_stop", 4, "--output", good, "--no_progress")) == 0
    extra, message = _bad_inputs(run_dir, tmp_path, good)[case]
    capsys.readouterr()
    args = base_args(run_dir, py2d_tiny_data, "--no_progress")
    if case in ("config", "config_binary"):
        args = args[:2] + args[4:]  # replace the run's config by the mismatching one
    code = cli("info", *args, *extra)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["good.npz", "config16.txt", "foreign.npz", "truncated.npz", "garbage.npz", "other.npz"]
    )


def test_save_tokenized_data_validates_and_is_atomic(trained, vocab, tmp_path):
    out = tmp_path / "t.npz"
    tokens = np.zeros((2, vocab.seq_len), np.int64)
    for (p, q), (start, _) in zip(vocab.positions, vocab.ranges, strict=True):
        tokens[:, p:q] = start  # each scale's first token
    with pytest.raises(ValueError, match="tokens must lie in"):  # a token of another scale's range
        save_tokenized_data(out, np.roll(tokens, 1, axis=1), vocab, trained, {})
    with pytest.raises(ValueError, match=r"oov_counts must be 4 integer counts >= 0 \(got \[1, 2\]\)"):
        save_tokenized_data(out, tokens, vocab, trained, {}, oov_counts=[1, 2])
    save_tokenized_data(out, tokens, vocab, trained, {"checkpoint_sha256": "x", "note": "mine"})
    saved = load_tokenized_data(out)
    assert saved.tokens.dtype == np.uint8
    # the checkpoint's own entries win (--vocab_from checks them), the caller's others are kept
    assert saved.provenance == {**trained.provenance(), "note": "mine"}
    with pytest.raises(FileExistsError):
        save_tokenized_data(out, tokens, vocab, trained, {})
    with pytest.raises(ValueError, match="must lie in"):
        save_tokenized_data(tmp_path / "u.npz", tokens + vocab.vocab_size, vocab, trained, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no temporary file left behind


# ----------------------------------------------------------------------------------------------------------------
# What the tools refuse to tokenise: another run's model, a diverged model, non-finite data, another grid
# ----------------------------------------------------------------------------------------------------------------


def _run_with_model(run_dir, dst, change):
    """A copy of the run whose model.eqx holds ``change(params)``; config.txt copied as it is."""
    dst.mkdir()
    shutil.copy(run_dir / "config.txt", dst / "config.txt")
    model, _ = load(run_dir / "model.eqx", run_dir / "config.txt")
    params, static = eqx.partition(model, eqx.is_inexact_array)
    eqx.tree_serialise_leaves(dst / "model.eqx", eqx.combine(jax.tree.map(change, params), static))
    return dst


def test_a_model_from_another_run_is_refused(run_dir, py2d_tiny_data, tmp_path, capsys):
    """Same architecture, other weights (e.g. a run on another field): config.txt's model_sha256 ties the pair."""
    other = _run_with_model(run_dir, tmp_path / "other", lambda a: a + 1e-3)
    code = cli("info", *base_args(other, py2d_tiny_data, "--no_progress"))
    err = capsys.readouterr().err
    assert code == 2 and "is not the model that --config_path" in err and err.count("\n") == 1, err
    assert "--resume" not in err
    # a training run's folder (checkpoint.json): the pair a kill between its two replacements leaves; say the repair
    shutil.copy(run_dir / "checkpoint.json", other / "checkpoint.json")
    assert cli("info", *base_args(other, py2d_tiny_data, "--no_progress")) == 2
    err = capsys.readouterr().err
    assert "if its training was killed while saving, rerun it with --resume" in err and err.count("\n") == 1, err


def test_a_diverged_model_is_refused(run_dir, py2d_tiny_data, tmp_path, capsys):
    bad = _run_with_model(run_dir, tmp_path / "nan", lambda a: a * np.nan)
    text = (bad / "config.txt").read_text()
    old = next(line for line in text.splitlines() if line.startswith("model_sha256 = "))
    (bad / "config.txt").write_text(text.replace(old, f"model_sha256 = {json.dumps(file_sha256(bad / 'model.eqx'))}"))
    code = cli("info", *base_args(bad, py2d_tiny_data, "--no_progress"))
    err = capsys.readouterr().err
    assert code == 2 and "has non-finite (NaN/inf) weights" in err, err


def test_non_finite_data_is_refused(run_dir, py2d_tiny_data, tmp_path, capsys):
    """It used to be tokenised: a NaN pixel collapsed its sample's tokens to a few codes, exit 0."""
    path = tmp_path / "nan.h5"
    shutil.copy(py2d_tiny_data, path)
    with h5py.File(path, "r+") as f:
        f["fields/omega"][3, 2, 2] = np.nan
    out = tmp_path / "tokens.npz"
    code = cli("save", *base_args(run_dir, path, "--no_progress", "--output", out))
    err = capsys.readouterr().err
    assert code == 2 and "--data_path has non-finite values (NaN/inf) in items 0..17" in err, err
    assert not out.exists()


def test_data_on_another_grid_of_the_same_shape_is_refused(run_dir, trained, tmp_path, capsys):
    """16² periodic, but a box of side 8 instead of 2π: same shape and boundaries, other physics per pixel."""
    x = np.arange(16) * 0.5
    grid = Grid(x=x, y=x, bc_x="periodic", bc_y="periodic", length_x=8.0, length_y=8.0)
    path = tmp_path / "box8.h5"
    w = create_writer(path, fields=["omega"], shape=(16, 16), n_samples=4, grid=grid, diagnostics=[], n_diag=0,
                      n_trajectories=1, state_spec={}, attrs={"solver": "test_tokenizer"})  # fmt: skip
    omega = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    w.write_samples({"omega": omega}, time=0.1 * np.arange(4), trajectory=np.zeros(4, int), step=np.arange(4))
    w.commit()
    w.finalize()
    code = cli("info", *base_args(run_dir, path, "--no_progress"))
    err = capsys.readouterr().err
    assert code == 2 and "another grid (lengths y 8, x 8, or other coordinates)" in err, err
    assert "(lengths y 6.28319, x 6.28319)" in err


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, v: a["indices_flat"].__setitem__((0, v.positions[-1][0]), v.ranges[0][0]), "scale-"),
        (lambda a, v: a["oov_counts"].__setitem__(0, -1), "oov_counts must be"),
        (lambda a, v: a["codebook"].__setitem__((0, 0), np.nan), "codebook has non-finite values"),
        (lambda a, v: a.__setitem__("provenance", np.array("[1, 2]")), "provenance is JSON list, not an object"),
        (lambda a, v: a.__setitem__("codebook_size", np.array([32, 32])), "codebook_size has shape (2,)"),
    ],
    ids=["token_of_another_scale", "negative_oov", "nan_codebook", "provenance_list", "codebook_size_not_a_number"],
)
def test_load_refuses_an_inconsistent_tokens_file(trained, vocab, tmp_path, change, message):
    """Each of these loaded before (and a list provenance crashed --vocab_from with an AttributeError)."""
    tokens = np.zeros((2, vocab.seq_len), np.int64)
    for (p, q), (start, _) in zip(vocab.positions, vocab.ranges, strict=True):
        tokens[:, p:q] = start
    good = tmp_path / "good.npz"
    save_tokenized_data(good, tokens, vocab, trained, {"checkpoint_sha256": "x"})
    with np.load(good) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    change(arrays, vocab)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_tokenized_data(bad)
