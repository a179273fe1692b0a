"""Life loss as a learning terminal: FIRE after a lost life, and never a done on an autoreset step.

Buffers drop the transition of the step after a done (NEXT_STEP autoreset); a done reported
there would make them store a transition spanning two games.
"""

from __future__ import annotations

from dataclasses import dataclass

import ale_py
import numpy as np
import pytest
import torch

from lab.envs.atari import AtariVecEnv, make_atari

A = ale_py.Action
BREAKOUT_ACTIONS = [A.NOOP, A.FIRE, A.RIGHT, A.LEFT]
AGENT_ACTION = 2  # neither NOOP nor FIRE, so an overridden action shows
FIRE = 1
START_LIVES = 5


@dataclass(frozen=True)
class Row:
    """What the back end returns for one step of one env."""

    raw: float
    lives: int
    terminated: bool = False
    truncated: bool = False


class ScriptedBackend:
    """A fake emulator with ALEVectorBackend's interface: each env plays its own script
    (back end autoreset steps written out), frames hold the step count, actions are recorded."""

    def __init__(self, scripts: list[list[Row]], action_set: list[ale_py.Action] = BREAKOUT_ACTIONS) -> None:
        self.num_envs = len(scripts)
        self.action_set = action_set
        self.scripts = scripts
        self.t = 0
        self.actions: list[list[int]] = []  # per step, per env

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        self.t = 0
        return np.zeros((self.num_envs, 84, 84), np.uint8), np.full(self.num_envs, START_LIVES)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        self.actions.append(actions.tolist())
        rows = [s[self.t] for s in self.scripts]
        self.t += 1
        frames = np.full((self.num_envs, 84, 84), self.t, np.uint8)
        return (
            frames,
            np.array([r.raw for r in rows], np.int32),
            np.array([r.terminated for r in rows]),
            np.array([r.truncated for r in rows]),
            np.array([r.lives for r in rows]),
        )

    def render(self) -> np.ndarray:
        raise RuntimeError("no frames to render")

    def close(self) -> None:
        pass


@dataclass
class Trace:
    """Per step (rows) and env (columns): what the learner saw."""

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    obs: list[torch.Tensor]
    episodes: list[tuple[float, int]]


def run(backend: ScriptedBackend, steps: int) -> Trace:
    env = AtariVecEnv(backend, torch.device("cpu"), seed=0, frame_stack=4, clip_rewards=True,
                      terminal_on_life_loss=True, game="breakout")
    env.reset()
    out = [env.step(torch.full((backend.num_envs,), AGENT_ACTION)) for _ in range(steps)]
    return Trace(
        reward=np.array([o[1].numpy() for o in out]),
        terminated=np.array([o[2].numpy() for o in out]),
        truncated=np.array([o[3].numpy() for o in out]),
        obs=[o[0] for o in out],
        episodes=[(e.episode_return, e.length) for e in env.pop_episodes()],
    )


def games(rows: list[Row]) -> list[tuple[float, int]]:
    """True (score, length) of each game the back end ended; its autoreset steps don't count."""
    done, score, length, out = False, 0.0, 0, []
    for r in rows:
        if not done:
            score, length = score + r.raw, length + 1
        done = r.terminated or r.truncated
        if done:
            out.append((score, length))
            score, length = 0.0, 0
    return out


def assert_contract(trace: Trace, scripts: list[list[Row]]) -> None:
    done = trace.terminated | trace.truncated
    after_done = np.zeros_like(done)
    after_done[1:] = done[:-1]
    assert not (done & after_done).any(), "done reported on an autoreset step"
    assert (trace.reward[after_done] == 0).all(), "learning reward on an autoreset step"
    assert sorted(trace.episodes) == sorted(g for s in scripts for g in games(s))


LIFE_LOSS_THEN_FIRE = [Row(1, 5), Row(0, 4), Row(3, 4), Row(1, 4), Row(0, 0, terminated=True), Row(0, 5)]
LIFE_LOST_DURING_LIFE_RESET = [Row(0, 4), Row(0, 3), Row(1, 3), Row(0, 2), Row(0, 2), Row(0, 0, terminated=True)]
GAME_OVER_DURING_LIFE_RESET = [Row(2, 5), Row(0, 4), Row(4, 3, terminated=True), Row(0, 5), Row(1, 5), Row(1, 5)]
TRUNCATED_DURING_LIFE_RESET = [Row(2, 5), Row(0, 4), Row(4, 4, truncated=True), Row(0, 5), Row(1, 5), Row(1, 5)]
NORMAL_GAME_OVER = [Row(1, 5), Row(5, 0, terminated=True), Row(0, 5), Row(1, 5), Row(0, 5), Row(0, 5)]
SCENARIOS = {
    "life_loss_then_fire": LIFE_LOSS_THEN_FIRE,
    "life_lost_during_life_reset": LIFE_LOST_DURING_LIFE_RESET,
    "game_over_during_life_reset": GAME_OVER_DURING_LIFE_RESET,
    "truncated_during_life_reset": TRUNCATED_DURING_LIFE_RESET,
    "normal_game_over": NORMAL_GAME_OVER,
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_keep_the_autoreset_contract_and_true_scores(name):
    script = SCENARIOS[name]
    assert_contract(run(ScriptedBackend([script]), len(script)), [script])


def test_all_scenarios_side_by_side_keep_the_contract():
    scripts = list(SCENARIOS.values())
    assert_contract(run(ScriptedBackend(scripts), len(scripts[0])), scripts)


def test_life_reset_presses_fire_and_pays_no_learning_reward():
    backend = ScriptedBackend([LIFE_LOSS_THEN_FIRE])
    trace = run(backend, 6)
    assert trace.terminated[:, 0].tolist() == [False, True, False, False, True, False]
    assert [a[0] for a in backend.actions] == [2, 2, FIRE, 2, 2, 2]  # game over: back end autoresets
    assert trace.reward[:, 0].tolist() == [1, 0, 0, 1, 0, 0]  # raw 3 on the life reset is not learnt
    assert trace.episodes == [(5.0, 5)]  # ...but counts toward the true score


def test_games_without_fire_reset_with_noop():
    pacman = [A.NOOP, A.UP, A.RIGHT, A.LEFT, A.DOWN]
    backend = ScriptedBackend([LIFE_LOSS_THEN_FIRE], action_set=pacman)
    run(backend, 3)
    assert backend.actions[2] == [0]


def test_life_lost_during_life_reset_is_absorbed():
    backend = ScriptedBackend([LIFE_LOST_DURING_LIFE_RESET])
    trace = run(backend, 6)
    assert trace.terminated[:, 0].tolist() == [True, False, False, True, False, True]
    assert trace.reward[:, 0].tolist() == [0, 0, 1, 0, 0, 0]
    assert [a[0] for a in backend.actions] == [2, FIRE, 2, 2, FIRE, 2]


@pytest.mark.parametrize("flag", ["terminated", "truncated"])
def test_game_over_during_life_reset_is_reported_on_the_back_end_autoreset_step(flag):
    script = GAME_OVER_DURING_LIFE_RESET if flag == "terminated" else TRUNCATED_DURING_LIFE_RESET
    backend = ScriptedBackend([script])
    trace = run(backend, 6)
    # step 2 loses a life; the game ends on step 3 (the life reset) and is reported on step 4
    life_loss = [False, True, False, False, False, False]
    game_end = [False, False, False, True, False, False]
    either = [a or b for a, b in zip(life_loss, game_end, strict=True)]
    assert trace.terminated[:, 0].tolist() == (either if flag == "terminated" else life_loss)
    assert trace.truncated[:, 0].tolist() == (game_end if flag == "truncated" else [False] * 6)
    assert trace.reward[:, 0].tolist() == [1, 0, 0, 0, 0, 1]
    # step 5 is a life reset again: action overridden, new frame stack from its frame
    assert [a[0] for a in backend.actions] == [2, 2, FIRE, 2, FIRE, 2]
    assert trace.obs[3][0, :, 0, 0].tolist() == [4] * 4  # the new game's first frame
    assert trace.obs[4][0, :, 0, 0].tolist() == [5] * 4
    assert trace.obs[5][0, :, 0, 0].tolist() == [5, 5, 5, 6]
    # the true score is recorded when the back end ended the game
    assert trace.episodes == [(6.0, 3)]


def test_normal_game_over_is_reported_at_once():
    backend = ScriptedBackend([NORMAL_GAME_OVER])
    trace = run(backend, 6)
    assert trace.terminated[:, 0].tolist() == [False, True, False, False, False, False]
    assert [a[0] for a in backend.actions] == [2] * 6
    assert trace.reward[:, 0].tolist() == [1, 1, 0, 1, 0, 0]
    assert trace.episodes == [(6.0, 2)]


def test_real_breakout_presses_fire_after_life_loss_and_never_reports_a_done_after_a_done():
    env = make_atari("ALE/Breakout-v5", num_envs=2, seed=0)
    fire = env.backend.action_set.index(A.FIRE)
    sent: list[np.ndarray] = []
    raws: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    backend_step = env.backend.step

    def spy(actions: np.ndarray) -> tuple[np.ndarray, ...]:
        out = backend_step(actions)
        sent.append(actions.copy())
        raws.append(out[1].copy())
        ends.append(out[2] | out[3])
        return out

    env.backend.step = spy
    env.reset()
    gen = torch.Generator().manual_seed(0)
    prev_done = np.zeros(2, dtype=bool)
    prev_life_loss = np.zeros(2, dtype=bool)
    fires_checked = 0
    for t in range(600):
        _, reward, term, trunc, info = env.step(torch.randint(0, 4, (2,), generator=gen))
        done = (term | trunc).numpy()
        assert not (done & prev_done).any(), f"done after a done at step {t}"
        assert (reward.numpy()[prev_done] == 0).all()
        assert (sent[t][prev_life_loss] == fire).all(), f"no FIRE after a life loss at step {t}"
        fires_checked += int(prev_life_loss.sum())
        prev_done, prev_life_loss = done, done & ~info["game_over"]
    assert fires_checked >= 4
    # true scores: the raw rewards of each game, autoreset steps excluded
    scores: list[float] = []
    for i in range(2):
        score, after_end = 0.0, False
        for raw, end in zip(raws, ends, strict=True):
            score += 0.0 if after_end else float(raw[i])
            if end[i]:
                scores.append(score)
                score = 0.0
            after_end = bool(end[i])
    assert sorted(e.episode_return for e in env.pop_episodes()) == sorted(scores)
    env.close()
