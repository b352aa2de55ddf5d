"""Random streams of a run's data loaders, one per stream, so that what one stream draws never moves another.

A bundle's labelled and unlabelled loaders (:func:`stream_loader`) each take a ``torch.Generator`` of their own,
seeded from the run's seed and the stream's name (:func:`stream_generator`). It drives the loader's shuffles and
seeds its random transforms (MONAI's ``DataLoader`` seeds them from the loader's generator when it has one). So the labelled batches of a run,
images and augmentations alike, depend only on the seed and the labelled data: a supervised run and a
semi-supervised run of the same seed see the same labelled batch at every iteration, whatever the unlabelled
stream (strong views, mixing boxes) and the method's handlers draw. Before, every loader drew from torch's global
generator, and a method's extra draws changed the labelled batches of every later epoch.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from torch.utils.data import Sampler

__all__ = ["STREAMS", "stream_seed", "stream_generator", "StreamSampler", "stream_loader"]

#: The data streams of a training run.
STREAMS = ("labeled", "unlabeled")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for ``stream`` of a run seeded ``seed``: different streams of one seed, and one stream of
    different seeds, get unrelated seeds (numpy's ``SeedSequence`` of the seed and a hash of the stream's name)."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(str(stream).encode())]).generate_state(2)
    return int.from_bytes(words.astype("<u4").tobytes(), "little") >> 1


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` of its own for ``stream`` of a run seeded ``seed`` (pass it as a loader's
    ``generator``; :class:`~medssl.handlers.checkpoint.RNGState` checkpoints it with the loader)."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


class StreamSampler(Sampler[int]):
    """Every pass over ``data_source`` in a new order: one permutation drawn from ``generator`` when the pass starts.

    torch's ``RandomSampler`` with a generator draws a second, empty permutation from it when a pass runs out, so a
    run resumed at an epoch boundary (its loaders' generators restored from the checkpoint) would draw one
    permutation fewer than the uninterrupted run and shuffle differently from then on; this sampler draws exactly
    one per pass.

    A set smaller than ``min_length`` (the batch size) is repeated, one permutation after another, until a pass holds
    ``min_length`` items: one labelled volume and a batch of 4 make a batch of 4 draws of that volume (4 random
    patches), not an empty loader. A set at least that large is passed over once, as above.
    """

    def __init__(self, data_source: Sized, generator: torch.Generator, min_length: int = 0) -> None:
        self.data_source = data_source
        self.generator = generator
        self.min_length = int(min_length)

    def __len__(self) -> int:
        n = len(self.data_source)
        return max(n, self.min_length) if n else 0

    def __iter__(self) -> Iterator[int]:
        n, order = len(self.data_source), []
        while n and len(order) < max(self.min_length, 1):
            order += torch.randperm(n, generator=self.generator).tolist()
        return iter(order[: len(self)])


def stream_loader(
    dataset: Any, seed: int, stream: str, shuffle: bool = True, sampler: Sampler | None = None, **kwargs: Any
) -> DataLoader:
    """A MONAI ``DataLoader`` of ``dataset`` that draws from ``stream``'s own generator (:func:`stream_generator`).

    Args:
        dataset: the stream's dataset.
        seed, stream: the run's seed and the stream's name.
        shuffle: a new order every pass (:class:`StreamSampler`; a set smaller than the batch is repeated to fill
            one); ignored when ``sampler`` is given (a ``DistributedSampler`` in a multi-process run).
        sampler: a sampler of the caller's.
        kwargs: every other argument of ``DataLoader`` (``batch_size``, ``drop_last``, ``num_workers``, ...).
    """
    generator = stream_generator(seed, stream)
    if sampler is None and shuffle:
        sampler = StreamSampler(dataset, generator, min_length=kwargs.get("batch_size", 1))
    return DataLoader(dataset, sampler=sampler, generator=generator, **kwargs)
