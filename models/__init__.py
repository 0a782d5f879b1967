"""Multi-scale VQ-VAE for Gust fields (issue 5): `models.models` holds the Equinox encoder/decoder, the VAR-style
multi-scale residual quantiser, the frozen `VQVAEConfig` and the `save`/`load` checkpoint pair. Training CLI,
tokenizer and reconstruction analysis are later issues."""
