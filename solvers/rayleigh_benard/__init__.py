"""2D Rayleigh–Bénard convection between no-slip walls: Fourier × Chebyshev, RK222 (see ``rb_core.py``)."""
