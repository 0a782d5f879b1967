"""Shared fixtures. Physics-order tests run in float64 inside ``jax.enable_x64``; nothing flips the
global flag, so float32 code paths are exercised as users get them."""

import jax
import pytest


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield
