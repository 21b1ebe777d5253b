"""An endless, seeded stream of training batches whose position can be saved and restored exactly.

Nothing here draws from the global torch RNG, which training's z, flips and penalties draw from: a
``DataLoader`` draws its workers' base seed when its iterator is built (at step 1 of a fresh run, but
after the restored RNG in a resumed one), so every loader here has a private, seeded generator.
"""

from __future__ import annotations

import signal
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gn_plugin.data.base import ImageDataset, TensorImageDataset, worker_error
from gn_plugin.errors import GnPluginError
from gn_plugin.training.stopping import STOP_SIGNALS


def epoch_order(size: int, seed: int, epoch: int) -> Tensor:
    """The permutation of dataset indices for ``epoch``, seeded by ``(seed, epoch)`` (on the CPU)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def index_stream(size: int, seed: int, position: int) -> Iterator[int]:
    """Dataset indices from ``position`` on: epoch ``e`` is :func:`epoch_order` ``(size, seed, e)``."""
    epoch, offset = divmod(position, size)
    while True:
        yield from epoch_order(size, seed, epoch)[offset:].tolist()
        epoch, offset = epoch + 1, 0


def batch_indices(size: int, batch_size: int, seed: int, position: int, shard: slice) -> Iterator[list[int]]:
    """This process's share of each global batch of indices."""
    stream = index_stream(size, seed, position)
    while True:
        yield [next(stream) for _ in range(batch_size)][shard]


class DeviceBatchIndices:
    """The batches of :func:`batch_indices` as index tensors on ``device``, made without a host sync.

    Each epoch's permutation is copied to the device once (asynchronously from pinned memory on
    CUDA); a batch is then a slice of it, or two slices where it straddles epochs.
    """

    def __init__(self, size: int, batch_size: int, seed: int, position: int, shard: slice, device: torch.device) -> None:
        self.size, self.batch_size, self.seed, self.shard, self.device = size, batch_size, seed, shard, device
        self.epoch, self.offset = divmod(position, size)
        self.order = self._order()

    def _order(self) -> Tensor:
        order = epoch_order(self.size, self.seed, self.epoch)
        if self.device.type == "cuda":
            order = order.pin_memory()
        return order.to(self.device, non_blocking=True)

    def __next__(self) -> Tensor:
        parts, missing = [], self.batch_size
        while missing:
            take = min(missing, self.size - self.offset)
            parts.append(self.order[self.offset : self.offset + take])
            missing, self.offset = missing - take, self.offset + take
            if self.offset == self.size:
                self.epoch, self.offset = self.epoch + 1, 0
                self.order = self._order()
        return (parts[0] if len(parts) == 1 else torch.cat(parts))[self.shard]

    def __iter__(self) -> "DeviceBatchIndices":
        return self


def decoded_bytes(dataset: ImageDataset) -> int:
    """Bytes of ``dataset`` decoded: float32 images ``C × R × R`` and an int64 label per item."""
    return len(dataset) * (dataset.channels * dataset.resolution**2 * 4 + 8)


def keeps_on_device(choice: str, dataset: ImageDataset, device: torch.device, limit_mib: int) -> bool:
    """Whether :class:`BatchStream` holds ``dataset`` decoded on ``device`` (config ``data.on_device``).

    ``on`` and ``off`` decide; ``auto`` keeps it on a CUDA device when :func:`decoded_bytes` is at
    most ``limit_mib`` MiB. A :class:`TensorImageDataset` is on the device whatever the choice.
    """
    if isinstance(dataset, TensorImageDataset):
        return True
    if choice == "auto":
        return device.type == "cuda" and decoded_bytes(dataset) <= limit_mib * 2**20
    return choice == "on"


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: leave the stop signals (SIGINT, SIGTERM, SIGUSR2) to the training process, which stops cleanly.

    Ctrl-C reaches every process of the terminal's group, and Slurm signals every process of a job
    step; a worker that died of it would fail the next batch before the training process could
    write its checkpoint.
    """
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def decode_all(
    dataset: ImageDataset, num_workers: int, device: torch.device, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Every item of ``dataset`` in index order: images [N, C, H, W] float32 and labels [N] int64 on ``device``.

    A ``DataLoader`` with ``num_workers`` workers decodes them in order, batch by batch, straight
    into the device tensors (the host never holds the whole data set).
    """
    size = len(dataset)
    shape = (size, dataset.channels, dataset.resolution, dataset.resolution)  # the contract's, as decoded_bytes
    images = torch.empty(shape, dtype=torch.float32, device=device)
    labels = torch.empty(size, dtype=torch.int64, device=device)
    start = 0
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers,
        generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_stop_signals,
    )
    try:
        for batch_images, batch_labels in loader:
            stop = start + len(batch_labels)
            images[start:stop], labels[start:stop] = batch_images, batch_labels
            start = stop
    except GnPluginError as exc:
        raise worker_error(exc) from None
    return images, labels


class _ShardSampler(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, seed: int, position: int, shard: slice) -> None:
        self.arguments = (size, batch_size, seed, position, shard)

    def __iter__(self) -> Iterator[list[int]]:
        return batch_indices(*self.arguments)


class BatchStream:
    """Batches of ``(images, labels)`` on ``device``: this process's ``shard`` of each global batch.

    Every process walks the same seeded index stream, so N processes together see exactly the
    batches one process would.

    In-memory data sets (:class:`TensorImageDataset`) are moved to the device once and indexed there
    with device-side indices (no host sync per batch). Others are, with ``on_device``, decoded once by
    :func:`decode_all` and then indexed the same way; without it they go through a ``DataLoader``
    whose workers prefetch from the same index stream. Both give the same batches.
    ``position`` counts the samples consumed, which is all a checkpoint needs to resume exactly.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        device: torch.device,
        num_workers: int = 2,
        shard: slice = slice(None),
        position: int = 0,
        on_device: bool = False,
    ) -> None:
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.num_workers, self.shard, self.position = num_workers, shard, position
        self._tensors: tuple[Tensor, Tensor] | None = None
        self._indices: DeviceBatchIndices | None = None
        self._loader: Iterator | None = None
        if isinstance(dataset, TensorImageDataset):
            self._tensors = (dataset.images.to(device), dataset.labels.to(device))
        elif on_device:
            self._tensors = decode_all(dataset, num_workers, device)

    @property
    def on_device(self) -> bool:
        """Whether the data set is held decoded on the device (else a ``DataLoader`` reads it)."""
        return self._tensors is not None

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._tensors is not None:
            if self._indices is None:
                self._indices = DeviceBatchIndices(
                    len(self.dataset), self.batch_size, self.seed, self.position, self.shard, self.device
                )
            index = next(self._indices)
            images, labels = self._tensors[0].index_select(0, index), self._tensors[1].index_select(0, index)
        else:
            if self._loader is None:
                sampler = _ShardSampler(len(self.dataset), self.batch_size, self.seed, self.position, self.shard)
                loader = DataLoader(
                    self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0,
                    generator=torch.Generator().manual_seed(self.seed), worker_init_fn=ignore_stop_signals,
                )
                self._loader = iter(loader)
            try:
                images, labels = next(self._loader)
            except GnPluginError as exc:
                self.close()  # its workers ignore SIGTERM, so they must be stopped here, not left to exit
                raise worker_error(exc) from None
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        self.position += self.batch_size
        return images, labels

    def __iter__(self) -> "BatchStream":
        return self

    def close(self) -> None:
        """Stop the DataLoader's worker processes, if any (the next batch starts new ones)."""
        if self._loader is not None:
            shutdown = getattr(self._loader, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader = None
