"""Shuffled, resumable, prefetching batches of a `GustDataset` as JAX arrays.

Order. Epoch e visits the dataset's items in the order `np.random.default_rng([seed, e]).permutation(n)`
(`arange(n)` without shuffling), cut into consecutive batches of `batch_size`; with `drop_remainder` the last
partial batch of each epoch is dropped (so a different tail each epoch). The order is a pure function of
(seed, epoch, position), which is what makes resuming exact: `state()` returns {seed, epoch, position, ...} of the
next batch the consumer will receive (not of what the producer has prefetched), and a loader built from it with
`BatchLoader.from_state(dataset, state)` yields exactly the batches an uninterrupted loader would have yielded.
Within a batch, rows keep the permutation order; the dataset reads the files at the sorted, unique sample
indices and scatters the rows back, so the order costs nothing on disk.

Prefetch. A daemon thread keeps batches b + 1, b + 2, ... coming (`prefetch` of them queued) while the consumer
works on batch b. It has `workers` reader threads build them, several batches at once, and queues them in order;
each batch is read into a freshly allocated host buffer, normalised in place, and handed to `jax.device_put`.
(One reader measured 5.1 GB/s on the H200 machine, short of a tiny model's appetite: README, GPU figures; on
this 2-core CPU machine more readers gave no measurable gain, so the default stays 1.)
A buffer is never reused after that hand-off: on the CPU backend (and for host-pinned memory) `device_put` may
keep using the numpy memory instead of copying it, so overwriting it would change an array the consumer already
holds. With `pinned=True` the batch goes through page-locked host memory (JAX's "pinned_host" memory kind) on its
way to the devices, one more host copy for a transfer that can overlap the devices' work (an experiment for GPUs).
An exception in the thread is re-raised by the consumer's next `next()`.
`close()` (or leaving a `with` block, or garbage collection) stops and joins the thread.

Devices. `sharding=batch_sharding()` splits the batch axis over all devices (a 1-D mesh, axis "batch"); the
batch size must be a multiple of the number of devices. Several processes (after `jax.distributed.initialize()`):
every process builds the same loader (same files, seed and batch size, so the same permutation); each reads only
the rows of the global batch that belong to its own devices and the global array is assembled with
`jax.make_array_from_process_local_data`. Tested: one process, 4 simulated devices, and 2 processes x 2 simulated
CPU devices joined by `jax.distributed` (tests/test_dataloaders.py).
"""

from __future__ import annotations

import atexit
import collections
import queue
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .dataset import GustDataset
from .stats import FieldStats

__all__ = ["BatchLoader", "batch_sharding"]

_STATE_KEYS = ("seed", "epoch", "position", "batch_size", "n_items", "shuffle", "drop_remainder")


def batch_sharding(devices: list | None = None, axis_name: str = "batch") -> NamedSharding:
    """Split axis 0 (the batch) over `devices` (default: all devices of all processes) on a 1-D mesh."""
    devices = jax.devices() if devices is None else list(devices)
    return NamedSharding(Mesh(np.array(devices), (axis_name,)), PartitionSpec(axis_name))


def _batch_parts(sharding: jax.sharding.Sharding, item_shape: tuple[int, ...]) -> int:
    """Into how many pieces `sharding` cuts axis 0 (a divisor of its device count)."""
    n_dev = len(sharding.device_set)
    try:
        shard = sharding.shard_shape((n_dev, *item_shape))
    except ValueError as exc:
        raise ValueError(f"sharding cannot split a batch of items shaped {item_shape}: {exc}") from None
    return n_dev // shard[0]


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the producer thread needs (it holds no reference to the loader, so the loader can be freed)."""

    dataset: GustDataset
    batch_size: int
    seed: int
    shuffle: bool
    drop_remainder: bool
    epochs: int | None
    stats: FieldStats | None
    sharding: jax.sharding.Sharding | None
    pinned: bool

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def after(self, epoch: int, position: int) -> tuple[int, int]:
        """(epoch, position) of the batch that follows batch ``position`` of ``epoch``."""
        position += 1
        return (epoch + 1, 0) if position == self.batches_per_epoch else (epoch, position)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def batch(self, epoch: int, position: int) -> jax.Array:
        idx = self.order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        global_shape = (idx.size, *self.dataset.item_shape)
        multi = self.sharding is not None and jax.process_count() > 1
        if multi:  # this process's rows only, ascending, as make_array_from_process_local_data maps them onto its
            # devices (they need not be contiguous: a device order may alternate between processes)
            rows = self.sharding.addressable_devices_indices_map(global_shape).values()
            idx = idx[np.unique(np.concatenate([np.arange(idx.size)[r[0]] for r in rows]))]
        x = self.dataset.read_batch(idx)  # a fresh buffer every time: never reused once handed to device_put
        if self.stats is not None:
            self.stats.normalize_(x)
        if not self.pinned:
            if multi:
                return jax.make_array_from_process_local_data(self.sharding, x, global_shape)
            return jax.device_put(x, self.sharding)
        target = self.sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        staging = target.with_memory_kind("pinned_host")
        if multi:
            staged = jax.make_array_from_process_local_data(staging, x, global_shape)
        else:
            staged = jax.device_put(x, staging)
        return jax.device_put(staged, target)  # page-locked source: a DMA that needs no host copy of its own


def _put(q: queue.Queue, stop: threading.Event, item: tuple) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _positions(plan: _Plan, epoch: int, position: int) -> Iterator[tuple[int, int]]:
    """(epoch, position) of every batch from the given one to the end (endless when ``plan.epochs`` is None)."""
    while plan.epochs is None or epoch < plan.epochs:
        yield epoch, position
        epoch, position = plan.after(epoch, position)


def _produce(plan: _Plan, epoch: int, position: int, q: queue.Queue, stop: threading.Event, workers: int) -> None:
    """Read batches with ``workers`` reader threads (each builds whole batches) and queue them in order."""
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="gust-batch-reader") as pool:
            todo = _positions(plan, epoch, position)
            pending: collections.deque = collections.deque()

            def fill() -> None:
                while len(pending) < workers and not stop.is_set():
                    nxt = next(todo, None)
                    if nxt is None:
                        return
                    pending.append((nxt, pool.submit(plan.batch, *nxt)))

            fill()
            while pending:
                (e, pos), future = pending.popleft()
                batch = future.result()
                fill()
                if not _put(q, stop, ("batch", batch, e, pos)):
                    return
        _put(q, stop, ("end",))
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(q, stop, ("error", exc))


class BatchLoader:
    """Iterator over batches (B, C, H, W) (or (B, T, C, H, W) for windowed datasets) as float32 `jax.Array`s.

    Args:
        dataset: the `GustDataset` to draw items from.
        batch_size: items per batch (B); a multiple of the devices the `sharding` splits the batch over.
        seed: permutation seed; epoch e uses `np.random.default_rng([seed, e])`.
        shuffle: permute the items every epoch (False: dataset order).
        drop_remainder: drop each epoch's last partial batch (True) or yield it smaller (False).
        epochs: stop after this many epochs (None: never stop).
        normalize: `FieldStats` for the dataset's fields; batches become (x - mean) / std per channel.
        sharding: where batches go: None (default device), a `jax.sharding.Sharding`, e.g. `batch_sharding()`.
        prefetch: batches queued ahead of the consumer (>= 1).
        workers: reader threads, each reading and transferring whole batches, delivered in order (>= 1; default 1).
        pinned: stage each batch in page-locked host memory (JAX's "pinned_host" memory kind) before the transfer to
            the devices, so that the transfer is a DMA that can overlap the devices' work (default False: numpy
            memory, which the runtime stages itself). An experiment for the GPU: see README, "Dataloaders".
        state: a dict from `state()` to continue from (see `from_state`).
    """

    def __init__(
        self,
        dataset: GustDataset,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        epochs: int | None = None,
        normalize: FieldStats | None = None,
        sharding: jax.sharding.Sharding | None = None,
        prefetch: int = 2,
        workers: int = 1,
        pinned: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        self._stop: threading.Event | None = None  # set first: __del__ runs even if validation fails
        self._thread: threading.Thread | None = None
        if not isinstance(dataset, GustDataset):
            raise TypeError(f"dataset must be a GustDataset, got {type(dataset).__name__}")
        checks = (("batch_size", batch_size, 1), ("prefetch", prefetch, 1), ("workers", workers, 1), ("seed", seed, 0))
        for name, value, minimum in checks:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1):
            raise ValueError(f"epochs must be None (endless) or an integer >= 1, got {epochs!r}")
        n = len(dataset)
        if drop_remainder and batch_size > n:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {n} items of the dataset, so drop_remainder=True leaves "
                f"no batch; use batch_size <= {n} or drop_remainder=False"
            )
        if normalize is not None:
            if not isinstance(normalize, FieldStats):
                raise TypeError(f"normalize must be FieldStats or None, got {type(normalize).__name__}")
            normalize.check_fields(dataset.fields)
        if sharding is not None:
            if not isinstance(sharding, jax.sharding.Sharding):
                raise TypeError(f"sharding must be a jax.sharding.Sharding or None, got {type(sharding).__name__}")
            parts = _batch_parts(sharding, dataset.item_shape)
            if batch_size % parts:
                raise ValueError(
                    f"batch_size={batch_size} is not a multiple of the {parts} devices the sharding splits the "
                    f"batch over; use a multiple of {parts}"
                )
            last = n % batch_size
            if not drop_remainder and last % parts:
                raise ValueError(
                    f"the last batch of each epoch would hold {last} items, not a multiple of the {parts} devices; "
                    "use drop_remainder=True"
                    + (
                        f" or a batch_size dividing {n}"
                        if n % parts == 0
                        else f" ({n} items split over {parts} devices)"
                    )
                )
        if not isinstance(pinned, bool):
            raise TypeError(f"pinned must be True or False, got {pinned!r}")
        if pinned:
            devices = sharding.addressable_devices if sharding is not None else jax.local_devices()[:1]
            kinds = {m.kind for m in next(iter(devices)).addressable_memories()}
            if "pinned_host" not in kinds:
                raise ValueError(
                    f"pinned=True needs the 'pinned_host' memory kind, which this backend's devices do not offer "
                    f"(they offer {', '.join(sorted(kinds))}); use pinned=False"
                )
        self._plan = _Plan(
            dataset,
            int(batch_size),
            int(seed),
            bool(shuffle),
            bool(drop_remainder),
            epochs,
            normalize,
            sharding,
            pinned,
        )
        self.prefetch = int(prefetch)
        self.workers = int(workers)
        self._epoch, self._position = 0, 0
        self._queue: queue.Queue | None = None
        if state is not None:
            self.restore(state)

    # --- order and state ----------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self._plan.batch_size

    @property
    def seed(self) -> int:
        return self._plan.seed

    @property
    def dataset(self) -> GustDataset:
        return self._plan.dataset

    @property
    def batches_per_epoch(self) -> int:
        return self._plan.batches_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The item order of `epoch` (a permutation of range(len(dataset)))."""
        return self._plan.order(epoch)

    def batch_indices(self, epoch: int, position: int) -> np.ndarray:
        """Dataset items of batch `position` of `epoch`, in the order they appear in the batch."""
        return self._plan.order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]

    def state(self) -> dict[str, Any]:
        """Where the consumer stands: a small JSON-serialisable dict; the next batch is (epoch, position)."""
        p = self._plan
        return {
            "seed": p.seed,
            "epoch": self._epoch,
            "position": self._position,
            "batch_size": p.batch_size,
            "n_items": len(p.dataset),
            "shuffle": p.shuffle,
            "drop_remainder": p.drop_remainder,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state` (from `state()` of a loader on the same data with the same settings)."""
        if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
            raise ValueError(f"state must be a dict from BatchLoader.state() with keys {', '.join(_STATE_KEYS)}")
        mine = self.state()
        for key in ("seed", "batch_size", "n_items", "shuffle", "drop_remainder"):
            if state[key] != mine[key]:
                raise ValueError(
                    f"state has {key}={state[key]!r} but this loader has {key}={mine[key]!r}; "
                    "resume with the same dataset selection and loader settings"
                )
        epoch, position = state["epoch"], state["position"]
        if not (isinstance(epoch, (int, np.integer)) and epoch >= 0 and isinstance(position, (int, np.integer))):
            raise ValueError(f"state epoch={epoch!r}, position={position!r} must be integers >= 0")
        if not 0 <= position < self.batches_per_epoch:
            raise ValueError(f"state position={position} not in [0, {self.batches_per_epoch}) batches per epoch")
        self.close()
        self._epoch, self._position = int(epoch), int(position)

    @classmethod
    def from_state(cls, dataset: GustDataset, state: dict[str, Any], **kwargs: Any) -> BatchLoader:
        """A loader continuing from `state`; seed, batch size, shuffle and drop_remainder come from the state."""
        if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
            raise ValueError(f"state must be a dict from BatchLoader.state() with keys {', '.join(_STATE_KEYS)}")
        for key in ("seed", "batch_size", "shuffle", "drop_remainder"):
            if key in kwargs:
                raise ValueError(f"{key} comes from the state; do not pass it to from_state")
        return cls(
            dataset,
            state["batch_size"],
            seed=state["seed"],
            shuffle=state["shuffle"],
            drop_remainder=state["drop_remainder"],
            state=state,
            **kwargs,
        )

    # --- iteration ----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[jax.Array]:
        return self

    def _finished(self) -> bool:
        return self._plan.epochs is not None and self._epoch >= self._plan.epochs

    def __next__(self) -> jax.Array:
        if self._thread is None:
            if self._finished():
                raise StopIteration
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_produce,
                args=(self._plan, self._epoch, self._position, self._queue, self._stop, self.workers),
                name="gust-batch-loader",
                daemon=True,
            )
            self._thread.start()
            _RUNNING.add(self)
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("the loader's producer thread ended without a batch or an error") from None
        if item[0] == "end":
            self.close()
            raise StopIteration
        if item[0] == "error":
            self.close()
            raise item[1]
        _, batch, epoch, position = item
        self._epoch, self._position = self._plan.after(epoch, position)
        return batch

    def close(self) -> None:
        """Stop and join the producer thread (prefetched batches are discarded; `state()` is unaffected)."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._thread, self._stop, self._queue = None, None, None
        _RUNNING.discard(self)

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()


# Loaders whose producer thread runs. A loader left open when the interpreter exits (e.g. inside a generator that an
# exception abandoned) would keep reading and calling JAX while the interpreter and XLA shut down under it: they are
# stopped and joined first. (The CLIs go further after Ctrl-C: see solvers.common.cli.exit_process.)
_RUNNING: weakref.WeakSet[BatchLoader] = weakref.WeakSet()


@atexit.register
def close_running_loaders() -> None:
    """Stop and join every running loader's threads (registered with ``atexit``; harmless to call at any time)."""
    for loader in list(_RUNNING):
        loader.close()
