"""2D Rayleigh–Bénard convection between no-slip walls (issue 3; not implemented yet)."""
