"""Each data stream of a run draws from a generator of its own: a method's draws never move the labelled batches."""

from __future__ import annotations

import hashlib

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import RandFlipd

from medssl.data.loaders import StreamSampler, stream_generator, stream_loader, stream_seed
from medssl.handlers.checkpoint import RNGState


def test_stream_seeds_are_repeatable_and_differ_between_streams_and_seeds():
    assert stream_seed(0, "labeled") == stream_seed(0, "labeled")
    seeds = {stream_seed(s, name) for s in (0, 1, 2) for name in ("labeled", "unlabeled")}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert stream_generator(3, "unlabeled").initial_seed() == stream_seed(3, "unlabeled")


def _loader(seed: int) -> DataLoader:
    data = [{"image": torch.full((1, 2, 2), float(i)) + torch.arange(4.0).reshape(1, 2, 2)} for i in range(6)]
    transform = RandFlipd("image", prob=0.5, spatial_axis=0)
    return stream_loader(Dataset(data, transform), seed, "labeled", batch_size=2)


def _epoch(loader: DataLoader) -> list[bytes]:
    return [b["image"].numpy().tobytes() for b in loader]


def test_a_loader_with_its_own_generator_ignores_the_global_stream():
    torch.manual_seed(0)
    first = _epoch(_loader(5))
    torch.manual_seed(1)  # another global state: the same batches, the same flips
    torch.rand(100)
    assert _epoch(_loader(5)) == first
    assert _epoch(_loader(6)) != first


def test_rng_state_checkpoints_a_loaders_generator_and_transforms():
    loader = _loader(5)
    _epoch(loader)
    state = RNGState(loader).state_dict()
    assert "generator0" in state and "transform0_keys" in state
    expected = [_epoch(loader) for _ in range(2)]
    resumed = _loader(5)  # a new process: built afresh, then restored
    RNGState(resumed).load_state_dict(state)
    assert [_epoch(resumed) for _ in range(2)] == expected


def test_a_pass_draws_one_permutation_so_a_resumed_run_shuffles_as_an_uninterrupted_one():
    """Resuming restores the generator as it was when the last pass ended: torch's RandomSampler would draw one more
    (empty) permutation when the pass runs out, which a resumed run never draws."""
    data = list(range(5))
    torch_sampler = DataLoader(data, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0))
    ours = DataLoader(data, batch_size=5, sampler=StreamSampler(data, g := torch.Generator().manual_seed(0)))
    it = iter(ours)
    next(it)
    state = g.get_state()  # saved at the end of the first pass, before the next one starts
    with pytest.raises(StopIteration):
        next(it)
    second = next(iter(ours))
    g.set_state(state)  # resumed
    assert torch.equal(next(iter(ours)), second)
    # torch's sampler with a generator draws again when its pass runs out: its state moved after the last batch
    tg = torch_sampler.generator
    it = iter(torch_sampler)
    next(it)
    before = tg.get_state()
    with pytest.raises(StopIteration):
        next(it)
    assert not torch.equal(tg.get_state(), before)


def test_a_checkpoint_without_generator_states_still_loads():
    loader = _loader(5)
    state = {k: v for k, v in RNGState(loader).state_dict().items() if not k.startswith("generator")}
    RNGState(_loader(5)).load_state_dict(state)


def test_supervised_and_semi_supervised_runs_see_the_same_labelled_batches(tmp_path):
    """The comparison of a method with the supervised lower bound is about the unlabelled cases: the labelled
    batches (images and augmentations) of every iteration are the same in both runs of one seed."""
    from medssl.workflows.runs import train_method
    from medssl.data.split import split_datalist_file
    from medssl.data.synthetic import synthesize

    synthesize(task="lung_vessel", cases=8, size=32, seed=0, out=tmp_path / "data", variation="scanner")
    split = split_datalist_file(tmp_path / "data" / "dataset.json", tmp_path / "split.json", 0.3, 0.15, 0.25, 0)
    tiny = {"roi_size": [16, 16, 16], "network_def#channels": [4, 8, 16], "network_def#strides": [2, 2],
            "feature_channels": 8, "num_samples": 1}  # fmt: skip
    seen: dict[str, list[str]] = {}
    for method in ("supervised", "fixmatch_learned"):
        seen[method] = hashes = []
        train_method(
            "lung_vessel", method, split, tmp_path / method, iterations=12, evaluations=2, overrides=tiny,
            device="cpu", warmup_fraction=0.0, ramp_fraction=0.0,
            on_iteration=lambda e: hashes.append(hashlib.md5(e.state.batch["image"].numpy().tobytes()).hexdigest()),
        )  # fmt: skip
    # new random patches every iteration, over two epochs
    assert len(set(seen["supervised"])) == 12
    assert seen["supervised"] == seen["fixmatch_learned"]


def test_a_set_smaller_than_the_batch_is_drawn_again_to_fill_it():
    """One labelled volume and a batch of 4: four draws of it (four random patches), not an empty loader; a set at
    least the batch's size is passed over once, in one permutation."""
    one = stream_loader(Dataset([{"image": torch.ones(1, 2, 2)}], RandFlipd("image", prob=0.5, spatial_axis=0)), 0,
                        "labeled", batch_size=4, drop_last=True)  # fmt: skip
    assert len(one) == 1 and next(iter(one))["image"].shape[0] == 4
    three = StreamSampler([0, 1, 2], torch.Generator().manual_seed(0), min_length=4)
    order = list(three)
    assert len(order) == 4 and set(order) == {0, 1, 2} and sorted(order[:3]) == [0, 1, 2]
    five = StreamSampler(list(range(5)), torch.Generator().manual_seed(0), min_length=4)
    assert sorted(five) == [0, 1, 2, 3, 4]
    assert list(StreamSampler([], torch.Generator(), min_length=4)) == []
