"""Who simulates a gymnasium id: gymnasium's Python envs or EnvPool's C++ ones (`--env-backend`).

`gymnasium` steps the reference implementation, and its classic-control and MuJoCo envs
can be saved with checkpoints (`lab.envs.snapshot`), so a resumed run continues the same
episodes. `envpool` (`pip install 'arcade-lab[envpool]'`, Python 3.11) steps the same
tasks in C++ threads, but its envs cannot be saved: a resumed run restarts them from a
new seed. Evaluation and videos use gymnasium either way (`lab.envs.envpool_env`).

`auto` is gymnasium for every id. Random-action steps/s through the lab's torch wrappers
(median of 3 alternating runs of 3 s; EnvPool with its default threads), measured on a
2-core machine busy with other training runs (load 3-5), so the numbers are rough:

    task             envs  gymnasium  envpool
    CartPole-v1         1      7,500    5,300
    CartPole-v1         8     30,000   35,000
    HalfCheetah-v5      1      4,300    3,300
    HalfCheetah-v5      8      7,200   11,600
    LunarLander-v3     16     17,000   36,000

EnvPool wins only with many envs per run: ~1.6x for 8 MuJoCo envs, ~2x for 16 Box2D
envs, nothing for one env. In a whole run, PPO on LunarLander-v3 (its preset: 16 envs)
reached 32,768 steps in a median 14.5 s with EnvPool against 21 s with gymnasium (4
alternating runs each, same busy machine). `auto` still picks gymnasium everywhere:
- the MuJoCo presets train on one env, where EnvPool gains nothing and loses exact resume;
- Box2D envs cannot be saved by either backend, so `--env-backend envpool` costs them
  nothing, but an `auto` that picked EnvPool wherever it is installed would make one
  config simulate a different env (other episodes from the same seed) on a machine
  without it: `auto` keeps a run reproducible anywhere, and the speed is one flag away.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.api import EnvFamily, LabError, option

BACKENDS: tuple[str, ...] = ("auto", "gymnasium", "envpool")
AUTO = "gymnasium"  # see the module docstring


@dataclass(frozen=True)
class GymnasiumOptions:
    """The gymnasium family's settings: flags of every run on a gymnasium id (`--env-backend`)."""

    env_backend: str = option("auto", "who simulates the env: gymnasium (resumes exactly), envpool (C++ threads, "
                                      "restarts envs on resume) or auto (gymnasium)")

    def __post_init__(self) -> None:
        if self.env_backend not in BACKENDS:
            raise ValueError(f"--env-backend must be one of {', '.join(BACKENDS)}, got {self.env_backend!r}")


# Classic control, Box2D, MuJoCo and any other gymnasium id; presets may be keyed "gymnasium".
GYMNASIUM = EnvFamily("gymnasium", options=GymnasiumOptions)


def choose_backend(env_backend: str) -> str:
    """`gymnasium` or `envpool` for a `--env-backend` value; LabError for an unknown one."""
    try:
        GymnasiumOptions(env_backend)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    return AUTO if env_backend == "auto" else env_backend
