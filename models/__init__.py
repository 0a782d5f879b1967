"""Multi-scale VQ-VAE, training, tokenizer and reconstruction analysis (issues 5-7; not implemented yet)."""
