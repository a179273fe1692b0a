"""RolloutBuffer: GAE(lambda) equals SB3's RolloutBuffer on the same data; minibatches.

The lab's envs autoreset NEXT_STEP (an extra masked step after each episode end, whose
value is V(final obs)); SB3's autoreset in the same step and adds gamma * V(final obs) to
a truncated step's reward. The test generates one NEXT_STEP rollout, rewrites it the way
SB3's PPO would have stored it, and compares advantages and returns step for step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.buffers import RolloutBuffer as SB3RolloutBuffer

from lab.buffers import RolloutBuffer


def random_rollout(num_steps: int, num_envs: int, end_prob: float, seed: int, start_after_end: list[bool]):
    """NEXT_STEP data: after an end, the next step is an autoreset step (reward 0, no end)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    rewards = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    term = np.zeros((num_steps, num_envs), bool)
    trunc = np.zeros((num_steps, num_envs), bool)
    autoreset = np.zeros((num_steps, num_envs), bool)
    prev_end = np.array(start_after_end)
    for t in range(num_steps):
        autoreset[t] = prev_end
        ends = (rng.random(num_envs) < end_prob) & ~prev_end
        kind = rng.random(num_envs) < 0.5
        term[t], trunc[t] = ends & kind, ends & ~kind
        rewards[t][prev_end] = 0.0
        prev_end = ends
    last_values = rng.normal(size=num_envs).astype(np.float32)
    return values, rewards, term, trunc, autoreset, last_values


def sb3_advantages(env, values, rewards, term, trunc, autoreset, last_values, gamma, lam):
    """SB3 on one env's real steps; returns (advantages, returns, real step indices)."""
    steps = np.flatnonzero(~autoreset[:, env])
    if steps.size == 0:
        return np.zeros(0), np.zeros(0), steps
    buf = SB3RolloutBuffer(len(steps), spaces.Box(-1, 1, (1,)), spaces.Discrete(2), "cpu",
                           gae_lambda=lam, gamma=gamma, n_envs=1)
    episode_start = True
    for t in steps:
        reward = rewards[t, env]
        if trunc[t, env]:  # what SB3's collect_rollouts does with the terminal observation
            final_value = values[t + 1, env] if t + 1 < len(values) else last_values[env]
            reward += gamma * final_value
        buf.add(np.zeros((1, 1)), np.zeros((1, 1)), np.array([reward]), np.array([episode_start]),
                torch.tensor([values[t, env]]), torch.zeros(1))
        episode_start = term[t, env] or trunc[t, env]
    buf.compute_returns_and_advantage(torch.tensor([last_values[env]]), np.array([episode_start]))
    return buf.advantages[:, 0], buf.returns[:, 0], steps


@settings(max_examples=30, deadline=None)
@given(
    num_steps=st.integers(1, 24),
    num_envs=st.integers(1, 4),
    end_prob=st.sampled_from([0.0, 0.1, 0.4]),
    gamma=st.sampled_from([0.9, 0.99]),
    lam=st.sampled_from([0.0, 0.95, 1.0]),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_gae_matches_sb3(num_steps, num_envs, end_prob, gamma, lam, seed, data):
    start_after_end = data.draw(st.lists(st.booleans(), min_size=num_envs, max_size=num_envs))
    values, rewards, term, trunc, autoreset, last_values = random_rollout(num_steps, num_envs, end_prob, seed, start_after_end)
    buf = RolloutBuffer(num_steps, num_envs, (1,), (), "cpu")
    previous_ends = torch.tensor(start_after_end)  # the previous rollout ends these episodes last
    no_end = torch.zeros(num_envs, dtype=torch.bool)
    for t in range(num_steps):
        ends = previous_ends if t == num_steps - 1 else no_end
        buf.add(torch.zeros(num_envs, 1), torch.zeros(num_envs, dtype=torch.long), torch.zeros(num_envs),
                torch.zeros(num_envs), torch.zeros(num_envs), ends, no_end)
    buf.compute_returns_and_advantage(torch.zeros(num_envs), gamma, lam)
    buf.reset()
    for t in range(num_steps):
        buf.add(torch.zeros(num_envs, 1), torch.zeros(num_envs, dtype=torch.long), torch.zeros(num_envs),
                torch.tensor(values[t]), torch.tensor(rewards[t]), torch.tensor(term[t]), torch.tensor(trunc[t]))
    assert torch.equal(buf.valid, torch.tensor(~autoreset))
    buf.compute_returns_and_advantage(torch.tensor(last_values), gamma, lam)
    for env in range(num_envs):
        advantages, returns, steps = sb3_advantages(env, values, rewards, term, trunc, autoreset, last_values,
                                                    gamma, lam)
        np.testing.assert_allclose(buf.advantages[steps, env].numpy(), advantages, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(buf.returns[steps, env].numpy(), returns, rtol=1e-4, atol=1e-4)
    assert buf.advantages[torch.tensor(autoreset)].eq(0).all()


def test_minibatches_cover_real_steps_once_shuffled() -> None:
    steps, envs = 16, 3
    buf = RolloutBuffer(steps, envs, (2,), (), "cpu")
    ends = torch.zeros(steps, envs, dtype=torch.bool)
    ends[4, 0] = ends[9, 2] = True
    for t in range(steps):
        ids = torch.arange(envs) + t * envs  # action = flat position, to identify rows
        buf.add(ids.float().unsqueeze(1).repeat(1, 2), ids, torch.zeros(envs), torch.zeros(envs),
                torch.ones(envs), ends[t], torch.zeros(envs, dtype=torch.bool))
    buf.compute_returns_and_advantage(torch.zeros(envs), 0.99, 0.95)
    batches = list(buf.minibatches(10, torch.Generator().manual_seed(0)))
    seen = torch.cat([b.actions for b in batches])
    autoreset = {5 * envs + 0, 10 * envs + 2}
    assert sorted(seen.tolist()) == sorted(set(range(steps * envs)) - autoreset)
    assert seen.tolist() != sorted(seen.tolist())
    assert [b.actions.numel() for b in batches] == [10, 10, 10, 10, 6]
    for b in batches:
        assert torch.equal(b.observations[:, 0], b.actions.float())
    again = torch.cat([b.actions for b in buf.minibatches(10, torch.Generator().manual_seed(0))])
    assert torch.equal(seen, again)


def test_add_past_the_end_and_early_compute_raise() -> None:
    buf = RolloutBuffer(1, 1, (1,), (), "cpu")
    with pytest.raises(RuntimeError):
        buf.compute_returns_and_advantage(torch.zeros(1), 0.99, 0.95)
    no = torch.zeros(1, dtype=torch.bool)
    buf.add(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(1), torch.ones(1), no, no)
    with pytest.raises(RuntimeError):
        buf.add(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(1), torch.ones(1), no, no)
    buf.reset()
    assert not buf.full


def test_a_done_on_an_autoreset_step_is_never_trained_on() -> None:
    buffer = RolloutBuffer(6, 1, (1,), (), "cpu")
    dones = [False, True, True, False, False, False]  # step 2 is an autoreset step that reports a done
    for t, done in enumerate(dones):
        buffer.add(torch.tensor([[float(t)]]), torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(1),
                   torch.ones(1), torch.tensor([done]), torch.tensor([False]))
    # step 2 (the autoreset step) and step 3 (final obs of nothing -> first obs of the next episode) are out
    assert buffer.valid.flatten().tolist() == [True, True, False, False, True, True]
