"""Save and restore a gymnasium environment's state, so a resumed run plays on in the same
episodes instead of starting new ones.

`snapshot(env)` walks the vector env, its sub-envs and every wrapper, and records each
attribute that is plain data: numbers, strings, numpy arrays, numpy random generators,
MuJoCo's integration state (`mj_getState`), and lists/dicts of those. Attributes that
cannot change while stepping (spaces, specs, the MuJoCo model, renderers, callables) are
skipped. Anything else, such as a Box2D world, makes the env `Unsaveable`: the caller then
restarts it from a new seed instead of pretending the resume is exact.

The result holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import enum
import functools
import types
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ARRAY, GENERATOR, SCALAR, MUJOCO, CHILD, CHILDREN = "__ndarray__", "__np_generator__", "__np_scalar__", \
    "__mjdata__", "__env__", "__envs__"
_ENV_TYPES = (gym.Env, gym.Wrapper, gym.vector.VectorEnv, gym.vector.VectorWrapper)
_RENDER_MODULES = ("pygame", "gymnasium.envs.mujoco.mujoco_rendering", "mujoco.renderer")


class Unsaveable(Exception):
    """The env holds state this module cannot capture (the message says which attribute)."""


def _is_env(value: Any) -> bool:
    return isinstance(value, _ENV_TYPES)


def _static(value: Any) -> bool:
    """True for values that stepping never changes, which a snapshot can leave out."""
    if isinstance(value, (gym.Space, gym.envs.registration.EnvSpec, enum.Enum, type, types.ModuleType)):
        return True
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)):
        return True
    module = type(value).__module__
    if module.startswith(_RENDER_MODULES):
        return True
    return module.startswith("mujoco") and type(value).__name__ == "MjModel"


def _encode(value: Any, where: str, seen: set[int]) -> Any:
    """A weights_only-safe encoding of `value`, or the marker `_SKIP` for static values."""
    if isinstance(value, np.generic):  # before the builtins: np.float64 is a float
        return {SCALAR: value.item(), "dtype": value.dtype.str}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise Unsaveable(f"{where} is an object array")
        return {ARRAY: torch.from_numpy(np.array(value, copy=True)), "dtype": value.dtype.str}
    if isinstance(value, np.random.Generator):
        return {GENERATOR: value.bit_generator.state}
    if _is_env(value):
        return {CHILD: snapshot(value, seen, where)}
    if type(value).__module__.startswith("mujoco") and type(value).__name__ == "MjData":
        return {MUJOCO: None}  # filled by the owner, which also holds the model
    if isinstance(value, (list, tuple)):
        if value and all(_is_env(v) for v in value):
            return {CHILDREN: [snapshot(v, seen, f"{where}[{i}]") for i, v in enumerate(value)]}
        if value and all(_static(v) for v in value):
            return _SKIP
        return [_encode(v, f"{where}[{i}]", seen) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Unsaveable(f"{where} has non-string keys")
        encoded = {k: _encode(v, f"{where}[{k!r}]", seen) for k, v in value.items()}
        return {k: v for k, v in encoded.items() if v is not _SKIP}
    if _static(value):
        return _SKIP
    raise Unsaveable(f"{where} is a {type(value).__module__}.{type(value).__name__}")


_SKIP = object()


def snapshot(env: Any, seen: set[int] | None = None, where: str | None = None) -> dict[str, Any]:
    """Every attribute of `env` (and of the envs it wraps) needed to continue it exactly."""
    seen = set() if seen is None else seen
    where = where or type(env).__name__
    if id(env) in seen:
        raise Unsaveable(f"{where} is reachable twice")
    seen.add(id(env))
    state: dict[str, Any] = {}
    for name, value in sorted(vars(env).items()):
        encoded = _encode(value, f"{where}.{name}", seen)
        if encoded is _SKIP:
            continue
        if isinstance(encoded, dict) and MUJOCO in encoded:
            encoded[MUJOCO] = _mujoco_state(env, value)
        state[name] = encoded
    return state


def _mujoco_state(owner: Any, data: Any) -> torch.Tensor:
    import mujoco

    model = getattr(owner, "model", None)
    if model is None:
        raise Unsaveable(f"{type(owner).__name__} holds MjData without its MjModel")
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
    mujoco.mj_getState(model, data, state, spec)
    return torch.from_numpy(state)


def _decode(current: Any, saved: Any, owner: Any) -> Any:
    """The value to set, restoring in place where the object must keep its identity."""
    if isinstance(saved, dict):
        if ARRAY in saved:
            array = saved[ARRAY].numpy().astype(np.dtype(saved["dtype"]), copy=True)
            if isinstance(current, np.ndarray) and current.shape == array.shape and current.dtype == array.dtype:
                current[...] = array
                return current
            return array
        if SCALAR in saved:
            return np.dtype(saved["dtype"]).type(saved[SCALAR])
        if GENERATOR in saved:
            generator = current if isinstance(current, np.random.Generator) else np.random.default_rng()
            generator.bit_generator.state = saved[GENERATOR]
            return generator
        if CHILD in saved:
            restore(current, saved[CHILD])
            return current
        if CHILDREN in saved:
            for child, child_state in zip(current, saved[CHILDREN], strict=True):
                restore(child, child_state)
            return current
        if MUJOCO in saved:
            import mujoco

            mujoco.mj_setState(owner.model, current, saved[MUJOCO].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
            return current
        base = current if isinstance(current, dict) else {}
        return {k: _decode(base.get(k), v, owner) for k, v in saved.items()}
    if isinstance(saved, list):
        items = list(current) if isinstance(current, (list, tuple)) and len(current) == len(saved) else [None] * len(saved)
        decoded = [_decode(c, s, owner) for c, s in zip(items, saved, strict=True)]
        return tuple(decoded) if isinstance(current, tuple) else decoded
    return saved


def restore(env: Any, state: dict[str, Any]) -> None:
    """Put back what `snapshot(env)` recorded (into an env built the same way)."""
    for name, saved in state.items():
        setattr(env, name, _decode(getattr(env, name, None), saved, env))
