"""From solver to tokens, as a user runs it (issue 8): the README's four commands on tiny sizes, through the CLIs.

generate (py2d training ensemble + a held-out ensemble of another seed; a Rayleigh–Bénard ensemble) → train the
VQ-VAE → tokenize the training split and the held-out split with the training vocabulary → analyse the held-out
reconstruction. Each step reads only what the previous one wrote, so the formats and provenance chain are checked
end to end; every step's own behaviour is tested in its own file.
"""

import json
from pathlib import Path

import numpy as np

from models import analyze_reconstruction, tokenizer, train_vqvae
from models.inference import decode_batch, load_trained
from solvers.py2d_turbulence import run_solver as py2d_cli
from solvers.rayleigh_benard import run_solver as rb_cli

PY2D = ["--NX", "16", "--Re", "200", "--dt", "0.01", "--t_total", "0.4", "--save_interval", "0.05", "--no_progress"]
RB = [
    "--rayleigh", "2e4", "--nx", "32", "--nz", "16", "--dt", "0.05", "--t_total", "1.0", "--save_interval", "0.25",
    "--ic_amplitude", "0.3", "--no_progress",
]  # fmt: skip
TINY_MODEL = ["--ch", "8", "--num_groups", "4", "--embed_dim", "8", "--codebook_size", "32", "--no_progress"]


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_solver_to_tokens_chain(tmp_path, capsys):
    # 1. generate: a training ensemble and a held-out ensemble with another seed
    assert py2d_cli.main(["--output_dir", str(tmp_path / "train"), "--n_trajectories", "2", *PY2D]) == 0
    train_h5 = last_line(capsys)
    assert py2d_cli.main(["--output_dir", str(tmp_path / "test"), "--seed", "7", *PY2D]) == 0
    test_h5 = last_line(capsys)
    assert rb_cli.main(["--output_dir", str(tmp_path / "rb"), "--n_trajectories", "2", *RB]) == 0
    rb_h5 = last_line(capsys)

    # 2. train (py2d omega; and RB buoyancy on a 16×32 wall-bounded grid)
    run = tmp_path / "run"
    common = ["--steps", "6", "--batch_size", "4", "--warmup_steps", "2", *TINY_MODEL]
    assert train_vqvae.main(["--data_path", train_h5, "--fields", "omega", "--output_dir", str(run), *common]) == 0
    rb_run = tmp_path / "rb_run"
    assert train_vqvae.main(["--data_path", rb_h5, "--fields", "buoyancy", "--output_dir", str(rb_run), *common]) == 0
    assert 'bc_y = "wall"' in (rb_run / "config.txt").read_text()

    # 3. tokenize the training split, then the held-out split with its vocabulary
    ckpt = ["--checkpoint", str(run / "model.eqx"), "--config_path", str(run / "config.txt"), "--no_progress"]
    tok_train, tok_test = tmp_path / "tokens_train.npz", tmp_path / "tokens_test.npz"
    assert tokenizer.main(["save", *ckpt, "--data_path", train_h5, "--output", str(tok_train)]) == 0
    capsys.readouterr()
    assert tokenizer.main(["info", *ckpt, "--data_path", test_h5, "--vocab_from", str(tok_train)]) == 0
    info = capsys.readouterr().out
    assert "out-of-vocabulary" in info and "compression ratio" in info
    save_test = ["save", *ckpt, "--data_path", test_h5, "--output", str(tok_test), "--vocab_from", str(tok_train)]
    assert tokenizer.main(save_test) == 0
    train_tokens, test_tokens = tokenizer.load_tokenized_data(tok_train), tokenizer.load_tokenized_data(tok_test)
    assert train_tokens.tokens.shape == (18, train_tokens.vocab.seq_len)
    assert test_tokens.tokens.shape == (9, train_tokens.vocab.seq_len)
    assert np.array_equal(test_tokens.vocab.counts, train_tokens.vocab.counts)  # the training vocabulary
    prov = test_tokens.provenance
    assert prov["data_path"] == str(Path(test_h5).resolve()) and prov["vocab_from"] == str(tok_train.resolve())
    # the held-out tokens decode to the model's reconstruction of the held-out fields
    trained = load_trained(run / "model.eqx", run / "config.txt")
    decoded = tokenizer.decode_tokens(trained, test_tokens.tokens, test_tokens.vocab)
    assert decoded.shape == (9, 1, 16, 16) and np.all(np.isfinite(decoded))
    idx = [np.asarray(i) for i in tokenizer.tokens_to_indices(test_tokens.tokens, test_tokens.vocab)]
    direct = trained.stats.denormalize(np.asarray(decode_batch(trained.model, idx)))
    assert np.array_equal(decoded, direct)
    rb_ckpt = ["--checkpoint", str(rb_run / "model.eqx"), "--config_path", str(rb_run / "config.txt")]
    assert tokenizer.main(["info", *rb_ckpt, "--data_path", rb_h5, "--no_progress"]) == 0

    # 4. analyse the held-out reconstruction
    out = tmp_path / "analysis"
    assert analyze_reconstruction.main([*ckpt, "--data_path", test_h5, "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 9 and metrics["spectrum_kind"] == "periodic"
    assert metrics["checkpoint"]["checkpoint_sha256"] == test_tokens.provenance["checkpoint_sha256"]
    assert {"spectra.png", "histograms.png", "panels_omega.png", "metrics.json"} <= {p.name for p in out.iterdir()}
    rb_out = tmp_path / "rb_analysis"
    rb_args = [*rb_ckpt, "--data_path", rb_h5, "--output_dir", str(rb_out), "--no_progress"]
    assert analyze_reconstruction.main(rb_args) == 0
    assert json.loads((rb_out / "metrics.json").read_text())["spectrum_kind"] == "wall"
