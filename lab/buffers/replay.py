"""Experience replay that stores each frame once and lives on the training device.

Layout (Dopamine's design, extended to vector envs and truncation): every `add` writes
one slot per env in a circular buffer of `capacity // num_envs` slots. A slot holds the
newest frame of the observation, the action, the reward and the end flags. The stack of
`frame_stack` frames is rebuilt at sample time from the slots before it, clamped at the
episode's first slot (padded the way the acting side pads after a reset), so an Atari
transition costs one 84x84 frame instead of two 4x84x84 stacks.

Under gymnasium's NEXT_STEP autoreset the step after an episode ends carries the
episode's final observation and no real transition. The buffer keeps that slot, marked
invalid: its frame is the `next_observation` that a truncated episode bootstraps from,
and it is never sampled. Because every env advances one slot per `add`, one Python
integer is the cursor for all envs and neither `add` nor `sample` waits on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import torch

from lab.api import LabError
from lab.api.state import rows_state
from lab.buffers.boundaries import step_flags
from lab.buffers.sumtree import SumTree
from lab.memory import allocating, tensor_bytes

STATE_VERSION = 2  # 2: slot contents under "rows" (chunked in checkpoints); 1 is still read


class ReplayBatch(NamedTuple):
    """A sampled batch, all tensors on the buffer's device.

    rewards: n-step discounted sum up to the end of the episode or n steps.
    dones: 1.0 when the episode terminated within those steps (truncation bootstraps).
    discounts: gamma**k for the k steps actually summed (multiply the bootstrap value).
    weights: importance-sampling weights (ones without prioritized replay).
    indices: pass to `update_priorities`.
    With n_step=1, observations and next_observations are two overlapping views of one
    gathered tensor: read them, do not write into them.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


def replay_bytes(slots: int, num_envs: int, frame_shape: tuple[int, ...], observation_dtype: torch.dtype,
                 action_shape: tuple[int, ...], action_dtype: torch.dtype, prioritized: bool) -> int:
    """The bytes a `ReplayBuffer` allocates: per slot and env a frame, an action, a float32
    reward and four one-byte flags; per slot a count; with prioritized replay its sum tree."""
    cells = (slots, num_envs)
    nbytes = (tensor_bytes(cells + tuple(frame_shape), observation_dtype)
              + tensor_bytes(cells + tuple(action_shape), action_dtype)
              + tensor_bytes(cells, torch.float32) + 4 * tensor_bytes(cells, torch.bool)
              + tensor_bytes((slots,), torch.int64) + tensor_bytes((num_envs, *frame_shape), observation_dtype))
    if prioritized:
        nbytes += 2 * (1 << max(0, (slots * num_envs - 1).bit_length())) * torch.float64.itemsize
    return nbytes


class ReplayBuffer:
    """Circular replay for `num_envs` envs; `capacity` counts transitions over all envs.

    frame_stack > 1: observations are (frame_stack, *frame) stacks whose last entry is the
    newest frame; only that frame is stored. frame_stack == 1: observations are stored as
    given. stack_padding says how the acting side fills a stack after a reset: "reset"
    repeats the first frame (gymnasium FrameStackObservation), "zero" uses zeros
    (SB3 VecFrameStack).

    The buffer relies on the acting loop's continuity: the `obs` of one `add` is the
    `next_obs` of the previous one. If the envs restart outside that loop (a resumed run),
    call `end_episodes()` (`load_state_dict` does by default). The first `add` of each env
    must be the first observation of an episode.
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: tuple[int, ...],
        num_envs: int,
        device: torch.device | str,
        frame_stack: int = 1,
        action_shape: tuple[int, ...] = (),
        action_dtype: torch.dtype = torch.int64,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        priority_eps: float = 1e-6,
        generator: torch.Generator | None = None,
        observation_dtype: torch.dtype = torch.uint8,
        stack_padding: Literal["reset", "zero"] = "reset",
    ) -> None:
        observation_shape = tuple(observation_shape)
        if frame_stack > 1 and (len(observation_shape) < 2 or observation_shape[0] != frame_stack):
            raise LabError(
                f"observation shape {observation_shape} does not start with the frame stack "
                f"{frame_stack}; pass frame_stack=1 or stacked observations"
            )
        if stack_padding not in ("reset", "zero"):
            raise LabError(f"unknown stack_padding '{stack_padding}'; use 'reset' or 'zero'")
        if n_step < 1 or num_envs < 1:
            raise LabError("n_step and num_envs must be at least 1")
        slots = capacity // num_envs
        if slots < n_step + frame_stack + 1:
            raise LabError(
                f"replay capacity {capacity} is too small for {num_envs} envs, n_step={n_step} "
                f"and frame_stack={frame_stack}; use at least {(n_step + frame_stack + 1) * num_envs}"
            )
        self.device = torch.device(device)
        self.capacity = slots * num_envs
        self.slots = slots
        self.num_envs = num_envs
        self.observation_shape = observation_shape
        self.frame_stack = frame_stack
        self.frame_shape = observation_shape[1:] if frame_stack > 1 else observation_shape
        self.observation_dtype = observation_dtype
        self.action_shape = tuple(action_shape)
        self.action_dtype = action_dtype
        self.n_step = n_step
        self.gamma = gamma
        self.prioritized = prioritized
        self.alpha = alpha
        self.beta = beta
        self.priority_eps = priority_eps
        self.zero_padding = stack_padding == "zero"
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.generator = generator

        shape, dev = (slots, num_envs), self.device
        nbytes = replay_bytes(slots, num_envs, self.frame_shape, observation_dtype, self.action_shape, action_dtype,
                              prioritized)
        with allocating(f"a replay of {self.capacity:,} transitions", nbytes, dev,
                        "lower --buffer-size (the transitions the replay keeps)"):
            self.frames = torch.zeros(shape + self.frame_shape, dtype=observation_dtype, device=dev)
            self.actions = torch.zeros(shape + self.action_shape, dtype=action_dtype, device=dev)
            self.rewards = torch.zeros(shape, dtype=torch.float32, device=dev)
            self.valid = torch.zeros(shape, dtype=torch.bool, device=dev)
            self.terminated = torch.zeros(shape, dtype=torch.bool, device=dev)
            self.truncated = torch.zeros(shape, dtype=torch.bool, device=dev)
            # Slots since the episode's first one, clamped at frame_stack: enough to rebuild a
            # stack, or the frame_stack + 1 window that holds a stack and its successor.
            self.since_start = torch.zeros(shape, dtype=torch.uint8, device=dev)
            # cumulative_valid[slot of step a] = valid transitions in steps 0..a that have
            # become sampleable; lets uniform sampling skip invalid slots exactly.
            self.cumulative_valid = torch.zeros(slots, dtype=torch.int64, device=dev)
            self._valid_total = torch.zeros((), dtype=torch.int64, device=dev)
            self._done_prev = torch.zeros(num_envs, dtype=torch.bool, device=dev)
            self._start_next = torch.ones(num_envs, dtype=torch.bool, device=dev)
            self._frame_rows = self.frames.view(-1, *self.frame_shape)  # flat (slot * num_envs + env) rows
            self._last_next_frame = torch.zeros((num_envs, *self.frame_shape), dtype=observation_dtype, device=dev)
            if prioritized:
                self.tree = SumTree(slots * num_envs, dev)
        self._steps = 0  # adds so far (the absolute step of the next slot)
        self._since_cap = frame_stack  # enough for a window of frame_stack + 1 frames
        self._stack_offsets = torch.arange(frame_stack - 1, -1, -1, device=dev)
        self._window_offsets = torch.arange(frame_stack, -1, -1, device=dev)
        self._nstep_offsets = torch.arange(n_step, device=dev)
        self._gamma_powers = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=dev)
        self._env_ids = torch.arange(num_envs, device=dev)
        if prioritized:
            self._max_priority = torch.ones((), dtype=torch.float64, device=dev)

    # ------------------------------------------------------------------ adding

    def __len__(self) -> int:
        """Transitions stored (including the few autoreset slots awaiting overwrite)."""
        return min(self._steps, self.slots) * self.num_envs

    @property
    def storage_bytes(self) -> int:
        """Bytes of device memory the buffer allocated."""
        tensors = [self.frames, self.actions, self.rewards, self.valid, self.terminated,
                   self.truncated, self.since_start, self.cumulative_valid]
        if self.prioritized:
            tensors.append(self.tree.tree)
        return sum(t.numel() * t.element_size() for t in tensors)

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> None:
        """Record one vector step of all envs (tensors with a leading num_envs dimension).

        Only the newest frame of `obs` is stored; `next_obs` is the next call's `obs` (at an
        episode end, the autoreset step's), so its frame is kept aside only until then, for
        `end_episodes`.
        """
        obs = self._as_device(obs, self.observation_shape, "obs")
        next_obs = self._as_device(next_obs, self.observation_shape, "next_obs")
        if obs.dtype != self.observation_dtype:
            raise TypeError(f"obs dtype {obs.dtype} != buffer observation_dtype {self.observation_dtype}")
        actions = self._as_device(actions, self.action_shape, "actions")
        rewards = self._as_device(rewards, (), "rewards")
        terminated = self._as_device(terminated, (), "terminated").bool()
        truncated = self._as_device(truncated, (), "truncated").bool()
        valid, terminated, truncated, self._done_prev = step_flags(self._done_prev, terminated, truncated)
        self._write(self._newest(obs), actions, rewards, terminated, truncated, valid)
        self._start_next = ~valid
        self._last_next_frame.copy_(self._newest(next_obs))

    def _newest(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, -1] if self.frame_stack > 1 else obs

    def _write(
        self,
        frame: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        valid: torch.Tensor,
    ) -> None:
        """Fill the next slot of every env and advance the shared cursor."""
        slot = self._steps % self.slots
        if self._steps > 0:
            previous = self.since_start[(self._steps - 1) % self.slots].long()
            since = torch.where(self._start_next, 0, (previous + 1).clamp_max(self._since_cap))
        else:
            since = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.frames[slot] = frame
        self.actions[slot] = actions.to(self.action_dtype)
        self.rewards[slot] = torch.where(valid, rewards.float(), 0.0)
        self.valid[slot] = valid
        self.terminated[slot] = terminated
        self.truncated[slot] = truncated
        self.since_start[slot] = since.to(torch.uint8)
        self._steps += 1
        self._advance_sampleable()

    def _advance_sampleable(self) -> None:
        """Admit the step whose n-step window just completed; retire the oldest for PER."""
        entering = self._steps - 1 - self.n_step
        if entering >= 0:
            slot = entering % self.slots
            self._valid_total += self.valid[slot].sum()
            self.cumulative_valid[slot] = self._valid_total
        if not self.prioritized:
            return
        leaves, values = [], []
        if entering >= 0:
            slot = entering % self.slots
            leaves.append(slot * self.num_envs + self._env_ids)
            values.append(torch.where(self.valid[slot], self._max_priority, 0.0))
        leaving = self._steps - self.slots + self.frame_stack - 2
        if leaving >= 0:
            slot = leaving % self.slots
            leaves.append(slot * self.num_envs + self._env_ids)
            values.append(torch.zeros(self.num_envs, dtype=torch.float64, device=self.device))
        if leaves:
            self.tree.set(torch.cat(leaves), torch.cat(values))

    def end_episodes(self) -> None:
        """Close every env's episode because the envs restart from a reset (a resumed run).

        An open episode's last transition becomes truncated, and one slot is written for
        every env as if it were the autoreset step: it holds the last `next_obs` frame that
        a truncated (or terminated) last transition points to, and is never sampled. The
        next `add` starts new episodes. No stored transition is lost.
        """
        if self._steps == 0:
            return
        open_episode = ~self._done_prev & ~self._start_next
        self.truncated[(self._steps - 1) % self.slots] |= open_episode
        never = torch.zeros_like(open_episode)
        actions = torch.zeros((self.num_envs, *self.action_shape), dtype=self.action_dtype, device=self.device)
        rewards = torch.zeros(self.num_envs, device=self.device)
        self._write(self._last_next_frame, actions, rewards, never, never, never)
        self._done_prev = never.clone()
        self._start_next = torch.ones_like(open_episode)

    def _as_device(self, x: Any, trailing: tuple[int, ...], name: str) -> torch.Tensor:
        x = torch.as_tensor(x, device=self.device)
        expected = (self.num_envs, *trailing)
        if tuple(x.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {expected}")
        return x

    # ---------------------------------------------------------------- sampling

    def _sample_range(self) -> tuple[int, int]:
        """Absolute steps [lo, hi] whose stack and n-step window are fully stored."""
        hi = self._steps - 1 - self.n_step
        lo = max(0, self._steps - self.slots + self.frame_stack - 1)
        if hi < lo:
            raise LabError(
                f"cannot sample: the replay buffer holds {len(self)} transitions; add at least "
                f"{self.n_step + 1} steps first (start learning later)"
            )
        return lo, hi

    def _count(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid transitions before step lo, valid transitions in [lo, hi]) as device scalars."""
        base = self.cumulative_valid[(lo - 1) % self.slots] if lo > 0 else self._valid_total.new_zeros(())
        return base, self.cumulative_valid[hi % self.slots] - base

    def num_sampleable(self) -> int:
        """How many transitions `sample` chooses from (waits for the device)."""
        try:
            lo, hi = self._sample_range()
        except LabError:
            return 0
        return int(self._count(lo, hi)[1])

    def sample(self, batch_size: int, beta: float | None = None) -> ReplayBatch:
        """Sample `batch_size` transitions (uniform, or proportional to priority, with the
        importance-sampling exponent `beta`: the buffer's own when None)."""
        beta = self.beta if beta is None else beta
        lo, hi = self._sample_range()
        base, count = self._count(lo, hi)
        if self.device.type == "cpu" and int(count) == 0:
            raise LabError("cannot sample: no complete transition stored yet; add more steps first")
        if self.prioritized:
            total = self.tree.total
            strata = torch.arange(batch_size, device=self.device, dtype=torch.float64)
            mass = (strata + torch.rand(batch_size, generator=self.generator, device=self.device,
                                        dtype=torch.float64)) * (total / batch_size)
            leaf = self.tree.find(mass)
            probs = self.tree.get(leaf) / total
            weights = (count.double() * probs).pow(-beta)
            weights = (weights / weights.max()).float()
            return self.get(leaf, weights)
        return self.get(self._sample_uniform(batch_size, lo, hi, base, count))

    def _sample_uniform(
        self, batch_size: int, lo: int, hi: int, base: torch.Tensor, count: torch.Tensor
    ) -> torch.Tensor:
        """Flat indices of the k-th valid transitions in [lo, hi] for uniform k, by binary search."""
        if self.device.type == "cpu":  # reading the counts costs nothing here: one op instead of five
            start = int(base)
            k = torch.randint(start, start + int(count), (batch_size,), generator=self.generator)
        else:  # no host round-trip on an accelerator
            rand = torch.rand(batch_size, generator=self.generator, device=self.device, dtype=torch.float64)
            k = torch.minimum((rand * count).long(), count - 1) + base
        first, last = lo % self.slots, hi % self.slots
        if first <= last:
            slot = first + torch.searchsorted(self.cumulative_valid[first : last + 1], k, right=True)
        else:
            older = self.cumulative_valid[first:]
            in_older = torch.searchsorted(older, k, right=True)
            in_newer = torch.searchsorted(self.cumulative_valid[: last + 1], k, right=True)
            slot = torch.where(in_older < older.numel(), first + in_older, in_newer)
        if self.num_envs == 1:
            return slot
        rows = self.valid[slot].long().cumsum(dim=1)
        rank = k - (self.cumulative_valid[slot] - rows[:, -1])
        env = (rows <= rank.unsqueeze(1)).sum(dim=1)
        return slot * self.num_envs + env

    def get(self, indices: torch.Tensor, weights: torch.Tensor | None = None) -> ReplayBatch:
        """The transitions at flat `indices` (slot * num_envs + env), n-step targets included.

        Everything is gathered with flat `take` / `index_select` (cheap per op, which is
        what bounds a batch of 32 on the CPU); both stacks come from one frame gather.
        """
        flat = indices.long()
        size, stride, total = flat.shape[0], self.num_envs, self.slots * self.num_envs
        if self.n_step == 1:
            rewards = self.rewards.take(flat)
            dones = self.terminated.take(flat)
            discounts = torch.full((size,), self.gamma, device=self.device)
            observations, next_observations = self._stack_pair(flat)
        else:
            window = (flat.unsqueeze(1) + self._nstep_offsets * stride) % total
            terminated = self.terminated.take(window)
            ended = terminated | self.truncated.take(window)
            ended = ended.long()
            included = (ended.cumsum(dim=1) - ended) == 0  # no end strictly before step k
            steps = included.sum(dim=1)
            rewards = (self.rewards.take(window) * included).mv(self._gamma_powers[: self.n_step])
            dones = (terminated & included).any(dim=1)
            next_flat = (flat + steps * stride) % total
            discounts = self._gamma_powers[steps]
            stacks = self._stack(torch.cat([flat, next_flat]))
            observations, next_observations = stacks[:size], stacks[size:]
        if weights is None:
            weights = torch.ones(size, device=self.device)
        return ReplayBatch(
            observations=observations,
            actions=self.actions.view(total, *self.action_shape).index_select(0, flat),
            rewards=rewards,
            next_observations=next_observations,
            dones=dones.float(),
            discounts=discounts,
            weights=weights,
            indices=flat,
        )

    def _stack_pair(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation and next observation of 1-step transitions from one window of
        frame_stack + 1 frames: the two stacks overlap in all but one frame, so they are
        two views of it (not contiguous across the batch) and each frame is read once.

        Valid because slot t + 1 of a sampleable transition is always in t's episode, so
        clamping the window at t + 1's episode start clamps both stacks correctly.
        """
        size, stride = flat.shape[0], self.num_envs
        nxt = (flat + stride) % self._frame_rows.shape[0]
        since = self.since_start.take(nxt).view(-1, 1)
        back = torch.minimum(self._window_offsets, since)
        rows = (nxt.view(-1, 1) - back * stride) % self._frame_rows.shape[0]
        window = self._frame_rows.index_select(0, rows.view(-1))
        window = window.view(size, self.frame_stack + 1, *self.frame_shape)
        if self.zero_padding:
            padded = (self._window_offsets > since).view(size, -1, *([1] * len(self.frame_shape)))
            window = window.masked_fill_(padded, 0)
        if self.frame_stack == 1:
            return window[:, 0], window[:, 1]
        return window[:, :-1], window[:, 1:]

    def _stack(self, flat: torch.Tensor) -> torch.Tensor:
        """Observations at flat indices: frames back to the episode's first slot."""
        frames = self._frame_rows
        if self.frame_stack == 1:
            return frames.index_select(0, flat)
        since = self.since_start.take(flat).view(-1, 1)
        back = torch.minimum(self._stack_offsets, since)
        rows = (flat.view(-1, 1) - back * self.num_envs) % frames.shape[0]
        stacks = frames.index_select(0, rows.view(-1)).view(flat.shape[0], self.frame_stack, *self.frame_shape)
        if self.zero_padding:
            padded = (self._stack_offsets > since).view(-1, self.frame_stack, *([1] * len(self.frame_shape)))
            stacks = stacks.masked_fill(padded, 0)
        return stacks

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set priorities (|td error| + eps) ** alpha for sampled `indices`."""
        if not self.prioritized:
            raise LabError("update_priorities needs a prioritized buffer; pass prioritized=True")
        indices = indices.long()
        priorities = (td_errors.detach().abs().double() + self.priority_eps).pow(self.alpha)
        # A transition retired since it was sampled keeps weight 0.
        priorities = torch.where(self.tree.get(indices) > 0, priorities, 0.0)
        self.tree.set(indices, priorities)
        self._max_priority = torch.maximum(self._max_priority, priorities.max())

    @contextlib.contextmanager
    def unchanged(self) -> Iterator[None]:
        """Sample and update priorities inside; afterwards the buffer is as it was (for timing
        an update without changing the run)."""
        generator = self.generator.get_state()
        leaves = self.tree.leaves.clone() if self.prioritized else None
        highest = self._max_priority.clone() if self.prioritized else None
        try:
            yield
        finally:
            self.generator.set_state(generator)
            if self.prioritized:
                self.tree.load_leaves(leaves)
                self._max_priority = highest

    def sampleable_indices(self) -> torch.Tensor:
        """Flat indices of every transition `sample` can return (for tests and debugging)."""
        lo, hi = self._sample_range()
        slots = torch.arange(lo, hi + 1, device=self.device) % self.slots
        flat = slots.unsqueeze(1) * self.num_envs + self._env_ids
        return flat[self.valid[slots]]

    # ------------------------------------------------------------- checkpoints

    def _stored_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "frames": self.frames, "actions": self.actions, "rewards": self.rewards,
            "valid": self.valid, "terminated": self.terminated, "truncated": self.truncated,
            "since_start": self.since_start, "cumulative_valid": self.cumulative_valid,
        }
        if self.prioritized:
            tensors["priorities"] = self.tree.leaves.view(self.slots, self.num_envs)
        return tensors

    def _layout(self) -> dict[str, Any]:
        return {
            "slots": self.slots, "num_envs": self.num_envs, "frame_stack": self.frame_stack,
            "observation_shape": list(self.observation_shape), "n_step": self.n_step,
            "prioritized": self.prioritized,
        }

    def state_dict(self) -> dict[str, Any]:
        """Contents and cursor. The slot tensors are marked as rows of a ring
        (`lab.run.chunks`): a checkpoint writes only the chunks changed since the last one."""
        stored = self._stored_tensors()
        state: dict[str, Any] = {
            "version": STATE_VERSION, **self._layout(),
            "rows": rows_state({k: v for k, v in stored.items() if k != "priorities"}, self._steps,
                               margin=self.n_step + 2),  # an add rewrites slots up to n_step back
            "valid_total": self._valid_total, "done_prev": self._done_prev, "generator": self.generator.get_state(),
            "start_next": self._start_next, "last_next_frame": self._last_next_frame,
        }
        if self.prioritized:  # priorities change anywhere a batch was sampled: saved whole (8 B/transition)
            state["priorities"] = stored["priorities"].clone()
            state["max_priority"] = self._max_priority
        return state

    def load_state_dict(self, state: dict[str, Any], end_episodes: bool = True) -> None:
        """Restore `state_dict()`; by default close open episodes, since envs restart on resume."""
        saved = {key: state.get(key) for key in self._layout()}
        if saved != self._layout():
            raise LabError(
                f"the checkpoint's replay buffer {saved} does not match this run's {self._layout()}; "
                "resume with the same buffer settings"
            )
        rows = state["rows"]["tensors"] if "rows" in state else state  # version 1 kept them at the top
        self._steps = int(state["rows"]["steps"] if "rows" in state else state["steps"])
        filled = min(self._steps, self.slots)
        for name, tensor in self._stored_tensors().items():
            if filled:  # (an empty ring's checkpoint, the one a run writes at step 0, names no chunks)
                source = state["priorities"] if name == "priorities" and "rows" in state else rows[name]
                tensor[:filled].copy_(source[:filled])
            tensor[filled:].zero_()
        self._valid_total.copy_(state["valid_total"])
        self._done_prev.copy_(state["done_prev"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self._start_next.copy_(state["start_next"])
        self._last_next_frame.copy_(state["last_next_frame"])
        if self.prioritized:
            self.tree.load_leaves(self.tree.leaves.clone())
            self._max_priority.copy_(state["max_priority"])
        if end_episodes:
            self.end_episodes()
