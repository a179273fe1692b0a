"""`--env-backend envpool`: EnvPool's envs keep the VecEnv contract and simulate the same
tasks as gymnasium's (`envs/envpool_env.py`, `envs/backends.py`)."""

from __future__ import annotations

import importlib.util
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from conftest import runs_dir
from lab.api import LabError, TrainingEnv
from lab.cli import main
from lab.envcheck import check_env_factory, check_steps
from lab.envs.envpool_env import EnvPoolVecEnv, make_envpool
from lab.envs.gymnasium_env import make_gymnasium

envpool = pytest.importorskip("envpool", reason="EnvPool is not installed: pip install 'arcade-lab[envpool]' "
                                                "(Python 3.11)")
needs_mujoco = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None,
                                  reason="gymnasium's MuJoCo envs need pip install 'arcade-lab[mujoco]'")
TASKS = ["CartPole-v1", "Pendulum-v1", pytest.param("HalfCheetah-v5", marks=needs_mujoco)]


def both(env_id: str, num_envs: int, seed: int = 0):
    return [make_gymnasium(env_id, num_envs=num_envs, seed=seed, env_backend=b) for b in ("gymnasium", "envpool")]


@pytest.mark.parametrize("env_id", TASKS)
def test_both_backends_have_the_same_spaces_and_observations(env_id):
    gym_env, pool_env = both(env_id, 2)
    assert isinstance(pool_env, EnvPoolVecEnv) and not isinstance(gym_env, EnvPoolVecEnv)
    for env_a, env_b in ((gym_env.single_observation_space, pool_env.single_observation_space),
                         (gym_env.single_action_space, pool_env.single_action_space)):
        assert type(env_a) is type(env_b)
        if isinstance(env_a, gym.spaces.Box):  # MuJoCo actions: float32 in gymnasium, float64 in EnvPool
            assert env_a.shape == env_b.shape
            assert np.array_equal(env_a.low, env_b.low) and np.array_equal(env_a.high, env_b.high)
        else:
            assert env_a == env_b
    obs_a, obs_b = gym_env.reset(), pool_env.reset()
    assert obs_a.shape == obs_b.shape and obs_a.dtype == obs_b.dtype == torch.float32
    gym_env.close()
    pool_env.close()


def _gym_env_in_state_of(env_id: str, obs: np.ndarray) -> gym.Env:
    """A gymnasium env put in the state EnvPool's observation `obs` shows (these tasks'
    observations determine their state; HalfCheetah's leave out x, which moves nothing)."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    if env_id == "CartPole-v1":
        env.state = obs.astype(np.float64)
    elif env_id == "Pendulum-v1":
        env.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
    else:
        env.set_state(np.concatenate([[0.0], obs[:8]]), obs[8:])
    return env


@pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32")  # EnvPool's Box bounds
@pytest.mark.parametrize("env_id, steps", [("CartPole-v1", 200), ("Pendulum-v1", 199),
                                           pytest.param("HalfCheetah-v5", 20, marks=needs_mujoco)])
def test_envpool_steps_the_same_dynamics_as_gymnasium(env_id, steps):
    """From the same state and actions both simulators agree to float32 rounding (HalfCheetah
    only for a few steps: contacts amplify rounding differences chaotically after ~50)."""
    pool = envpool.make(env_id, env_type="gymnasium", num_envs=1, seed=3)
    obs, _ = pool.reset()
    env = _gym_env_in_state_of(env_id, obs[0])
    space = env.action_space
    space.seed(0)
    for t in range(steps):
        action = space.sample()
        p_obs, p_reward, p_term, _, _ = pool.step(np.asarray(action)[None])
        g_obs, g_reward, g_term, _, _ = env.step(action)
        assert np.allclose(p_obs[0], g_obs, atol=1e-4) and np.isclose(p_reward[0], g_reward, atol=1e-4), t
        assert p_term[0] == g_term, t
        if g_term:
            break
    pool.close()
    env.close()


def _returns(env, policy) -> np.ndarray:
    """The true return of each env's first episode under `policy`."""
    obs, ended = env.reset(), np.zeros(env.num_envs, dtype=bool)
    firsts = {}
    while not ended.all():
        obs, _, terminated, truncated, _ = env.step(policy(obs))
        ended |= (terminated | truncated).numpy()
        for episode in env.pop_episodes():
            firsts.setdefault(len(firsts), episode.episode_return)
    env.close()
    return np.array(list(firsts.values())[:env.num_envs])


def test_a_balancing_cartpole_policy_scores_the_time_limit_on_both():
    """Deterministic dynamics, the same 500-step limit: every episode scores exactly 500."""
    gains = torch.tensor([0.5, 1.0, 10.0, 3.0])
    for env in both("CartPole-v1", 16):
        assert np.array_equal(_returns(env, lambda obs: (obs @ gains > 0).long()), np.full(16, 500.0))


@pytest.mark.parametrize("env_id, num_envs", [("CartPole-v1", 64), ("Pendulum-v1", 32),
                                              pytest.param("HalfCheetah-v5", 8, marks=needs_mujoco)])
def test_a_fixed_policy_scores_alike_on_both(env_id, num_envs):
    """The backends draw initial states from different RNGs, so returns match only in
    distribution: the means must agree within 4 standard errors of their difference (a
    true difference of 0 fails this less than once in 10,000; the seeds are fixed, so the
    test is deterministic, and the margin catches a changed task, a different time limit or
    a reward left out: each would move the mean by many standard errors)."""
    envs = both(env_id, num_envs)
    space = envs[0].single_action_space
    if isinstance(space, gym.spaces.Discrete):
        def policy(obs):
            return torch.zeros(len(obs), dtype=torch.long)  # always left: ~9 steps
    else:
        shape = (envs[0].single_observation_space.shape[0], space.shape[0])
        weights = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, shape).astype(np.float32))

        def policy(obs):
            return torch.tanh(obs @ weights) * float(space.high[0])
    returns = [_returns(env, policy) for env in envs]
    assert all(len(r) == num_envs for r in returns)
    tolerance = 4 * np.sqrt(sum(r.var(ddof=1) / len(r) for r in returns))
    assert abs(returns[0].mean() - returns[1].mean()) <= tolerance, (returns[0].mean(), returns[1].mean(), tolerance)


def test_envpool_autoreset_is_next_step():
    """The step after a done ignores the action, pays 0 and starts a new episode (CartPole
    starts within +-0.05 in every coordinate)."""
    a, b = (make_envpool("CartPole-v1", num_envs=2, seed=5) for _ in range(2))
    a.reset(), b.reset()
    left = torch.zeros(2, dtype=torch.long)
    for _ in range(100):
        _, _, terminated, truncated, _ = a.step(left)
        b.step(left)
        if (terminated | truncated)[0]:
            break
    else:
        pytest.fail("always-left CartPole never ended an episode")
    obs_a, reward_a, term_a, trunc_a, _ = a.step(left)
    obs_b, reward_b, _, _, _ = b.step(torch.tensor([1, 0]))  # another action for env 0: ignored
    assert torch.equal(obs_a[0], obs_b[0]) and obs_a[0].abs().max() <= 0.05
    assert reward_a[0] == reward_b[0] == 0 and not term_a[0] and not trunc_a[0]
    a.close()
    b.close()


def test_envpool_episodes_are_the_summed_raw_rewards():
    env = make_envpool("Pendulum-v1", num_envs=2, seed=0)
    summed = check_steps(env, 450, name="envpool Pendulum-v1")  # contract checks on every step
    reported = [(e.episode_return, e.length) for e in env.pop_episodes()]
    assert len(summed) == 4 and np.allclose(reported, summed) and {n for _, n in reported} == {200}
    env.close()


def test_the_envpool_factory_keeps_the_contract():
    check_env_factory(make_envpool, "CartPole-v1")
    check_env_factory(partial(make_gymnasium, env_backend="envpool"), "Pendulum-v1", steps=250)


def test_seeding_matches_gymnasiums_rule_and_seeded_resets_repeat():
    pair, single = make_envpool("Acrobot-v1", num_envs=2, seed=0), make_envpool("Acrobot-v1", num_envs=1, seed=1)
    assert torch.equal(pair.reset()[1], single.reset()[0]), "env i is seeded with seed + i"
    actions = torch.tensor([1, 2])
    runs = []
    for seed in (7, 7, 8):
        first = pair.reset(seed=seed)
        runs.append(torch.cat([first, *(pair.step(actions)[0] for _ in range(20))]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    pair.close()
    single.close()


def test_envpool_envs_are_never_saved_so_a_resume_restarts_them():
    env = TrainingEnv(make_envpool("CartPole-v1", num_envs=2, seed=0), lambda step: 100 + step)
    env.reset()
    env.step(torch.zeros(2, dtype=torch.long))
    state = env.state_dict()
    assert state["env"] is None
    env.load_state_dict(state, step=5)
    assert env.restarted
    assert torch.equal(env.obs, make_envpool("CartPole-v1", num_envs=2, seed=105).reset())
    env.close()


def test_evaluation_and_video_envs_are_gymnasiums():
    evaluation = make_envpool("CartPole-v1", num_envs=2, seed=0, evaluation=True)
    video = make_envpool("CartPole-v1", seed=0, render=True)
    assert not isinstance(evaluation, EnvPoolVecEnv) and not isinstance(video, EnvPoolVecEnv)
    video.reset()
    frame = video.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    evaluation.close()
    video.close()


def test_asynchronous_is_accepted_and_other_options_refused():
    make_envpool("CartPole-v1", asynchronous=True).close()  # onpolicy's async_envs: EnvPool's threads already are
    with pytest.raises(LabError, match="takes only the env option asynchronous"):
        make_envpool("CartPole-v1", frame_stack=4)


@pytest.mark.parametrize("env_id, message", [
    ("FrozenLake-v1", "EnvPool has no FrozenLake-v1"),
    ("HalfCheetah-v2", "did you mean: HalfCheetah-v5"),
])
def test_ids_envpool_lacks_say_to_use_gymnasium(env_id, message):
    with pytest.raises(LabError, match="use --env-backend gymnasium") as caught:
        make_gymnasium(env_id, env_backend="envpool")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_envpool_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "envpool", None)  # `import envpool` now fails
    with pytest.raises(LabError, match=r"pip install 'arcade-lab\[envpool\]'"):
        make_gymnasium("Acrobot-v1", env_backend="envpool")


def test_ppo_trains_on_envpool_and_config_yaml_records_the_backend():
    assert main(["train", "ppo", "--env", "CartPole-v1", "--env-backend", "envpool", "--steps", "256",
                 "--name", "pool"]) == 0
    config = yaml.safe_load((runs_dir() / "pool" / "config.yaml").read_text())
    assert config["run"]["env_backend"] == "envpool"


def test_an_unknown_backend_is_one_line_exit_2(capsys):
    assert main(["train", "ppo", "--env", "CartPole-v1", "--env-backend", "pool", "--steps", "256"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--env-backend must be one of auto, gymnasium, envpool" in err, err
