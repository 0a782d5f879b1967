"""benchmarks.profile_step: the GPU trace summary, on a synthetic Perfetto trace shaped like the H200's.

The GPU path cannot run in CI, so its bookkeeping is checked here on a hand-made trace whose answer is known:
which module is the step program, how its kernels are split into kinds, and how busy the device was in its loop.
"""

import gzip
import json

import pytest

from benchmarks.profile_step import kind_of, summarize


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("void regular_fft<1024u, EPT<16u>, 8u> fft.19", "fft"),
        ("void cutlass::Kernel2<cutlass_80_tensorop_c1688gemm_32x64_16x4_nn_align1>", "matmul/conv"),
        ("MemcpyD2D", "memcpy"),
        ("loop_add_multiply_fusion", "elementwise/reduce"),
        ("input_transpose_fusion_3", "copy/transpose"),
        ("something_else", "other"),
    ],
)
def test_kernel_names_map_to_their_kind(name, kind):
    assert kind_of(name) == kind


def _event(ts, dur, name, module, pid=1):
    return {"ph": "X", "pid": pid, "tid": 7, "ts": ts, "dur": dur, "name": name, "args": {"hlo_module": module}}


def test_summary_keeps_set_up_waits_out_of_the_step_split(tmp_path):
    # a set-up copy that "lasts" 1 s (a queued wait, as seen on the H200) must not count as step time; the step
    # program (the module with the most events) runs 10 steps of an FFT (3 µs) and a fusion (1 µs), 10 µs apart
    step = "jit_chunk_one"
    events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
    events += [{"ph": "M", "pid": 9, "name": "process_name", "args": {"name": "/host:CPU"}}]
    events.append(_event(0.0, 1e6, "MemcpyD2D", "jit_convert_element_type"))
    for i in range(10):
        t0 = 2e6 + 10.0 * i
        events.append(_event(t0, 3.0, "void regular_fft_r2c<768u>", step))
        events.append(_event(t0 + 3.0, 1.0, "loop_add_fusion", step))
    events.append(_event(2e6, 5.0, "host work", "", pid=9))  # host events are not device events
    folder = tmp_path / "plugins" / "profile" / "run"
    folder.mkdir(parents=True)
    with gzip.open(folder / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)

    res = summarize(tmp_path, wall_s=2.5, steps=10)
    assert res["source"] == "accelerator" and res["step_module"] == step
    assert res["kind_ms_per_step"]["fft"] == pytest.approx(3e-3)
    assert res["kind_ms_per_step"]["elementwise/reduce"] == pytest.approx(1e-3)
    assert res["kind_ms_per_step"]["memcpy"] == 0.0  # the set-up wait belongs to another module
    assert res["kind_share"]["fft"] == pytest.approx(0.75)
    # loop: first step event at 2e6 µs, last ends at 2e6 + 94 µs; busy 4 µs of every 10
    assert res["loop_ms_per_step"] == pytest.approx(94e-3 / 10)
    assert res["busy_fraction_loop"] == pytest.approx(40 / 94)
    assert res["other_modules_ms"] == pytest.approx(1e3)


def test_profile_times_two_lengths_untraced_then_traces_one(tmp_path, monkeypatch):
    # the marginal cost per step comes from two untraced runs (fixed costs cancel); the trace is a real one, taken with
    # the Python tracer off, and its step program is found
    import jax
    import jax.numpy as jnp

    from benchmarks import profile_step

    @jax.jit
    def fft_step(x):
        return jnp.fft.fft(x) * 0.5

    calls = []

    def make_run(units):
        def run():
            calls.append(units)
            x = jnp.ones(256, jnp.complex64)
            for _ in range(4 * units):
                x = fft_step(x)
            jax.block_until_ready(x)

        run.units = units
        return run

    real = profile_step._timed
    monkeypatch.setattr(profile_step, "_timed", lambda run: real(run) * 0 + 2.0 + 0.3 * run.units)
    res = profile_step.profile(make_run, 3, 5, tmp_path / "trace")
    assert calls == [3, 3, 9, 3]  # compile, untraced at the length and three times it, traced
    assert res["untraced_ms_per_step"] == pytest.approx(1e3 * 1.8 / 30)  # (4.7 s − 2.9 s) / 30 more steps
    assert res["wall_s"] == pytest.approx(2.9) and res["steps"] == 15
    assert res["source"] == "cpu" and res["step_module"] == "jit_fft_step", res["step_module"]
    assert profile_step.trace_options().python_tracer_level == 0


def test_copies_at_gather_runs_the_driver_as_before_and_restores_it():
    # the py2d profile's before/after: inside, a dispatched chunk's outputs get no queued host copy (as before the
    # driver queued them); outside, the driver's own dispatch is back
    import types

    from benchmarks import profile_step
    from solvers.common import driver

    class Leaf:
        copies = 0

        def copy_to_host_async(self):
            self.copies += 1

    out = Leaf()
    sim = types.SimpleNamespace(chunk=lambda state: (None, {"omega": out}, Leaf(), Leaf()))
    queued = driver._dispatch
    with profile_step.copies_at_gather():
        driver._dispatch(sim, None)
        assert out.copies == 0
    assert driver._dispatch is queued
    driver._dispatch(sim, None)
    assert out.copies == 1
