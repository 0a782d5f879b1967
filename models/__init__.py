"""Multi-scale VQ-VAE for Gust fields (issue 5): `models.models` holds the Equinox encoder/decoder, the VAR-style
multi-scale residual quantiser, the frozen `VQVAEConfig` and the `save`/`load` checkpoint pair;
`models.train_vqvae` is the training CLI (`python -m models.train_vqvae --help`). Tokenizer and reconstruction
analysis are later issues."""
