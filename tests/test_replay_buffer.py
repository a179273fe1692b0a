"""ReplayBuffer against the ground truth: gymnasium frame stacking under NEXT_STEP autoreset.

A scripted env emits frames that encode (env, step); gymnasium's FrameStackObservation
stacks them and SyncVectorEnv autoresets them exactly as the lab's vector envs do. A
reference keeps the genuine transitions as plain Python lists; every transition the
buffer can return must equal the reference one with the same (unique) action id,
n-step targets computed by brute force.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.api import LabError
from lab.buffers import ReplayBuffer
from lab.run.chunks import ChunkStore

GAMMA = 0.9
MAX_ACTION = 1_000_000


class ScriptedFrames(gym.Env):
    """Frames encode (env, step id); episode lengths and end kinds follow a script."""

    def __init__(self, env_index: int, script: list[tuple[int, bool]]) -> None:
        self.env_index = env_index
        self.script = script
        self.observation_space = gym.spaces.Box(0, 255, (2, 2), np.uint8)
        self.action_space = gym.spaces.Discrete(MAX_ACTION)
        self.episode = -1
        self.frame_id = 0

    def _frame(self) -> np.ndarray:
        self.frame_id += 1
        i = self.frame_id
        return np.array([[i % 251, (i // 251) % 251], [self.env_index, 7]], dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length, self.terminates = self.script[self.episode % len(self.script)]
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        reward = float((int(action) * 7 + self.env_index) % 5) - 2.0
        done = self.t >= self.length
        return self._frame(), reward, done and self.terminates, done and not self.terminates, {}


@dataclass
class Transition:
    step: int  # vector step at which it was added
    obs: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    truncated: bool


@dataclass
class Reference:
    """Genuine transitions per env, in order, keyed by their unique action id."""

    num_envs: int
    by_action: dict[int, tuple[int, int]] = field(default_factory=dict)
    episodes: list[list[Transition]] = field(default_factory=list)
    prev_done: list[bool] = field(default_factory=list)
    prev_autoreset: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.episodes = [[] for _ in range(self.num_envs)]
        self.prev_done = [False] * self.num_envs
        self.prev_autoreset = [True] * self.num_envs

    def record(self, step, obs, actions, rewards, next_obs, term, trunc) -> None:
        for i in range(self.num_envs):
            autoreset = self.prev_done[i]
            if not autoreset:
                self.by_action[int(actions[i])] = (i, len(self.episodes[i]))
                self.episodes[i].append(
                    Transition(step, obs[i].copy(), float(rewards[i]), next_obs[i].copy(), bool(term[i]), bool(trunc[i]))
                )
            self.prev_done[i] = not autoreset and bool(term[i] or trunc[i])
            self.prev_autoreset[i] = autoreset

    def cut(self) -> None:
        """What a restart of every env does (see ReplayBuffer.end_episodes): open episodes
        end truncated at their last transition, which bootstraps from its real next_obs."""
        for i, transitions in enumerate(self.episodes):
            if not self.prev_autoreset[i] and transitions and not self.prev_done[i]:
                transitions[-1].truncated = True
        self.prev_done = [False] * self.num_envs
        self.prev_autoreset = [True] * self.num_envs

    def expected(self, action: int, n_step: int) -> tuple[np.ndarray, float, np.ndarray, bool, float]:
        env, j = self.by_action[action]
        seq = self.episodes[env]
        total, k = 0.0, 0
        while True:
            t = seq[j + k]
            total += GAMMA**k * t.reward
            k += 1
            if t.terminated or t.truncated or k == n_step:
                return seq[j].obs, total, t.next_obs, t.terminated, GAMMA**k

    def sampleable(self, lo: int, hi: int) -> set[int]:
        return {a for a, (env, j) in self.by_action.items() if lo <= self.episodes[env][j].step <= hi}


def make_envs(scripts: list[list[tuple[int, bool]]], frame_stack: int, padding: str) -> SyncVectorEnv:
    fns = [
        (lambda i=i: FrameStackObservation(ScriptedFrames(i, scripts[i]), frame_stack, padding_type=padding))
        for i in range(len(scripts))
    ]
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)


class Driver:
    """Runs the envs and feeds the same stream to the buffer and the reference."""

    def __init__(self, scripts, frame_stack, padding, rb: ReplayBuffer) -> None:
        self.envs = make_envs(scripts, frame_stack, padding)
        self.rb = rb
        self.ref = Reference(len(scripts))
        self.obs, _ = self.envs.reset(seed=0)
        self.next_action = 1
        self.steps = 0

    def run(self, steps: int) -> None:
        n = self.envs.num_envs
        for _ in range(steps):
            actions = np.arange(self.next_action, self.next_action + n)
            self.next_action += n
            next_obs, rewards, term, trunc, _ = self.envs.step(actions)
            self.ref.record(self.steps, self.obs, actions, rewards, next_obs, term, trunc)
            self.rb.add(*(torch.as_tensor(x) for x in (self.obs, actions, rewards, next_obs, term, trunc)))
            self.obs = next_obs
            self.steps += 1

    def restart(self) -> None:
        """A resumed run: envs start over, the buffer closes its open episodes."""
        self.rb.end_episodes()
        self.ref.cut()
        self.steps += 1  # end_episodes wrote one (never sampled) slot per env
        self.obs, _ = self.envs.reset(seed=1)

    def check_all(self) -> set[int]:
        """Every transition the buffer can return equals the reference; returns their ids."""
        rb = self.rb
        indices = rb.sampleable_indices()
        batch = rb.get(indices)
        lo = max(0, self.steps - rb.slots + rb.frame_stack - 1)
        expected_ids = self.ref.sampleable(lo, self.steps - 1 - rb.n_step)
        got_ids = [int(a) for a in batch.actions]
        assert sorted(got_ids) == sorted(expected_ids)
        for i, action in enumerate(got_ids):
            obs, ret, next_obs, done, discount = self.ref.expected(action, rb.n_step)
            np.testing.assert_array_equal(batch.observations[i].numpy(), obs.reshape(rb.observation_shape))
            np.testing.assert_array_equal(batch.next_observations[i].numpy(), next_obs.reshape(rb.observation_shape))
            assert batch.rewards[i].item() == pytest.approx(ret, rel=1e-5, abs=1e-5)
            assert batch.dones[i].item() == float(done)
            assert batch.discounts[i].item() == pytest.approx(discount, rel=1e-5)
        return set(expected_ids)


def new_buffer(num_envs, frame_stack, capacity, n_step, padding="reset", prioritized=False, seed=0):
    shape = (frame_stack, 2, 2)
    return ReplayBuffer(
        capacity, shape, num_envs, "cpu", frame_stack=frame_stack, n_step=n_step, gamma=GAMMA,
        prioritized=prioritized, generator=torch.Generator().manual_seed(seed),
        stack_padding="zero" if padding == "zero" else "reset",
    )


episode = st.tuples(st.integers(1, 9), st.booleans())


@settings(max_examples=25, deadline=None)
@given(
    num_envs=st.integers(1, 3),
    frame_stack=st.sampled_from([1, 2, 4]),
    n_step=st.integers(1, 4),
    padding=st.sampled_from(["reset", "zero"]),
    slots=st.integers(10, 40),
    steps=st.integers(5, 90),
    prioritized=st.booleans(),
    data=st.data(),
)
def test_stacks_and_nstep_targets_match_gymnasium(num_envs, frame_stack, n_step, padding, slots, steps, prioritized, data):
    scripts = [data.draw(st.lists(episode, min_size=1, max_size=4)) for _ in range(num_envs)]
    rb = new_buffer(num_envs, frame_stack, slots * num_envs, n_step, padding, prioritized)
    driver = Driver(scripts, frame_stack, padding, rb)
    driver.run(steps)
    if steps <= n_step:
        with pytest.raises(LabError):
            rb.sample(4)
        return
    ids = driver.check_all()
    if ids:  # sampling only ever returns genuine, complete transitions
        sampled = rb.sample(64)
        assert set(int(a) for a in sampled.actions) <= ids
        if prioritized:
            rb.update_priorities(sampled.indices, torch.rand(64, generator=torch.Generator().manual_seed(1)))
            assert set(int(a) for a in rb.sample(64).actions) <= ids


@settings(max_examples=15, deadline=None)
@given(
    num_envs=st.integers(1, 3),
    n_step=st.integers(1, 3),
    before=st.integers(3, 40),
    after=st.integers(3, 40),
    data=st.data(),
)
def test_restart_closes_open_episodes(num_envs, n_step, before, after, data):
    scripts = [data.draw(st.lists(episode, min_size=1, max_size=3)) for _ in range(num_envs)]
    rb = new_buffer(num_envs, 4, 30 * num_envs, n_step)
    driver = Driver(scripts, 4, "reset", rb)
    driver.run(before)
    driver.restart()
    driver.run(after)
    if driver.steps > n_step:
        driver.check_all()


def test_uniform_sampling_is_uniform_over_valid_transitions() -> None:
    rb = new_buffer(3, 4, 3 * 50, 2)
    driver = Driver([[(4, True)], [(3, False), (6, True)], [(9, False)]], 4, "reset", rb)
    driver.run(120)  # wraps around more than twice
    ids = sorted(driver.check_all())
    counts = dict.fromkeys(ids, 0)
    drawn = torch.cat([rb.sample(1000).actions for _ in range(40)])
    for a in drawn.tolist():
        counts[a] += 1
    freq = np.array(list(counts.values())) / drawn.numel()
    assert np.abs(freq - 1 / len(ids)).max() < 0.35 / len(ids)
    assert rb.sample(8).weights.eq(1).all()


def test_prioritized_frequencies_follow_priorities_and_weights_correct() -> None:
    alpha, beta = 0.7, 0.5
    rb = ReplayBuffer(64, (3,), 1, "cpu", observation_dtype=torch.float32, prioritized=True,
                      alpha=alpha, beta=beta, generator=torch.Generator().manual_seed(3))
    for t in range(40):
        obs = torch.full((1, 3), float(t))
        rb.add(obs, torch.tensor([t]), torch.zeros(1), obs + 1, torch.tensor([False]), torch.tensor([False]))
    indices = rb.sampleable_indices()
    td = torch.arange(1, indices.numel() + 1, dtype=torch.float32)
    rb.update_priorities(indices, td)
    target = (td.double() + rb.priority_eps) ** alpha
    target = target / target.sum()
    position = torch.full((rb.capacity,), -1)
    position[indices] = torch.arange(indices.numel())
    batches = [rb.sample(512) for _ in range(100)]
    drawn = position[torch.cat([b.indices for b in batches])]
    assert (drawn >= 0).all()
    counts = torch.bincount(drawn, minlength=indices.numel()).double()
    assert (counts / drawn.numel() - target).abs().max() < 0.01
    batch = batches[-1]
    probs = target[position[batch.indices]]
    weights = (indices.numel() * probs) ** -beta
    torch.testing.assert_close(batch.weights.double(), weights / weights.max(), rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip_through_torch_save() -> None:
    rb = new_buffer(2, 4, 2 * 30, 3, prioritized=True, seed=5)
    driver = Driver([[(5, True), (8, False)], [(7, False)]], 4, "reset", rb)
    driver.run(45)
    sampled = rb.sample(16)
    rb.update_priorities(sampled.indices, torch.rand(16))
    blob = io.BytesIO()
    torch.save(rb.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    restored = new_buffer(2, 4, 2 * 30, 3, prioritized=True, seed=9)
    restored.load_state_dict(state, end_episodes=False)
    rb.generator.manual_seed(11)
    restored.generator.manual_seed(11)
    for a, b in zip(rb.sample(32), restored.sample(32), strict=True):
        torch.testing.assert_close(a, b)
    # Resume semantics: closing open episodes keeps every sampleable transition intact.
    restored.load_state_dict(state)
    driver.rb = restored
    driver.ref.cut()
    driver.steps += 1
    driver.check_all()
    driver.obs, _ = driver.envs.reset(seed=1)
    driver.run(20)
    driver.check_all()


def test_a_partly_filled_buffer_saves_only_its_filled_slots(tmp_path) -> None:
    rb = new_buffer(1, 4, 1000, 1)
    driver = Driver([[(6, False)]], 4, "reset", rb)
    driver.run(20)
    store = ChunkStore(tmp_path)
    saved = store.spill({"buffer": rb.state_dict()})
    store.commit()
    assert saved["buffer"]["rows"]["filled"] == 20 and len(saved["buffer"]["rows"]["chunks"]) == 1
    (chunk,) = tmp_path.glob("*.pt")
    assert torch.load(chunk, weights_only=True)["frames"].shape[0] == 20  # not the 1000 slots allocated
    restored = new_buffer(1, 4, 1000, 1)
    restored.load_state_dict(ChunkStore(tmp_path).restore(saved)["buffer"], end_episodes=False)
    driver.rb = restored
    driver.check_all()
    with pytest.raises(LabError, match="does not match"):
        new_buffer(1, 4, 500, 1).load_state_dict(rb.state_dict())


def test_an_empty_buffer_checkpoint_restores(tmp_path) -> None:
    """A run's step-0 checkpoint holds an empty ring, whose manifest names no chunk: resuming
    from it (a kill right after set-up) must load, not fail on the missing rows."""
    for prioritized in (False, True):
        store = ChunkStore(tmp_path / str(prioritized))
        saved = store.spill({"buffer": new_buffer(2, 4, 100, 1, prioritized=prioritized).state_dict()})
        store.commit()
        assert saved["buffer"]["rows"]["chunks"] == []
        restored = new_buffer(2, 4, 100, 1, prioritized=prioritized)
        restored.load_state_dict(ChunkStore(tmp_path / str(prioritized)).restore(saved)["buffer"])
        assert len(restored) == 0


def test_atari_frames_stored_once() -> None:
    rb = ReplayBuffer(1000, (4, 84, 84), 1, "cpu", frame_stack=4)
    assert rb.storage_bytes / rb.capacity <= 7200
    with pytest.raises(LabError):
        ReplayBuffer(1000, (3, 84, 84), 1, "cpu", frame_stack=4)
    with pytest.raises(LabError, match="too small"):
        ReplayBuffer(10, (4, 84, 84), 2, "cpu", frame_stack=4, n_step=3)


# ---------------------------------------------------------------- SB3 adapter


def test_sb3_adapter_returns_the_transitions_sb3_stores() -> None:
    """Feed SB3's ReplayBuffer and the adapter the same SB3-style stream (same-step
    autoreset, terminal_observation, TimeLimit.truncated): every sample from the adapter
    is a transition SB3 holds, with SB3's done-unless-timeout semantics."""
    from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer
    from stable_baselines3.common.env_util import make_vec_env

    from lab.plugins.sb3_agents.replay import SB3ReplayBuffer

    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 15})
    space, actions = venv.observation_space, venv.action_space
    ours = SB3ReplayBuffer(400, space, actions, "cpu", n_envs=2, seed=0)
    theirs = SB3Buffer(400, space, actions, "cpu", n_envs=2)
    rng = np.random.default_rng(0)
    obs = venv.reset()
    for _ in range(150):
        action = rng.integers(0, 2, size=(2, 1))
        new_obs, rewards, dones, infos = venv.step(action[:, 0])
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
        ours.add(obs, next_obs, action, rewards, dones, infos)
        theirs.add(obs, next_obs, action, rewards, dones, infos)
        obs = new_obs
    assert ours.size() == theirs.size() == 150
    stored = {}
    for t in range(150):
        for i in range(2):
            done = theirs.dones[t, i] * (1 - theirs.timeouts[t, i])
            stored[theirs.observations[t, i].tobytes()] = (
                theirs.next_observations[t, i], theirs.actions[t, i], theirs.rewards[t, i], done)
    assert sum(float(d) for *_, d in stored.values()) > 0  # both terminations and time-outs occur
    assert theirs.timeouts.sum() > 0
    restored = SB3ReplayBuffer(400, space, actions, "cpu", n_envs=2, seed=0)
    blob = io.BytesIO()
    torch.save(ours.state_dict(), blob)
    blob.seek(0)
    restored.load_state_dict(torch.load(blob, weights_only=True), end_episodes=False)
    assert restored.size() == 150
    for a, b in zip(ours.sample(64), restored.sample(64), strict=True):
        assert a is b is None or torch.equal(a, b)
    batch = ours.sample(256)
    assert batch.rewards.shape == batch.dones.shape == (256, 1) and batch.discounts is None
    for k in range(256):
        next_obs, action, reward, done = stored[batch.observations[k].numpy().tobytes()]
        np.testing.assert_array_equal(batch.next_observations[k].numpy(), next_obs)
        assert batch.actions[k].tolist() == action.tolist()
        assert batch.rewards[k].item() == reward and batch.dones[k].item() == done


def test_sb3_dqn_learns_with_the_adapter() -> None:
    from stable_baselines3 import DQN

    from lab.plugins.sb3_agents.replay import SB3ReplayBuffer

    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, buffer_size=1000, batch_size=16,
                replay_buffer_class=SB3ReplayBuffer, replay_buffer_kwargs={"n_steps": 3, "gamma": 0.99},
                train_freq=8, seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(200)
    assert isinstance(model.replay_buffer, SB3ReplayBuffer)
    assert model.replay_buffer.size() == 200
    assert model.replay_buffer.sample(8).discounts is not None
    assert model._n_updates > 0


def test_a_done_on_an_autoreset_step_never_joins_two_episodes() -> None:
    """An env that breaks the contract (a done on the step after a done: a game that ended
    during Atari's life reset) cannot make the buffer store the transition that follows,
    which would lead from the ended game into the next one."""
    buffer = ReplayBuffer(64, (1,), 1, "cpu", observation_dtype=torch.float32)
    obs = torch.tensor([[0.0]])
    # obs t is the value t: 0 -> 1 -> 2 -> 3 ends episode A; step 3 (3 -> 4) is the autoreset
    # step and wrongly reports a done, so 4 -> 5 leads out of an ended game; 5 -> 6 is real
    for t, done in enumerate([False, False, True, True, False, False, False]):
        next_obs = torch.tensor([[float(t + 1)]])
        buffer.add(obs, torch.zeros(1, dtype=torch.long), torch.ones(1), next_obs, torch.tensor([done]),
                   torch.tensor([False]))
        obs = next_obs
    batch = buffer.get(buffer.sampleable_indices())
    assert sorted(batch.observations.flatten().tolist()) == [0.0, 1.0, 2.0, 5.0]
