"""Atari by id with DeepMind preprocessing, as a torch `VecEnv` on the training device.

Training envs (evaluation=False): rewards clipped to their sign, life loss is a learning
terminal (options `clip_rewards`, `terminal_on_life_loss`), sticky actions as the id says
(0.25 for `ALE/*-v5`, 0 for `*NoFrameskip-v4`). Evaluation envs follow the evaluation
protocol: full games, raw rewards, sticky actions 0.25 (Machado et al. 2018; the option
`eval_sticky_actions`: the Atari 100k benchmark evaluates with none), 108k-frame cap. Either way
`pop_episodes()` reports the true score and length of whole games.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import torch

from lab.api import EnvFamily, Episode, LabError, check_ranges, option
from lab.api.errors import unknown
from lab.envs.atari_backends import ALEVectorBackend, AtariSettings, GymAtariBackend
from lab.envs.episodes import EpisodeStats
from lab.envs.frame_stack import FrameStack
from lab.envs.scores import ATARI_REFERENCE_SCORES

ATARI_PATTERNS: tuple[str, ...] = ("ALE/*-v5", "*NoFrameskip-v4")
RENDER_FPS = 15  # 60 Hz emulator / frame skip 4: real-time playback


@dataclass(frozen=True)
class AtariOptions:
    """The Atari family's settings: flags of every run on an Atari id (`--frame-stack 4`),
    passed by `ctx.make_env` to every Atari env it makes (`EnvFamily.options`)."""

    frame_stack: int = option(4, "frames per observation")
    terminal_on_life_loss: bool = option(True, "a lost life ends the learning episode (training envs only)")
    clip_rewards: bool = option(True, "clip rewards to their sign (training envs only)")
    sticky_actions: float | None = option(None, "repeat-action probability of the training envs (default: as the "
                                                "id says, 0.25 for ALE/*-v5, 0 for *NoFrameskip-v4)")
    eval_sticky_actions: float = option(0.25, "repeat-action probability of the evaluation envs (Machado et al. "
                                              "2018: 0.25; the Atari 100k benchmark evaluates with 0)")
    noop_max: int = option(30, "most no-op actions at the start of an episode")
    full_action_space: bool = option(False, "all 18 joystick actions instead of the game's minimal set")

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("frame_stack",), fraction=("sticky_actions", "eval_sticky_actions"),
                     non_negative=("noop_max",))

    @classmethod
    def parse(cls, env_id: str, options: dict[str, Any]) -> AtariOptions:
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(options) - allowed)
        if bad:
            raise LabError(
                f"unknown Atari env option(s) {', '.join(bad)} for {env_id}; "
                f"valid options: {', '.join(sorted(allowed))}"
            )
        try:
            return cls(**options)
        except ValueError as exc:
            raise LabError(str(exc)) from None


def reference_scores(env_id: str) -> tuple[float, float] | None:
    """(random, human) scores of the game behind an Atari id, where published."""
    try:
        game = atari_game(env_id)[0]
    except LabError:
        return None
    return ATARI_REFERENCE_SCORES.get(game)


# What every Atari id shares: presets keyed "atari", the options above, human-normalised scores.
ATARI = EnvFamily("atari", options=AtariOptions, reference_scores=reference_scores)


def atari_ids() -> list[str]:
    """Every gymnasium Atari id this factory makes (image observations only)."""
    gym.register_envs(ale_py)
    return [
        env_id
        for env_id, spec in gym.registry.items()
        if any(fnmatch.fnmatchcase(env_id, p) for p in ATARI_PATTERNS)
        and spec.kwargs.get("obs_type", "rgb") != "ram"
    ]


def atari_game(env_id: str) -> tuple[str, float]:
    """(ALE ROM id, sticky-action probability the id implies) or LabError with close matches."""
    ids = atari_ids()
    if env_id not in ids:
        raise unknown("Atari env", env_id, ids, "use ALE/<Game>-v5 or <Game>NoFrameskip-v4 (see `lab plugins`)")
    kwargs = gym.registry[env_id].kwargs
    return kwargs["game"], float(kwargs.get("repeat_action_probability", 0.0))


class AtariVecEnv:
    """Turns a back end's single frames and raw rewards into the lab's `VecEnv`.

    Life loss as a learning terminal follows the NEXT_STEP convention the buffers rely
    on: the step after it (the "life reset") ignores the agent's action and presses FIRE
    (NOOP in games without FIRE), reports reward 0 for learning, and starts a new frame
    stack; the game itself goes on, and its reward still counts toward the true score.
    FIRE as SB3's and CleanRL's FireResetEnv press it, so learning curves compare.

    No done is ever reported on an autoreset step: a life lost during the life reset is
    absorbed (as SB3's EpisodicLifeEnv does), and a game that ends during it is reported
    one step late, on the back end's own autoreset step (reward 0, the new game's first
    frame), and the step after that is a life reset again, so no stored transition spans
    two games. `pop_episodes` still records the game at the step it ended.
    `info` holds numpy arrays: `lives` and `game_over` (the back end ended a game).
    """

    def __init__(
        self,
        backend: ALEVectorBackend | GymAtariBackend,
        device: torch.device,
        seed: int,
        *,
        frame_stack: int,
        clip_rewards: bool,
        terminal_on_life_loss: bool,
        game: str,
    ) -> None:
        self.backend = backend
        self.game = game
        self.num_envs = backend.num_envs
        self.device = torch.device(device)
        self.frame_stack = frame_stack
        self.clip_rewards = clip_rewards
        self.terminal_on_life_loss = terminal_on_life_loss
        self.render_fps = RENDER_FPS
        self.single_observation_space = gym.spaces.Box(0, 255, (frame_stack, 84, 84), np.uint8)
        self.single_action_space = gym.spaces.Discrete(len(backend.action_set))
        actions = backend.action_set
        self._reset_action = actions.index(ale_py.Action.FIRE) if ale_py.Action.FIRE in actions else 0
        self._seed: int | None = seed
        self._stack = FrameStack(frame_stack)
        self._stats = EpisodeStats(self.num_envs)
        n = self.num_envs
        self._lives = np.zeros(n, dtype=np.int64)
        self._game_over = np.zeros(n, dtype=bool)  # next step is the back end's autoreset
        self._life_reset = np.zeros(n, dtype=bool)  # next step is our life-loss "reset"
        # games that ended during a life reset: their terminated/truncated is due next step
        self._deferred_term = np.zeros(n, dtype=bool)
        self._deferred_trunc = np.zeros(n, dtype=bool)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is None:
            seed, self._seed = self._seed, None
        frames, lives = self.backend.reset(seed)
        self._stats.reset()
        self._lives = lives.astype(np.int64)
        self._game_over[:] = False
        self._life_reset[:] = False
        self._deferred_term[:] = False
        self._deferred_trunc[:] = False
        return self._stack.reset(torch.from_numpy(frames).to(self.device))

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        acts = actions.detach().cpu().numpy().astype(np.int32).reshape(self.num_envs)
        acts[self._life_reset] = self._reset_action
        frames, raw, terminated, truncated, lives = self.backend.step(acts)
        raw = raw.astype(np.float32)
        game_over = terminated | truncated
        backend_reset = self._game_over
        life_reset = self._life_reset
        self._stats.update(raw, ~backend_reset, game_over)

        starts = backend_reset | life_reset
        life_lost = np.zeros_like(game_over)
        if self.terminal_on_life_loss:
            # a life lost during the life reset is absorbed: no done on an autoreset step
            life_lost = (lives < self._lives) & ~starts & ~game_over
        reward = np.where(starts, 0.0, np.sign(raw) if self.clip_rewards else raw).astype(np.float32)
        # a game ended during a life reset is reported on the back end's autoreset step next,
        # and the step after that is a life reset again
        term = (terminated & ~life_reset) | life_lost | self._deferred_term
        trunc = (truncated & ~life_reset) | self._deferred_trunc
        self._life_reset = life_lost | self._deferred_term | self._deferred_trunc
        self._deferred_term = terminated & life_reset
        self._deferred_trunc = truncated & life_reset
        self._lives = lives.astype(np.int64)
        self._game_over = game_over

        # one host-to-device copy for the small per-env arrays
        packed = torch.from_numpy(np.stack((reward, term, trunc)).astype(np.float32))
        packed = packed.to(self.device)
        frames_t = torch.from_numpy(frames).to(self.device)
        starts_t = torch.from_numpy(starts).to(self.device) if starts.any() else None
        obs = self._stack.push(frames_t, starts_t)
        info = {"lives": self._lives.copy(), "game_over": game_over.copy()}
        return obs, packed[0], packed[1].bool(), packed[2].bool(), info

    def pop_episodes(self) -> list[Episode]:
        return self._stats.pop()

    def render(self) -> np.ndarray:
        """RGB uint8 frame of env 0 (made with render=True)."""
        return self.backend.render()

    def close(self) -> None:
        self.backend.close()


def make_atari(
    env_id: str,
    *,
    num_envs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    evaluation: bool = False,
    render: bool = False,
    **options: Any,
) -> AtariVecEnv:
    """The env factory registered for `ALE/*-v5` and `*NoFrameskip-v4`."""
    game, id_sticky = atari_game(env_id)
    opts = AtariOptions.parse(env_id, options)
    if num_envs < 1:
        raise LabError(f"num_envs must be >= 1 (got {num_envs})")
    if evaluation:
        sticky = opts.eval_sticky_actions
    else:
        sticky = id_sticky if opts.sticky_actions is None else opts.sticky_actions
    settings = AtariSettings(game, sticky, opts.noop_max, opts.full_action_space)
    backend = GymAtariBackend(settings, num_envs) if render else ALEVectorBackend(settings, num_envs)
    return AtariVecEnv(
        backend,
        torch.device(device),
        seed,
        frame_stack=opts.frame_stack,
        clip_rewards=opts.clip_rewards and not evaluation,
        terminal_on_life_loss=opts.terminal_on_life_loss and not evaluation,
        game=game,
    )
