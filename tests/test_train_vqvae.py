"""models.train_vqvae: CLI end to end, loss falls, the step compiles once, resume is bit-exact, bad inputs, 4 devices.

Data: a real py2d turbulence run (16², 2 trajectories × 9 frames = 18 samples of omega); the model is tiny (ch 8,
ch_mult 1,2 → 8×8 latent, scales 1, 2, 4, 8) so the whole file stays well under a minute and a half on 2 cores.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from unittest import mock

import equinox as eqx
import h5py
import jax
import numpy as np
import pytest

from models import train_vqvae
from models.models import load
from models.train_vqvae import TrainConfig, decay_mask, default_scales, main, train
from solvers.common.atomic import file_sha256
from solvers.common.hdf5_utils import Grid, GustFile, create_writer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--ch", "8", "--num_groups", "4", "--embed_dim", "8", "--codebook_size", "32", "--no_progress"]


@pytest.fixture(scope="session")
def data(py2d_tiny_data):
    return py2d_tiny_data


def argv(data, out, *extra, steps=6, batch=4):
    base = ["--data_path", data, "--fields", "omega", "--output_dir", str(out), "--steps", str(steps)]
    base += ["--batch_size", str(batch), "--sample_start", "0", "--sample_stop", "14", "--warmup_steps", "2"]
    return [*base, *TINY, *extra]


def tiny_config(data, **kw):
    base = dict(data_path=data, fields=("omega",), sample_stop=14, batch_size=4, warmup_steps=2)
    base.update(ch=8, num_groups=4, embed_dim=8, codebook_size=32)
    base.update(kw)
    return TrainConfig(**base)


def records(out):
    """metrics.jsonl's rows without their wall time (``elapsed_s``, checked present and increasing), so that runs
    can be compared row for row."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    times = [r.pop("elapsed_s") for r in rows]
    assert all(t >= 0 for t in times), times
    return rows


def test_cli_end_to_end_writes_every_output_and_the_pair_reloads(data, tmp_path, capsys):
    out = tmp_path / "run"
    extra = ["--val_start", "14", "--val_stop", "18", "--log_every", "2", "--checkpoint_every", "4"]
    assert main(argv(data, out, *extra, "--spectral_weight", "0.1")) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["model.eqx", "config.txt", "stats.json", "metrics.jsonl", "loss.png", "checkpoint.json", "ckpt_00000006.eqx"]
    )
    model, mconfig = load(out / "model.eqx", out / "config.txt")
    assert (mconfig.in_channels, mconfig.height, mconfig.width, mconfig.ch) == (1, 16, 16, 8)
    assert mconfig.scales == ((1, 1), (2, 2), (4, 4), (8, 8))
    recon, _ = eqx.filter_jit(model)(np.zeros((1, 16, 16), np.float32))  # jitted: eager convs take seconds
    assert recon.shape == (1, 16, 16) and np.all(np.isfinite(recon))
    text = (out / "config.txt").read_text()
    lines = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    assert json.loads(lines["step"]) == 6 and json.loads(lines["fields"]) == ["omega"]
    assert json.loads(lines["data_path"]) == str(Path(data).resolve())
    assert json.loads(lines["sample_stop"]) == 14 and json.loads(lines["spectral_weight"]) == 0.1
    assert json.loads(lines["code_version"]) and "lr" in lines and "weight_decay" in lines
    stats = json.loads((out / "stats.json").read_text())
    assert json.loads(lines["norm_mean"]) == stats["mean"] and json.loads(lines["norm_std"]) == stats["std"]
    # the pair is tied together (the tools refuse another run's model.eqx) and the training grid is recorded
    assert json.loads(lines["model_sha256"]) == file_sha256(out / "model.eqx")
    with GustFile(data) as f:
        assert json.loads(lines["data_grid"]) == {
            "length_y": 2 * np.pi,
            "length_x": 2 * np.pi,
            "fingerprint": f.grid.fingerprint(),
        }
        assert json.loads(lines["data_source"]) == f.identity()  # which run wrote the data
        assert json.loads(lines["data_source"])["created"] == f.attrs["created"]
    # statistics of the training range only: samples 0..13, not the whole file
    from dataloaders import GustDataset, compute_stats

    with GustDataset(data, ["omega"], sample_stop=14) as ds:
        assert list(compute_stats(ds).std) == stats["std"]
    recs = records(out)
    assert [r["step"] for r in recs] == [2, 4, 6]
    for r in recs:
        assert {"loss", "mse", "vq_loss", "commit_loss", "spectral_loss", "grad_norm", "val_loss", "lr"} <= r.keys()
        assert len(r["usage"]) == 4 and all(0 < u <= 1 for u in r["usage"])
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))
    assert capsys.readouterr().out.strip() == str(out)


# codebook 96 with restarts every 5 steps: codes die and are restarted at steps 10, 15, 20, both sides of the
# interruption at 12 in the resume test
STRAIGHT = dict(steps=24, log_every=1, checkpoint_every=5, lr=3e-3, warmup_steps=3, restart_every=5, codebook_size=96)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """One uninterrupted 24-step run (shared by the loss, compile, resume and 4-device tests), its trace count and
    how many times it drew loss.png."""
    traces = []
    out = tmp_path_factory.mktemp("straight") / "run"
    with mock.patch.object(train_vqvae, "_plot", wraps=train_vqvae._plot) as plot:
        train(tiny_config(data, **STRAIGHT), out, progress=False, on_trace=lambda: traces.append(1))
    return out, len(traces), plot.call_count


def test_loss_falls_and_the_step_compiles_once(straight):
    out, n_traces, n_plots = straight
    assert n_traces == 1  # 24 calls of train_step, one trace
    # checkpoints at 5, 10, 15, 20 and the end: loss.png drawn at the first and at the end (the run takes < 60 s)
    assert n_plots == 2 and (out / "loss.png").stat().st_size > 0
    loss = [r["loss"] for r in records(out)]
    assert len(loss) == 24 and np.mean(loss[-4:]) < 0.7 * np.mean(loss[:4]), loss


def test_resume_is_bit_exact(data, straight, tmp_path, capsys):
    out = straight[0]
    train(tiny_config(data, **STRAIGHT), tmp_path / "split", progress=False, stop_after=12)  # as if killed at 12
    assert json.loads((tmp_path / "split" / "checkpoint.json").read_text())["step"] == 12
    legacy = tmp_path / "legacy"
    shutil.copytree(tmp_path / "split", legacy)
    first = train_vqvae.read_settings((tmp_path / "split" / "config.txt").read_text())
    flags = ["--resume", "--log_every", "1", "--checkpoint_every", "7", "--lr", "0.003", "--warmup_steps", "3"]
    flags += ["--restart_every", "5", "--codebook_size", "96"]
    assert main(argv(data, tmp_path / "split", *flags, steps=24)) == 0
    for name in ("model.eqx", "ckpt_00000024.eqx"):  # model leaves, and model + optimiser state
        assert (out / name).read_bytes() == (tmp_path / "split" / name).read_bytes()
    assert records(out) == records(tmp_path / "split")
    # the run keeps its first start's provenance and lists the resume (from step 12, with its own command line)
    after = train_vqvae.read_settings((tmp_path / "split" / "config.txt").read_text())
    assert {k: after[k] for k in ("created", "command_line")} == {k: first[k] for k in ("created", "command_line")}
    assert [r["step"] for r in after["resumes"]] == [12] and "--resume" in after["resumes"][0]["command_line"]
    # a resume of a finished run changes nothing, its provenance included
    before = {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()}
    capsys.readouterr()
    assert main(argv(data, tmp_path / "split", *flags, steps=24)) == 0
    assert "has done its 24 steps; nothing to resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()} == before
    # a resume with other hyperparameters is refused
    assert main(argv(data, tmp_path / "split", "--resume", "--lr", "0.01", steps=24)) == 2
    assert main(argv(data, tmp_path / "split", *flags, "--scales", "2x2,8x8", steps=24)) == 2
    assert main(argv(data, tmp_path / "split", *flags, "--prefix_weight", "0", steps=24)) == 2
    assert main(argv(data, tmp_path / "split", *flags, "--compute_dtype", "bfloat16", steps=24)) == 2
    assert main(argv(data, tmp_path / "split", *flags, "--prefix_every", "2", steps=24)) == 2
    # a run made before --prefix_weight existed has no such line and trained without it (0), not the new default;
    # one made before wrap_upsample (no flag) goes on without it, as it was built; one made before --compute_dtype
    # trained in float32
    lines = (legacy / "config.txt").read_text().splitlines(keepends=True)
    old_keys = ("prefix_weight", "wrap_up", "compute_dtype", "prefix_every")
    (legacy / "config.txt").write_text("".join(x for x in lines if not x.startswith(old_keys)))
    capsys.readouterr()
    assert main(argv(data, legacy, *flags, steps=24)) == 2
    assert "--prefix_weight=0.1 differs" in capsys.readouterr().err
    assert main(argv(data, legacy, *flags, "--prefix_weight", "0", steps=24)) == 0
    assert "wrap_upsample = false" in (legacy / "config.txt").read_text()


def test_bfloat16_training_learns_and_keeps_float32_parameters(data, straight, tmp_path):
    # the straight run again with the encoder and decoder computing in bfloat16 (mixed precision)
    out = straight[0]
    mixed = tmp_path / "mixed"
    train(tiny_config(data, **STRAIGHT, compute_dtype="bfloat16"), mixed, progress=False)
    assert 'compute_dtype = "bfloat16"' in (mixed / "config.txt").read_text()
    # same parameter count and dtypes: a bfloat16 leaf would make the files smaller
    for name in ("model.eqx", "ckpt_00000024.eqx"):
        assert (mixed / name).stat().st_size == (out / name).stat().st_size
    loss, loss32 = [r["loss"] for r in records(mixed)], [r["loss"] for r in records(out)]
    # step 1 evaluates the same initial parameters on the same batch: only the rounding differs (about 1% in the
    # latent and the output, see test_models), and it does differ (bfloat16 arithmetic is used)
    assert 0 < abs(loss[0] - loss32[0]) < 0.02 * loss32[0], (loss[0], loss32[0])
    assert len(loss) == 24 and np.mean(loss[-4:]) < 0.7 * np.mean(loss[:4]), loss


def test_flags_of_a_run_rebuild_its_settings(data, straight):
    # benchmarks.vqvae_floor --like trains with these: every setting of the run, later flags override
    from models.train_vqvae import build_parser, flags_of_run

    out = straight[0]
    text = (out / "config.txt").read_text()

    def settings(flags):
        args = build_parser().parse_args([*flags, "--output_dir", "x"])
        return TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})

    expected = dataclasses.replace(tiny_config(data, **STRAIGHT), data_path=str(Path(data).resolve()))
    expected = dataclasses.replace(expected, scales=((1, 1), (2, 2), (4, 4), (8, 8)))  # the defaults, as written
    assert settings(flags_of_run(text)) == expected
    assert settings([*flags_of_run(text), "--steps", "7", "--scales", "2x2,8x8"]) == dataclasses.replace(
        expected, steps=7, scales=((2, 2), (8, 8))
    )
    # a run made before --prefix_weight existed trained without it
    old = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("prefix_weight"))
    assert settings(flags_of_run(old)).prefix_weight == 0.0 != expected.prefix_weight


def test_resume_from_a_damaged_checkpoint_is_one_line_exit_2(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(data, steps=6), run, progress=False, stop_after=3)  # checkpoint at 3 of 6 steps
    ckpt = run / json.loads((run / "checkpoint.json").read_text())["file"]
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a copy cut short
    capsys.readouterr()
    assert main(argv(data, run, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"checkpoint {ckpt} cannot be read" in err, err
    (run / "checkpoint.json").write_text("{not json")
    assert main(argv(data, run, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.json is not a checkpoint record" in err, err
    (run / "checkpoint.json").write_text(json.dumps({"file": ckpt.name, "step": 3}))  # no loader position
    assert main(argv(data, run, "--resume")) == 2
    assert "checkpoint.json is not a checkpoint record" in capsys.readouterr().err


def test_dead_codes_are_restarted_from_the_batch_encoder_outputs(data, straight):
    recs = records(straight[0])
    assert sum(r["restarted"] for r in recs) > 0  # the resume test above then covers runs with restarts
    assert all(r["restarted"] == 0 for r in recs if r["step"] % 5)  # only on restart steps
    # one step by hand: dead codes (never used since the last restart) are replaced by rows of this batch's
    # encoder outputs; live codes only move by their optimiser update; off-steps change nothing
    import jax
    import jax.numpy as jnp

    from dataloaders import BatchLoader, GustDataset, compute_stats
    from models.models import make_model
    from models.train_vqvae import make_optimizer, make_train_step, model_config

    cfg = tiny_config(data, codebook_size=64)
    model = make_model(model_config(cfg, 16, 16, "periodic", "periodic"), jax.random.PRNGKey(0))
    opt = make_optimizer(cfg, eqx.filter(model, eqx.is_inexact_array))
    with GustDataset(data, ["omega"], sample_stop=14) as ds:
        with BatchLoader(ds, 4, normalize=compute_stats(ds), epochs=1) as loader:
            batch = next(iter(loader))
    step = make_train_step(opt, 0.0, restart_every=2, seed=3)
    counts = jnp.zeros(64).at[:32].set(1.0)  # codes 0..31 "used earlier"; 32..63 dead unless this batch uses them
    idx = [np.asarray(i).ravel() for i in eqx.filter_jit(lambda m, b: jax.vmap(m.encode_indices)(b))(model, batch)]
    live = np.zeros(64, bool)
    live[np.concatenate(idx)] = True
    live |= np.asarray(counts) > 0
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    cb_old = np.asarray(model.quantizer.codebook)
    for n, expect_restart in ((1, False), (2, True)):
        new, _, new_counts, m = step(model, opt_state, counts, batch, jnp.asarray(n, jnp.int32))  # one compilation
        cb_new = np.asarray(new.quantizer.codebook)
        if not expect_restart:
            assert int(m["restarted"]) == 0 and np.array_equal(cb_new[~live], cb_old[~live])
            assert np.all(np.asarray(new_counts)[live] > 0)
            continue
        assert int(m["restarted"]) == int((~live).sum()) > 0
        assert np.all(np.asarray(new_counts) == 0)
        latents = eqx.filter_jit(lambda m, b: jax.vmap(m.latent)(b))(new, batch)  # the updated encoder the step used
        vectors = np.moveaxis(np.asarray(latents), 1, -1).reshape(-1, cb_new.shape[1])
        for row in np.flatnonzero(~live):  # equal up to XLA's fusion differences between two compilations
            dist = np.abs(vectors - cb_new[row]).max(axis=1) / np.abs(cb_new[row]).max()
            assert dist.min() < 1e-5, (row, dist.min())
        # a fresh optimiser's first update has lr 0 (warm-up from 0), so live codes are exactly untouched
        assert np.array_equal(cb_new[live], cb_old[live])


def test_weight_decay_mask_and_default_scales():
    import jax

    from models.models import make_model
    from models.train_vqvae import model_config

    mconfig = model_config(TrainConfig("x", ("a",)), 16, 16, "periodic", "wall")
    m = eqx.filter_eval_shape(make_model, mconfig, jax.random.PRNGKey(0))
    mask = decay_mask(m)  # shapes only (filter_eval_shape)
    assert mask.encoder.conv_in.conv.weight and not mask.encoder.conv_in.conv.bias
    assert not mask.quantizer.codebook and not mask.quantizer.log_gains
    assert not mask.encoder.blocks[0].norm1.weight
    # every leaf: exactly the convolution kernels decay (φ's included); biases, norms, codebook and gains do not
    leaves = [(jax.tree_util.keystr(path), flag) for path, flag in jax.tree_util.tree_flatten_with_path(mask)[0]]
    assert sum("phi" in name and flag for name, flag in leaves) >= 1
    for name, flag in leaves:
        assert flag == (name.endswith(".weight") and "norm" not in name), name
    assert default_scales((8, 8)) == ((1, 1), (2, 2), (4, 4), (8, 8))
    assert default_scales((4, 8)) == ((1, 1), (2, 2), (4, 4), (4, 8))


def _small_file(path, *, bad=np.nan, bc=("periodic", "periodic")):
    """Four 8×8 samples of random "u" on a grid with boundary conditions ``bc`` (y, x); one value ``bad`` (NaN)."""
    grid = Grid(x=np.arange(8.0), y=np.arange(8.0), bc_x=bc[1], bc_y=bc[0], length_x=8.0, length_y=8.0)
    w = create_writer(
        path,
        fields=["u"],
        shape=(8, 8),
        n_samples=4,
        grid=grid,
        diagnostics=[],
        n_diag=0,
        n_trajectories=1,
        state_spec={},
        attrs={"solver": "test_train_vqvae"},
    )
    u = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    if bad is not None:
        u[2, 3, 3] = bad
    w.write_samples({"u": u}, time=0.1 * np.arange(4), trajectory=np.zeros(4, int), step=np.arange(4))
    w.commit()
    w.finalize()
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fields", "vorticity"], "available: omega"),
        (["--sample_start", "5", "--sample_stop", "5"], "empty sample range"),
        (["--sample_start", "18", "--sample_stop", "20"], "training range"),
        (["--scales", "1x1,2x2,4x4"], "end at the latent size"),
        (["--scales", "2x2,1x1,8x8"], "increasing"),
        (["--ch_mult", "1,2,2,2,2,2"], "not divisible by the downsampling factor 32"),
        (["--batch_size", "20"], "exceeds the 14 training samples"),
        (["--warmup_steps", "6"], "--warmup_steps"),
        (["--steps", str(2**31)], "--steps must be <= 2147483647"),  # was an OverflowError traceback in the step
        (["--prefix_every", "0"], "--prefix_every must be an integer >= 1"),
        (["--prefix_every", "5"], "--prefix_every=5 must be <= --batch_size=4"),
        (
            ["--val_start", "10", "--val_stop", "18"],
            "the validation range [10, 18) overlaps the training range [0, 14)",
        ),
        (["--val_stop", "14"], "the validation range [0, 14) overlaps the training range [0, 14)"),  # val_start 0
        (["--val_start", "14", "--val_stop", "30"], "--val_stop=30 is beyond the 18 committed samples"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main([*argv(data, out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("scales", ["1x1,8", "0x0,8x8", "1x1,2x2x2"])
def test_malformed_scales_are_a_one_line_argparse_error(data, tmp_path, capsys, scales):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:  # argparse's own exit: the type check runs while parsing
        main([*argv(data, out), "--scales", scales])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "expected positive AxB pairs" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_refused(tmp_path, capsys, bad):
    path = _small_file(tmp_path / "bad.h5", bad=bad)
    args = ["--data_path", path, "--fields", "u", "--output_dir", str(tmp_path / "run"), "--steps", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would print lines of its own before the one-line error
        assert main([*args, "--batch_size", "2", "--warmup_steps", "0", *TINY]) == 2
    err = capsys.readouterr().err
    assert "non-finite values (NaN/inf) in samples 0..3" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_spectral_loss_without_a_periodic_axis_is_refused(tmp_path, capsys):
    path = _small_file(tmp_path / "walls.h5", bad=None, bc=("wall", "wall"))
    args = ["--data_path", path, "--fields", "u", "--output_dir", str(tmp_path / "run"), "--steps", "2"]
    assert main([*args, "--batch_size", "2", "--warmup_steps", "0", "--spectral_weight", "0.1", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--spectral_weight=0.1 needs a periodic axis" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def _log_spectral_reference(recon, target, transform, eps=1e-8):
    """The loss by hand in numpy: ``transform`` maps (B, C, H, W) to per-sample power arrays (B, C, ...)."""
    p_r, p_t = transform(recon).mean(axis=0), transform(target).mean(axis=0)  # (C, K)
    floor = eps * p_t.mean(axis=-1, keepdims=True) + eps
    return float(np.mean(np.log((p_r + floor) / (p_t + floor)) ** 2))


def test_log_spectral_loss_transforms_the_periodic_axes_and_averages_over_a_wall_axis():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(3, 2, 8, 12))
    recon = target + 0.3 * rng.normal(size=target.shape)
    r32, t32 = recon.astype(np.float32), target.astype(np.float32)
    loss = train_vqvae.log_spectral_loss

    def both(f):  # 2D power spectrum, flattened
        return (np.abs(np.fft.rfft2(f)) ** 2).reshape(*f.shape[:2], -1)

    def rows(f):  # wall y: 1D power along x of every row, averaged over the rows (the height)
        return (np.abs(np.fft.rfft(f, axis=-1)) ** 2).mean(axis=-2)

    def columns(f):  # wall x: 1D power along y of every column, averaged over x
        return (np.abs(np.fft.rfft(f, axis=-2)) ** 2).mean(axis=-1)

    cases = [(("periodic", "periodic"), both), (("wall", "periodic"), rows), (("periodic", "wall"), columns)]
    for bc, transform in cases:
        expected = _log_spectral_reference(recon, target, transform)
        assert float(loss(r32, t32, bc)) == pytest.approx(expected, rel=1e-4), bc
        assert float(loss(t32, t32, bc)) == 0.0
    # nothing is transformed along a wall axis: the loss sees the rows' x-spectra whatever their order, where the
    # doubly periodic loss sees the shuffled rows as new structure in y
    shuffled = r32[:, :, rng.permutation(8)]
    wall, periodic = ("wall", "periodic"), ("periodic", "periodic")
    assert float(loss(shuffled, t32, wall)) == pytest.approx(float(loss(r32, t32, wall)))
    assert float(loss(shuffled, t32, periodic)) > 1.5 * float(loss(r32, t32, periodic))
    with pytest.raises(ValueError, match="needs a periodic axis"):
        loss(r32, t32, ("wall", "wall"))


def test_out_of_memory_is_one_line_exit_2(data, tmp_path, capsys, monkeypatch):
    import jax

    def too_big(*args, **kwargs):  # what XLA raises for an allocation it cannot make (here: --ch 1000000 on a CPU)
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 144000000000000 bytes.")

    monkeypatch.setattr(train_vqvae, "train", too_big)
    assert main(argv(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of device memory: an allocation of 1.34e+05 GiB failed" in err, err


def test_a_run_killed_before_its_first_checkpoint_starts_again_under_resume(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stats.json").write_text("{}")  # what a run killed during its first save leaves: no checkpoint.json
    (out / ".ckpt_00000004.eqx.k3x.tmp").write_bytes(b"partial")
    assert main(argv(data, out, "--resume", "--checkpoint_every", "4")) == 0
    assert "has no checkpoint yet (stopped before the first); starting it again" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 6
    assert not list(out.glob(".*"))  # the leftover temporary is gone
    # a folder with files that are not a training run's is still refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(argv(data, other, "--resume")) == 2
    assert "has no checkpoint.json and holds other files" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_existing_output_dir_is_refused_untouched(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(argv(data, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert main([*argv(data, out), "--resume", "--overwrite"]) == 2
    assert main([*argv(data, out), "--resume"]) == 2  # nothing to resume from
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_four_devices_give_the_loss_of_one_and_check_the_batch_size(data, straight, tmp_path):
    script = textwrap.dedent(
        f"""
        import jax
        from models.train_vqvae import TrainConfig, train
        assert jax.device_count() == 4
        kw = dict(data_path={data!r}, fields=("omega",), sample_stop=14, ch=8, num_groups=4, embed_dim=8,
                  **{STRAIGHT!r})
        try:
            train(TrainConfig(batch_size=6, **kw), {str(tmp_path / "bad")!r}, progress=False)
        except ValueError as err:
            print("BAD", err)
        train(TrainConfig(batch_size=4, **kw), {str(tmp_path / "four")!r}, progress=False, stop_after=3)
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BAD --batch_size=6 is not divisible by the 4 devices" in proc.stdout
    assert not (tmp_path / "bad").exists()
    one, four = records(straight[0])[:3], records(tmp_path / "four")
    assert len(four) == 3
    for a, b in zip(one, four, strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-3)
        assert a["usage"] == b["usage"]


@pytest.fixture(scope="module")
def straight_plain(data, tmp_path_factory):
    """``straight`` without the prefix loss (the reference of the two-process test)."""
    out = tmp_path_factory.mktemp("straight_plain") / "run"
    return train(tiny_config(data, **STRAIGHT, prefix_weight=0.0), out, progress=False)


def test_two_processes_under_jax_distributed_train_like_one_and_stop_together_on_sigterm(
    data, straight_plain, tmp_path, sigterm_process_0_of_two
):
    # 2 processes x 2 simulated CPU devices joined by jax.distributed through the CLI's explicit coordinator flags:
    # each process reads its rows of every batch, process 0 writes; the losses are those of one device at every
    # logged step. SIGTERM to process 0 alone once the step-5 checkpoint is written: process 1 stops with it (the
    # decision is broadcast at the --log_every steps, here every 2nd), both exit 143 at the same logged step, and the
    # checkpoint is of that step. Without the prefix loss: with it (weight 0.25) the runs part (relative loss
    # difference 1e-5 at step 4, 1e-2 at step 8, as from a near-tied code chosen differently under the sharded
    # reductions' float order); the prefix draws under sharding are covered by the 4-device test above.
    out = tmp_path / "multi"
    flags = ["--log_every", "2", "--checkpoint_every", "5", "--lr", "0.003", "--warmup_steps", "3"]
    flags += ["--restart_every", "5", "--codebook_size", "96", "--prefix_weight", "0", "--no_progress"]
    args = [sys.executable, "-m", "models.train_vqvae", *argv(data, out, *flags, steps=24)]

    def first_checkpoint_written(procs):  # at step 5; 19 steps remain
        deadline = time.time() + 180
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if (out / "checkpoint.json").exists():
                return
            time.sleep(0.01)

    last = sigterm_process_0_of_two(args, first_checkpoint_written)
    assert "stopped by SIGTERM at step" in last[0] and last[0] == last[1], last
    step = json.loads((out / "checkpoint.json").read_text())["step"]
    assert step % 2 == 0 and 6 <= step < 24 and f"at step {step} of 24" in last[0], (step, last)
    one, two = {r["step"]: r for r in records(straight_plain)}, records(out)
    assert [r["step"] for r in two] == list(range(2, step + 1, 2))
    for b in two:  # every logged step, the dead-code restart at 5 (and any at 10, 15, ...) included
        a = one[b["step"]]
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
        assert a["usage"] == b["usage"] and b["restarted"] == a["restarted"] + one[b["step"] - 1]["restarted"]


# Jitted once for the loss tests below: op by op, a first call of the tiny model compiles each of its hundreds of
# operations separately (about 13 s against 5 s for the whole loss on this CPU).
_loss = eqx.filter_jit(train_vqvae.loss_fn)
_prefixes = eqx.filter_jit(lambda model, batch: jax.vmap(model.prefix_reconstructions)(batch))


@pytest.fixture(scope="module")
def fixed_batch(data):
    from dataloaders import BatchLoader, GustDataset, compute_stats

    with GustDataset(data, ["omega"], sample_stop=14) as ds:
        with BatchLoader(ds, 8, normalize=compute_stats(ds), epochs=1) as loader:
            return next(iter(loader))


def test_prefix_loss_is_the_mse_of_a_random_coarse_prefix_decoded(data, fixed_batch):
    import jax
    import jax.numpy as jnp

    from models.models import make_model
    from models.train_vqvae import model_config

    model = make_model(model_config(tiny_config(data), 16, 16, "periodic", "periodic"), jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    base, m0 = _loss(model, fixed_batch, 0.0)
    total, m1 = _loss(model, fixed_batch, 0.0, 0.5, key)
    assert "prefix_mse" not in m0
    # by hand: sample b decodes its first k_b + 1 of the K = 4 scales, k_b drawn from {0, 1, 2} with the same key
    k = np.asarray(jax.random.randint(key, (8,), 0, 3))
    assert len(set(k)) > 1 and k.max() < 3
    prefixes = _prefixes(model, fixed_batch)  # K arrays (B, C, H, W)
    chosen = jnp.stack([prefixes[kb][b] for b, kb in enumerate(k)])
    expected = float(jnp.mean((chosen - fixed_batch) ** 2))
    assert float(m1["prefix_mse"]) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(float(base) + 0.5 * expected, rel=1e-5)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        _loss(model, fixed_batch, 0.0, 0.5)


def test_prefix_every_decodes_the_prefixes_of_every_nth_sample(data, fixed_batch):
    import jax
    import jax.numpy as jnp

    from models.models import make_model
    from models.train_vqvae import model_config

    model = make_model(model_config(tiny_config(data), 16, 16, "periodic", "periodic"), jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    prefixes = _prefixes(model, fixed_batch)  # K arrays (B, C, H, W), B = 8
    full = _loss(model, fixed_batch, 0.0, 0.5, key)[1]
    for every, rows in ((3, [0, 3, 6]), (8, [0])):
        total, m = _loss(model, fixed_batch, 0.0, 0.5, key, prefix_every=every)
        # by hand: samples 0, n, 2n, ... decode their first k + 1 scales, one draw per decoded sample from the key
        k = np.asarray(jax.random.randint(key, (len(rows),), 0, 3))
        chosen = jnp.stack([prefixes[kb][b] for b, kb in zip(rows, k, strict=True)])
        expected = float(jnp.mean((chosen - fixed_batch[np.array(rows)]) ** 2))
        assert float(m["prefix_mse"]) == pytest.approx(expected, rel=1e-5)
        assert float(m["prefix_mse"]) != pytest.approx(float(full["prefix_mse"]), rel=1e-3)  # not every sample
        # the rest of the loss does not depend on it
        assert float(total) == pytest.approx(
            float(full["loss"]) + 0.5 * (expected - float(full["prefix_mse"])), rel=1e-5
        )
    # 1 is every sample: the same draws and loss as without the argument
    assert float(_loss(model, fixed_batch, 0.0, 0.5, key, prefix_every=1)[0]) == float(full["loss"])


def test_prefix_loss_makes_the_error_fall_with_every_scale(data, fixed_batch):
    # Without the prefix term the decoder only sees full latents and every coarse prefix (k = 1..3 of 4) decodes to
    # worse than nothing (rel L2 > 1, the error of predicting zero); with it the error falls as scales are added
    # (issue 5), up to 0.01 between two scales that the 40 steps have not yet separated, and the prefixes of 2 and 3
    # scales carry information (rel L2 < 1).
    import jax
    import jax.numpy as jnp

    from models.models import make_model
    from models.train_vqvae import make_optimizer, make_train_step, model_config

    def prefix_errors(prefix_weight):
        cfg = tiny_config(data, batch_size=8, steps=40, lr=3e-3, prefix_weight=prefix_weight)
        model = make_model(model_config(cfg, 16, 16, "periodic", "periodic"), jax.random.PRNGKey(0))
        opt = make_optimizer(cfg, eqx.filter(model, eqx.is_inexact_array))
        state = opt.init(eqx.filter(model, eqx.is_inexact_array))
        step = make_train_step(opt, 0.0, prefix_weight=prefix_weight, restart_every=0)
        counts = jnp.zeros(32)
        for n in range(1, 41):
            model, state, counts, _ = step(model, state, counts, fixed_batch, jnp.asarray(n, jnp.int32))
        norm = jnp.sqrt(jnp.sum(fixed_batch**2))
        recs = jax.vmap(model.prefix_reconstructions)(fixed_batch)
        return np.array([float(jnp.sqrt(jnp.sum((r - fixed_batch) ** 2)) / norm) for r in recs])

    plain, with_prefix = prefix_errors(0.0), prefix_errors(1.0)
    assert np.all(plain[:3] > 1), f"plain prefix errors {plain.round(3)}"
    assert np.all(np.diff(with_prefix) < 0.01), f"prefix errors {with_prefix.round(3)} do not fall with k"
    assert np.all(with_prefix[1:3] < 1), (plain.round(3), with_prefix.round(3))


@pytest.mark.parametrize("log_every, caught_by", [("1", "(loss nan)"), ("6", "(non-finite weights)")])
def test_diverging_training_stops_with_exit_3_and_saves_no_nan_model(data, tmp_path, capsys, log_every, caught_by):
    """lr 1e30 makes the loss NaN by step 3: the run stops as a solver's blow-up does (exit 3, one line) and never
    writes a model or checkpoint with NaN weights (it used to exit 0 with a NaN model.eqx). Caught by the logged loss,
    or, between log lines, by the check before each save."""
    out = tmp_path / "run"
    assert main(argv(data, out, "--lr", "1e30", "--log_every", log_every, "--checkpoint_every", "1")) == 3
    err = capsys.readouterr().err.strip()
    found = re.search(r"training diverged by step (\d+) (\(.*?\)); .* keeps its checkpoint of step (\d+)", err)
    assert found and found[2] == caught_by and len(err.splitlines()) == 1, err
    assert int(found[3]) == int(found[1]) - 1 == json.loads((out / "checkpoint.json").read_text())["step"]
    model, _ = load(out / "model.eqx", out / "config.txt")  # the last finite save
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)


def test_resume_on_changed_data_is_refused(data, tmp_path, capsys):
    """The same --data_path now holding other data would renormalise the run under its feet: refused."""
    path = tmp_path / "data.h5"
    shutil.copy(data, path)
    train(tiny_config(str(path), steps=6), tmp_path / "run", progress=False, stop_after=3)
    with h5py.File(path, "r+") as f:
        f["fields/omega"][...] = 2 * f["fields/omega"][...]
    before = (tmp_path / "run" / "model.eqx").read_bytes()
    assert main(argv(str(path), tmp_path / "run", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume: the training data's statistics" in err and "has changed since the run began" in err, err
    assert (tmp_path / "run" / "model.eqx").read_bytes() == before


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_end_ratio():
    """lr(s) = lr·s/w for s ≤ w, then lr·(r + (1 − r)·(1 + cos(π (s − w)/(S − w)))/2), r = end_lr_ratio."""
    from models.train_vqvae import make_schedule

    config = TrainConfig("x", ("a",), steps=110, warmup_steps=10, lr=2e-3, end_lr_ratio=0.1)
    schedule = make_schedule(config)
    for s in (0, 5, 10, 35, 60, 85, 110):
        if s <= 10:
            want = 2e-3 * s / 10
        else:
            want = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (s - 10) / 100)))
        assert float(schedule(s)) == pytest.approx(want, rel=1e-6, abs=1e-12), s


def test_a_stopped_and_resumed_run_logs_what_the_straight_run_logs(data, tmp_path):
    """Logging at log_every and at the last step only: a stop_after (as a kill) must not add a record, nor split the
    restarted-codes tally, so the resumed metrics.jsonl equals the straight run's."""
    kw = dict(steps=6, log_every=4, restart_every=2, checkpoint_every=100)
    train(tiny_config(data, **kw), tmp_path / "straight", progress=False)
    train(tiny_config(data, **kw), tmp_path / "split", progress=False, stop_after=3)
    train(tiny_config(data, **kw), tmp_path / "split", progress=False, resume=True)
    assert [r["step"] for r in records(tmp_path / "straight")] == [4, 6]
    assert records(tmp_path / "split") == records(tmp_path / "straight")


def test_a_deadline_stops_the_run_with_a_checkpoint_that_resumes_as_the_straight_run(data, tmp_path):
    """A benchmark's time budget (``deadline``) stops training after the step in flight, as ``stop_after`` does: the
    model and a checkpoint are saved, and a resume reaches the straight run's parameters."""
    import time

    kw = dict(steps=6, log_every=2, checkpoint_every=100)
    train(tiny_config(data, **kw), tmp_path / "straight", progress=False)
    train(tiny_config(data, **kw), tmp_path / "late", progress=False, deadline=time.monotonic() + 3600)
    assert json.loads((tmp_path / "late" / "checkpoint.json").read_text())["step"] == 6
    train(tiny_config(data, **kw), tmp_path / "past", progress=False, deadline=time.monotonic() - 1)
    assert json.loads((tmp_path / "past" / "checkpoint.json").read_text())["step"] == 0
    assert train_vqvae.read_settings((tmp_path / "past" / "config.txt").read_text())["step"] == 0
    train(tiny_config(data, **kw), tmp_path / "past", progress=False, resume=True)
    for name in ("model.eqx", "ckpt_00000006.eqx"):
        assert (tmp_path / "past" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert records(tmp_path / "past") == records(tmp_path / "straight")
