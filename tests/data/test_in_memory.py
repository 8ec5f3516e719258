import torch

from src.data.in_memory import TensorBatchSampler, TensorDictDataset, batch_loader


def test_evaluation_shards_cover_every_sample_exactly_once():
    shards = [
        torch.cat(list(TensorBatchSampler(10, 3, shuffle=False, rank=r, world_size=3)))
        for r in range(3)
    ]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))
    sizes = [len(TensorBatchSampler(10, 3, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sizes == [2, 1, 1]


def test_training_shards_are_even_and_disjoint():
    samplers = [
        TensorBatchSampler(11, 2, shuffle=True, seed=5, rank=r, world_size=2, even_shards=True)
        for r in range(2)
    ]
    shards = [torch.cat(list(s)) for s in samplers]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert len(samplers[0]) == len(samplers[1]) == 3


def test_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        sampler = TensorBatchSampler(50, 8, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return torch.cat(list(sampler)).tolist()

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    assert sorted(order(1, 3)) == list(range(50))


def test_loader_yields_named_slices():
    dataset = TensorDictDataset(x=torch.arange(10).view(10, 1), y=torch.arange(10) * 2)
    batches = list(batch_loader(dataset, 4, shuffle=False))
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    assert torch.equal(batches[1]["y"], torch.tensor([8, 10, 12, 14]))
