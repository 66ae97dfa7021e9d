"""The data forms behind every analysis (boundgeo.io._sources): loaders, labels, ragged and complex items."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import boundgeo as bg
from boundgeo.io._sources import as_source, as_tensors


def _doubled(batch):
    x = torch.stack([item[0] for item in batch])
    return 2 * x, torch.stack([item[1] for item in batch])


def test_a_loader_with_its_own_collate_fn_is_read_as_it_yields():
    x = torch.rand(7, 1, 3, 3)
    y = torch.arange(7) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=3, collate_fn=_doubled)
    xs, ys = as_tensors(loader)
    torch.testing.assert_close(xs, 2 * x)  # the loader's transform is kept
    assert torch.equal(ys, y)
    # the default collate_fn still reads the dataset by index (sampler and batching unused)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True)
    xs, ys = as_source(shuffled).get([4, 0])
    assert torch.equal(xs, x[[4, 0]]) and torch.equal(ys, y[[4, 0]])


def test_loader_batches_must_be_tensors_or_pairs():
    data = [{"pixel_values": torch.rand(2)} for _ in range(3)]
    loader = DataLoader(data, batch_size=2, collate_fn=lambda b: {"pixel_values": torch.stack([d["pixel_values"] for d in b])})
    with pytest.raises(bg.BoundgeoError, match="must yield input tensors or .* got a dict"):
        as_tensors(loader)


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.5, 2.0]), np.array([0.0, np.nan, 1.0]),
                                    torch.tensor([0.0, float("inf"), 1.0])])
def test_non_integral_float_labels_are_refused_not_truncated(labels):
    x = torch.rand(3, 2)
    with pytest.raises(bg.BoundgeoError, match="whole class indices"):
        as_source((x, labels))
    dataset = [(x[i], float(labels[i])) for i in range(3)]
    with pytest.raises(bg.BoundgeoError, match="whole class indices"):
        as_source(_ListDataset(dataset)).all()
    loader = DataLoader(TensorDataset(x, torch.as_tensor(labels)), batch_size=2, collate_fn=_pairs)
    with pytest.raises(bg.BoundgeoError, match="whole class indices"):
        as_tensors(loader)


def _pairs(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


class _ListDataset(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_whole_float_and_bool_labels_are_class_indices():
    x = torch.rand(3, 2)
    _, y = as_tensors((x, torch.tensor([2.0, 0.0, 1.0])))
    assert y.dtype == torch.int64 and y.tolist() == [2, 0, 1]
    _, y = as_tensors((x, np.array([True, False, True])))
    assert y.tolist() == [1, 0, 1]


def test_negative_and_complex_labels_are_refused():
    x = torch.rand(3, 2)
    with pytest.raises(bg.BoundgeoError, match=">= 0, got -1"):
        as_source((x, torch.tensor([0, -1, 2])))
    with pytest.raises(bg.BoundgeoError, match=">= 0, got -1"):
        as_source(_ListDataset([(x[i], i - 1) for i in range(3)])).all()
    with pytest.raises(bg.BoundgeoError, match="class indices, got dtype torch.complex64"):
        as_source((x, torch.zeros(3, dtype=torch.complex64)))


def test_complex_inputs_are_refused():
    z = torch.rand(3, 2, dtype=torch.complex64)
    for data in (z, z.numpy(), (z, torch.arange(3))):
        with pytest.raises(bg.BoundgeoError, match="must be real, got dtype"):
            as_source(data)
    with pytest.raises(bg.BoundgeoError, match=r"item 0\) must be real"):
        as_source(_ListDataset([(z[i], 0) for i in range(3)])).all()
    loader = DataLoader(TensorDataset(z), batch_size=2, collate_fn=lambda b: torch.stack([i[0] for i in b]))
    with pytest.raises(bg.BoundgeoError, match="must be real"):
        as_tensors(loader)


def test_ragged_dataset_items_are_named():
    items = [(torch.rand(1, 4, 4), 0), (torch.rand(1, 4, 4), 1), (torch.rand(1, 5, 4), 0)]
    source = as_source(_ListDataset(items))
    assert source.get([0, 1])[0].shape == (2, 1, 4, 4)
    with pytest.raises(bg.BoundgeoError, match=r"item 0 is 1x4x4 and item 2 is 1x5x4"):
        source.get([2])  # a later call with one item: compared with the first item read
    with pytest.raises(bg.BoundgeoError, match=r"item 0 is 1x4x4 and item 2 is 1x5x4"):
        as_tensors(_ListDataset(items))


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.rand(2, 3), torch.tensor([0, 1])
        yield torch.rand(2, 4), torch.tensor([1, 0])


def test_ragged_loader_batches_are_refused():
    loader = DataLoader(_Stream(), batch_size=None)
    with pytest.raises(bg.BoundgeoError, match=r"batches differ in shape: \(2, 3\) and \(2, 4\)"):
        as_tensors(loader)


class _Huge(Dataset):
    """50,000 ImageNet-size items, made on access (and counted)."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 50_000

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > 10:  # a regression fails here instead of filling the memory
            raise AssertionError("the whole dataset is being read")
        return torch.zeros(3, 224, 224), 0


def test_materialising_a_huge_dataset_is_refused_before_reading_it():
    data = _Huge()
    source = as_source(data)
    assert source.get([5, 49_999])[0].shape == (2, 3, 224, 224)  # by index: fine
    with pytest.raises(bg.BoundgeoError, match=r"all 50000 dataset items in memory: 28\.0 GiB.*Subset"):
        as_tensors(data)
    assert data.reads <= 4


def test_materialising_reads_in_chunks_and_keeps_order():
    x = torch.rand(2500, 3)
    y = torch.arange(2500) % 7
    xs, ys = as_tensors(_ListDataset(list(zip(x, y))))
    assert torch.equal(xs, x) and torch.equal(ys, y)


class _WhoDecodes(Dataset):
    """Items that say which process decoded them (the input's value is the process id)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        import os

        return torch.full((1, 2, 2), float(os.getpid())), i % 3


def test_a_loaders_workers_decode_the_items_in_order():
    import os

    loader = DataLoader(_WhoDecodes(), batch_size=8, num_workers=2)
    source = as_source(loader)
    assert source.num_workers == 2
    x, y = source.get(torch.arange(39, -1, -1))
    decoded_by = set(x[:, 0, 0, 0].long().tolist())
    assert os.getpid() not in decoded_by and len(decoded_by) >= 1  # not in this process
    assert y.tolist() == [i % 3 for i in range(39, -1, -1)]  # the order asked for, not the loader's


def test_a_plain_dataset_is_read_in_this_process():
    import os

    x, _ = as_source(_WhoDecodes()).get(torch.arange(20))
    assert set(x[:, 0, 0, 0].long().tolist()) == {os.getpid()}
    assert as_source(_WhoDecodes(), device="cpu").pin_memory is False
    assert as_source(_WhoDecodes(), device=torch.device("cuda")).pin_memory is True
