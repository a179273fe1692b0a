"""lab.ema: the weights' moving average generators sample from, and BatchNorm re-estimated for it."""

from __future__ import annotations

import torch
import torch.nn as nn

from lab.ema import WeightAverage, recompute_batchnorm


def test_the_average_follows_the_live_weights_with_a_warmed_up_decay() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    average = WeightAverage(net, decay=0.9)
    start = net.weight.detach().clone()
    assert not average.model.weight.requires_grad
    with torch.no_grad():
        net.weight.add_(1.0)
    average.update(1)  # decay min(0.9, 2 / 11): mostly the new weights
    assert torch.allclose(average.model.weight, start + (1 - 2 / 11))
    with torch.no_grad():
        net.weight.add_(1.0)
    before = average.model.weight.detach().clone()
    average.update(1000)  # the full decay
    assert torch.allclose(average.model.weight, before + 0.1 * (net.weight - before))
    assert not torch.equal(average.model.weight, net.weight)


def test_buffers_follow_the_live_network() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    average = WeightAverage(net, decay=0.99)
    net(torch.randn(32, 4) * 3 + 2)  # training mode: the live running statistics move
    average.update(5)
    assert torch.equal(average.model[1].running_mean, net[1].running_mean)


def test_recompute_batchnorm_sets_the_statistics_of_the_given_batches() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=0.3)).eval()
    batches = [(torch.randn(50, 4) + i,) for i in range(3)]
    recompute_batchnorm(net, batches)
    with torch.no_grad():
        outputs = [net[0](x) for (x,) in batches]
    expected_mean = torch.stack([o.mean(0) for o in outputs]).mean(0)
    expected_var = torch.stack([o.var(0, unbiased=True) for o in outputs]).mean(0)
    norm = net[1]
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(norm.running_var, expected_var, atol=1e-5)
    assert norm.momentum == 0.3 and not net.training, "momentum and mode are left as they were"
    assert norm.num_batches_tracked == 3


def test_recompute_batchnorm_leaves_a_network_without_it_alone() -> None:
    net = nn.Linear(2, 2)
    weight = net.weight.detach().clone()
    recompute_batchnorm(net, [(torch.randn(4, 2),)])
    assert torch.equal(net.weight, weight) and net.training
