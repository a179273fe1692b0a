"""Env factories: classic control and Atari through the torch VecEnv contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.api import LabError, VecEnv
from lab.envs.atari import ATARI, AtariVecEnv, atari_ids, make_atari
from lab.envs.atari_backends import ALEVectorBackend, AtariSettings
from lab.envs.frame_stack import FrameStack
from lab.envs.gymnasium_env import CLASSIC_IDS, make_gymnasium
from lab.envs.scores import ATARI_REFERENCE_SCORES
from lab.run.discovery import load_lab


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_classic_envs_follow_the_vecenv_contract(env_id):
    env = make_gymnasium(env_id, num_envs=3, seed=0)
    assert isinstance(env, VecEnv)
    obs = env.reset()
    assert obs.shape == (3, *env.single_observation_space.shape) and obs.dtype == torch.float32
    space = env.single_action_space
    actions = torch.as_tensor(np.stack([space.sample() for _ in range(3)]))
    obs, reward, terminated, truncated, _ = env.step(actions)
    assert reward.dtype == torch.float32 and terminated.dtype == torch.bool and truncated.shape == (3,)
    env.close()


def test_classic_episodes_report_true_length_and_skip_autoreset_step():
    env = make_gymnasium("CartPole-v1", num_envs=2, seed=3)
    env.reset()
    lengths_seen = np.zeros(2, dtype=int)
    ended: list[int] = []
    after_done = np.zeros(2, dtype=bool)
    for _ in range(200):
        _, _, terminated, truncated, _ = env.step(torch.zeros(2, dtype=torch.long))
        done = (terminated | truncated).numpy()
        lengths_seen += ~after_done
        for i in np.flatnonzero(done):
            ended.append(int(lengths_seen[i]))
            lengths_seen[i] = 0
        after_done = done
    episodes = env.pop_episodes()
    # CartPole pays 1 per step, so the true return equals the length; always-left fails fast
    assert episodes and all(e.episode_return == e.length and 5 <= e.length < 100 for e in episodes)
    assert sorted(e.length for e in episodes) == sorted(ended)
    assert env.pop_episodes() == []


def test_same_seed_same_observations():
    a, b = make_gymnasium("Acrobot-v1", seed=7), make_gymnasium("Acrobot-v1", seed=7)
    assert torch.equal(a.reset(), b.reset())
    assert not torch.equal(a.reset(), make_gymnasium("Acrobot-v1", seed=8).reset())


def test_classic_rejects_options():
    with pytest.raises(LabError, match="takes only the env option asynchronous"):
        make_gymnasium("CartPole-v1", frame_stack=4)


def test_registry_resolves_ids_and_suggests_close_matches():
    registry = load_lab().registry
    assert registry.env_factory("CartPole-v1") is make_gymnasium
    assert registry.env_factory("ALE/Breakout-v5") is make_atari
    assert registry.env_factory("BreakoutNoFrameskip-v4") is make_atari
    assert registry.env_factory("LunarLander-v3") is make_gymnasium  # the catch-all for gymnasium ids
    with pytest.raises(LabError, match="did you mean: CartPole-v1"):
        registry.env_factory("CartPol-v1")("CartPol-v1")
    with pytest.raises(LabError, match="did you mean: ALE/Breakout-v5"):
        make_atari("ALE/Breakot-v5")


def test_atari_ids_cover_v5_and_noframeskip_games():
    ids = set(atari_ids())
    assert {"ALE/Breakout-v5", "ALE/Pong-v5", "BreakoutNoFrameskip-v4", "MsPacmanNoFrameskip-v4"} <= ids
    assert "CartPole-v1" not in ids and "ALE/Breakout-v4" not in ids


def test_atari_rejects_unknown_and_bad_options():
    with pytest.raises(LabError, match="valid options"):
        make_atari("ALE/Pong-v5", frame_stak=4)
    with pytest.raises(LabError, match="frame-stack must be >= 1"):
        make_atari("ALE/Pong-v5", frame_stack=0)


def test_frame_stack_pads_new_episodes_with_their_first_frame():
    stack = FrameStack(3)
    first = torch.tensor([[[1]], [[10]]], dtype=torch.uint8)  # 2 envs, 1x1 frames
    assert stack.reset(first)[:, :, 0, 0].tolist() == [[1, 1, 1], [10, 10, 10]]
    out = stack.push(torch.tensor([[[2]], [[11]]], dtype=torch.uint8))
    kept = out
    out = stack.push(torch.tensor([[[3]], [[50]]], dtype=torch.uint8), starts=torch.tensor([False, True]))
    assert out[:, :, 0, 0].tolist() == [[1, 2, 3], [50, 50, 50]]
    assert kept[:, :, 0, 0].tolist() == [[1, 1, 2], [10, 10, 11]]  # earlier obs are not mutated


class ScriptedBackend:
    """A fake emulator: scripted rewards and lives, frames that encode the step count."""

    def __init__(self, rewards, lives, game_over):
        self.num_envs = 1
        self.action_set = ["Action.NOOP", "Action.FIRE", "Action.LEFT"]
        self.rewards, self.lives, self.game_over = rewards, lives, game_over
        self.t = 0
        self.actions: list[int] = []

    def reset(self, seed):
        self.t = 0
        return np.zeros((1, 84, 84), np.uint8), np.array([3])

    def step(self, actions):
        self.actions.append(int(actions[0]))
        reward, lives, game_over = self.rewards[self.t], self.lives[self.t], self.game_over[self.t]
        self.t += 1
        frame = np.full((1, 84, 84), self.t, np.uint8)
        return frame, np.array([reward], np.int32), np.array([game_over]), np.array([False]), np.array([lives])

    def close(self):
        pass


def scripted_env(clip: bool, life_loss: bool) -> tuple[AtariVecEnv, ScriptedBackend]:
    #            step: 1  2  3  4  5  6  7  8
    backend = ScriptedBackend(
        rewards=[4, 0, 0, 7, 0, 0, 0, 0],
        lives=[3, 2, 2, 2, 1, 0, 3, 3],
        game_over=[False, False, False, False, False, True, False, False],
    )
    env = AtariVecEnv(backend, torch.device("cpu"), 0, frame_stack=2, clip_rewards=clip,
                      terminal_on_life_loss=life_loss, game="breakout")
    env.reset()
    return env, backend


def play(env: AtariVecEnv, steps: int):
    out = []
    for _ in range(steps):
        obs, r, term, _, _ = env.step(torch.tensor([2]))
        out.append((obs[0, :, 0, 0].tolist(), float(r[0]), bool(term[0])))
    return out


def test_atari_life_loss_terminal_and_clipping_keep_the_true_score():
    env, backend = scripted_env(clip=True, life_loss=True)
    steps = play(env, 8)
    rewards = [r for _, r, _ in steps]
    terms = [t for _, _, t in steps]
    # clipped learning rewards; the step after a life-loss terminal reports 0 and starts anew
    assert rewards == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert terms == [False, True, False, False, True, False, True, False]
    assert steps[2][0] == [3, 3]  # new learning episode: stack padded with its first frame
    assert steps[3][0] == [3, 4]
    # the step after a life loss plays FIRE (NOOP in this fake game without FIRE) instead of the agent's action
    assert backend.actions[2] == 0 and backend.actions[5] == 0 and backend.actions[3] == 2
    # the runner sees one whole game with the true score and all its game steps
    episodes = env.pop_episodes()
    assert [(e.episode_return, e.length) for e in episodes] == [(11.0, 6)]


def test_atari_without_learning_options_passes_raw_rewards():
    env, backend = scripted_env(clip=False, life_loss=False)
    steps = play(env, 8)
    assert [r for _, r, _ in steps] == [4.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0]
    assert [t for _, _, t in steps] == [False] * 5 + [True, False, False]
    assert backend.actions == [2] * 8
    assert steps[6][0] == [7, 7]  # the autoreset step starts a fresh stack
    assert [(e.episode_return, e.length) for e in env.pop_episodes()] == [(11.0, 6)]


def test_atari_breakout_smoke():
    env = make_atari("BreakoutNoFrameskip-v4", num_envs=2, seed=1)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.uint8
    assert env.single_action_space.n == 4 and env.frame_stack == 4
    gen = torch.Generator().manual_seed(0)
    terms = 0
    for _ in range(150):
        obs, reward, term, _, _ = env.step(torch.randint(0, 4, (2,), generator=gen))
        assert set(reward.unique().tolist()) <= {0.0, 1.0}
        terms += int(term.sum())
    assert terms >= 2  # life losses end learning episodes
    env.close()


def test_atari_evaluation_env_renders_and_plays_full_games():
    env = make_atari("ALE/Breakout-v5", num_envs=1, seed=0, evaluation=True, render=True)
    assert not env.clip_rewards and not env.terminal_on_life_loss
    env.reset()
    frame = env.render()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    env.close()


def test_gym_and_ale_backends_agree_on_frames_and_lives():
    """The render back end must show the agent the same preprocessing as the fast one."""
    from lab.envs.atari_backends import GymAtariBackend

    settings = AtariSettings("breakout", sticky_actions=0.0, noop_max=0)
    ale, gym_ = ALEVectorBackend(settings, 1), GymAtariBackend(settings, 1)
    fa, la = ale.reset(seed=0)
    fg, lg = gym_.reset(seed=0)
    assert la.tolist() == lg.tolist()
    for _ in range(30):
        fa, _, _, _, la = ale.step(np.array([1], np.int32))
        fg, _, _, _, lg = gym_.step(np.array([1], np.int32))
    assert la.tolist() == lg.tolist()
    assert np.abs(fa.astype(int) - fg.astype(int)).mean() < 2.0
    ale.close()
    gym_.close()


def test_reference_scores_cover_atari_57_with_real_rom_ids():
    from ale_py import roms

    assert len(ATARI_REFERENCE_SCORES) == 57
    assert set(ATARI_REFERENCE_SCORES) <= set(roms.get_all_rom_ids())
    assert ATARI.normalized_score("ALE/Breakout-v5", 30.5) == pytest.approx(1.0)
    assert ATARI.normalized_score("BreakoutNoFrameskip-v4", 1.7) == pytest.approx(0.0)
    assert ATARI.normalized_score("ALE/NotAGame-v5", 1.0) is None
