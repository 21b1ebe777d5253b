"""An endless, seeded stream of training batches whose position can be saved and restored exactly."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gn_plugin.data.base import TensorImageDataset


def index_stream(size: int, seed: int, position: int) -> Iterator[int]:
    """Dataset indices from ``position`` on: epoch ``e`` is a permutation seeded by ``(seed, e)``."""
    epoch, offset = divmod(position, size)
    while True:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        yield from torch.randperm(size, generator=generator)[offset:].tolist()
        epoch, offset = epoch + 1, 0


def batch_indices(size: int, batch_size: int, seed: int, position: int, shard: slice) -> Iterator[list[int]]:
    """This process's share of each global batch of indices."""
    stream = index_stream(size, seed, position)
    while True:
        yield [next(stream) for _ in range(batch_size)][shard]


class _ShardSampler(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, seed: int, position: int, shard: slice) -> None:
        self.arguments = (size, batch_size, seed, position, shard)

    def __iter__(self) -> Iterator[list[int]]:
        return batch_indices(*self.arguments)


class BatchStream:
    """Batches of ``(images, labels)`` on ``device``: this process's ``shard`` of each global batch.

    Every process walks the same seeded index stream, so N processes together see exactly the
    batches one process would.

    Small in-memory data sets (:class:`TensorImageDataset`) are moved to the device once and indexed
    there; others go through a ``DataLoader`` whose workers prefetch from the same index stream.
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
    ) -> None:
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.num_workers, self.shard, self.position = num_workers, shard, position
        self._tensors: tuple[Tensor, Tensor] | None = None
        self._indices: Iterator[list[int]] | None = None
        self._loader: Iterator | None = None
        if isinstance(dataset, TensorImageDataset):
            self._tensors = (dataset.images.to(device), dataset.labels.to(device))

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._tensors is not None:
            if self._indices is None:
                self._indices = batch_indices(len(self.dataset), self.batch_size, self.seed, self.position, self.shard)
            index = torch.tensor(next(self._indices), device=self.device)
            images, labels = self._tensors[0][index], self._tensors[1][index]
        else:
            if self._loader is None:
                sampler = _ShardSampler(len(self.dataset), self.batch_size, self.seed, self.position, self.shard)
                loader = DataLoader(
                    self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0,
                )
                self._loader = iter(loader)
            images, labels = next(self._loader)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        self.position += self.batch_size
        return images, labels

    def __iter__(self) -> "BatchStream":
        return self
