"""A one-file local plugin for the core tests: a toy dataset, algorithm and recording tracker.

The toy algorithm fits a linear classifier with SGD on minibatches drawn from a seeded
generator, so a run resumed from a checkpoint must end with exactly the same weights as an
uninterrupted run (model, optimizer, schedule and RNG state all have to survive).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from lab.api import Algorithm, Episode, ImageDataset, LabError, Tracker, hookimpl

__version__ = "0.0.7"


def toy_dataset(data_dir: Path, arg: str | None, **options) -> ImageDataset:
    if arg is not None:
        raise LabError(f"toy-data has no variant '{arg}'; use --data toy-data")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 2, 2), dtype=torch.uint8, generator=gen)
    labels = (images.flatten(1).float().mean(1) > 127).long()
    return ImageDataset("toy", images[:48], labels[:48], images[48:], labels[48:], ["low", "high"])


@dataclass
class ToyConfig:
    learning_rate: float = 0.1
    batch_size: int = 8
    sleep: float = 0.0  # seconds per step, so a test can interrupt a run mid-way
    fail_at: int | None = None  # raise at this step (tests the failed status)
    nan_at: int | None = None  # from this step on the weights are NaN (tests divergence)
    hidden: tuple[int, ...] = (4,)
    mode: Literal["plain", "fancy"] = "plain"
    decay: bool = True

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"--learning-rate must be positive, got {self.learning_rate}")


class Toy(Algorithm):
    """Linear classifier on the toy dataset (core tests only)."""

    name = "toy"
    kind = "supervised"
    Config = ToyConfig
    key_metric = "eval/accuracy"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"toy-data": {"batch_size": 4}}

    def __init__(self, config: ToyConfig, ctx) -> None:
        super().__init__(config, ctx)
        data = ctx.load_dataset()
        self.x = data.train_images.flatten(1).float() / 255
        self.y = data.train_labels
        self.test_x = data.test_images.flatten(1).float() / 255
        self.test_y = data.test_labels
        self.model = torch.nn.Linear(4, 2)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.learning_rate, momentum=0.9)
        self.gen = ctx.generator()
        self.horizon = ctx.total_steps

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.config.batch_size

    def train_step(self) -> dict[str, float]:
        if self.config.fail_at is not None and self.global_step >= self.config.fail_at:
            raise RuntimeError("toy failure for the tests")
        if self.config.sleep:
            time.sleep(self.config.sleep)
        if self.horizon == 0:  # --epochs budgets are known after __init__
            self.horizon = self.ctx.total_steps
        idx = torch.randint(0, len(self.x), (self.config.batch_size,), generator=self.gen)
        loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
        self.optimizer.zero_grad()
        loss.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * (1 - self.global_step / max(self.horizon, 1))
        self.optimizer.step()
        if self.config.nan_at is not None and self.global_step >= self.config.nan_at:
            with torch.no_grad():
                self.model.weight.fill_(float("nan"))
        self.global_step += 1
        return {"train/loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            acc = (self.model(self.test_x).argmax(1) == self.test_y).float().mean().item()
        return {"eval/accuracy": acc}

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "gen": self.gen.get_state(), "horizon": self.horizon}

    def load_state_dict(self, state) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])
        self.horizon = state["horizon"]


class ToyCorridor:
    """A plugin-registered env (the contract test runs on it too): walk right (action 1) to
    the end of a 5-cell corridor for reward 1; 12 steps at most. NEXT_STEP autoreset, no
    state_dict: a resumed run restarts it."""

    LENGTH, LIMIT = 5, 12

    def __init__(self, num_envs: int, seed: int, device: torch.device) -> None:
        import gymnasium as gym

        self.num_envs, self.device = num_envs, torch.device(device)
        self.single_observation_space = gym.spaces.Box(0.0, float(self.LENGTH), (1,))
        self.single_action_space = gym.spaces.Discrete(2)
        self.position = torch.zeros(num_envs)
        self.steps = torch.zeros(num_envs, dtype=torch.long)
        self.after_done = torch.zeros(num_envs, dtype=torch.bool)
        self.returns, self.finished = torch.zeros(num_envs), []

    def reset(self, seed=None):
        self.position.zero_(), self.steps.zero_(), self.after_done.zero_(), self.returns.zero_()
        return self.position.unsqueeze(1).clone()

    def step(self, actions):
        moving = ~self.after_done
        self.position = torch.where(moving, (self.position + actions.float() * 2 - 1).clamp(0, self.LENGTH), 0.0)
        self.steps = torch.where(moving, self.steps + 1, 0)
        terminated = moving & (self.position == self.LENGTH)
        truncated = moving & ~terminated & (self.steps >= self.LIMIT)
        reward = terminated.float()
        self.returns += reward
        for i in (terminated | truncated).nonzero().flatten().tolist():
            self.finished.append(Episode(float(self.returns[i]), int(self.steps[i])))
            self.returns[i] = 0.0
        self.after_done = terminated | truncated
        return self.position.unsqueeze(1).clone(), reward, terminated, truncated, {}

    def pop_episodes(self):
        done, self.finished = self.finished, []
        return done

    def close(self) -> None:
        pass


def toy_corridor(env_id, *, num_envs=1, seed=0, device="cpu", evaluation=False, render=False, **options):
    if options:
        raise LabError(f"{env_id} takes no options")
    return ToyCorridor(num_envs, seed, device)


class RecordingTracker(Tracker):
    """Writes every tracker call to recorded.jsonl in the run dir, so tests see what trackers get."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, **row) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def log(self, metrics, step):
        self._write(call="log", step=step, metrics=metrics)

    def log_image(self, key, path, step):
        self._write(call="image", key=key, path=str(path), step=step)

    def log_video(self, key, path, step):
        self._write(call="video", key=key, path=str(path), step=step)

    def finish(self, summary):
        self._write(call="finish", status=summary["status"])


@hookimpl
def register_datasets(register) -> None:
    register("toy-data", toy_dataset, description="64 random 2x2 images")


@hookimpl
def register_algorithms(register) -> None:
    register(Toy)


@hookimpl
def register_envs(register) -> None:
    register("ToyCorridor-v0", toy_corridor, description="a 5-cell corridor (tests)")


@hookimpl
def register_trackers(register) -> None:
    register("recording", lambda run: RecordingTracker(run.run_dir / "recorded.jsonl"))


@hookimpl
def on_run_end(run, summary) -> None:
    (run.run_dir / "on_run_end.json").write_text(json.dumps({"status": summary["status"]}))
