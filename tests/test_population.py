"""Seeds as a batch dimension (`lab train ALGO --seeds 1-3 --vectorize`): each member of a
population trains as its separate run does (to float tolerance: the stacked products round
differently), is an ordinary run to everything downstream, and a stopped population, run
again, continues every member exactly."""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from test_exact_runs import start, wait_for_step

from conftest import comparable, one_line_error, read_jsonl, runs_dir
from conftest import lab as lab_cli
from lab.cli import main
from lab.run.checkpoint import checkpoint_step

CASES = {  # ppo: minibatches, epochs and normalisers; CartPole's episodes end at different steps in each member
    "ppo": ["--env", "CartPole-v1", "--steps", "1024", "--num-envs", "4", "--n-steps", "64", "--n-epochs", "4",
            "--batch-size", "64", "--log-interval", "256", "--eval-interval", "512", "--norm-obs", "--norm-reward"],
    # a2c: RMSprop, one step on each whole rollout, Gaussian actions
    "a2c": ["--env", "Pendulum-v1", "--steps", "1000", "--num-envs", "4", "--log-interval", "100",
            "--eval-interval", "500"],
}
QUIET = ["--eval-episodes", "2", "--video", "false"]
DQN_CASES = {  # replay, n-step targets, a target network every 100 steps, learning from step 300; acting at
    # epsilon 1, because greedy actions from Q-values that differ in their last bits can differ (early on, the
    # Q-values of CartPole's two actions are nearly tied), and one changed action changes the whole run after it
    # (the stacked greedy pass is tested on its own below)
    "CartPole-v1": ["--steps", "1500", "--num-envs", "2", "--learning-starts", "300", "--train-freq", "4",
                    "--batch-size", "32", "--gradient-steps", "1", "--target-update-interval", "100",
                    "--log-interval", "100", "--n-step", "3", "--eval-exploration-eps", "1",
                    "--double-q", "--dueling", "--exploration-initial-eps", "1", "--exploration-final-eps", "1"],
    # DrQ(eps) on frames: its own shifts, n-step 10, the target online, Adam eps 1.5e-4
    "BreakoutNoFrameskip-v4": ["--preset", "atari100k-drq", "--steps", "330", "--learning-starts", "300",
                               "--buffer-size", "1000", "--eval-episodes", "1", "--eval-interval", "330",
                               "--checkpoint-interval", "330", "--log-interval", "100", "--exploration-initial-eps",
                               "1", "--exploration-final-eps", "1", "--eval-exploration-eps", "1"],
}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(CASES))
def test_a_member_trains_as_its_separate_run_and_is_an_ordinary_run(algo, capsys):
    assert main(["train", algo, *CASES[algo], *QUIET, "--seed", "2", "--name", "alone"]) == 0
    assert main(["train", algo, *CASES[algo], *QUIET, "--seeds", "1-3", "--vectorize", "--name", "pop"]) == 0
    alone, member = read_jsonl(runs_dir() / "alone" / "metrics.jsonl"), read_jsonl(runs_dir() / "pop-s2" / "metrics.jsonl")
    assert len(alone) == len(member) and any("train/loss" in row for row in member)
    for mine, theirs in zip(comparable(member), comparable(alone), strict=True):
        assert mine.keys() == theirs.keys() and mine["global_step"] == theirs["global_step"]
        for key, value in theirs.items():  # the same episodes, losses and evaluations
            assert value == mine[key] if isinstance(value, str) else close(value, mine[key]), (key, mine, theirs)
    # every member is an ordinary run: its seed, its summary, its own checkpoint (not the population's)
    for seed in (1, 2, 3):
        run = runs_dir() / f"pop-s{seed}"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    sizes = [(runs_dir() / name / "checkpoints" / "latest.pt").stat().st_size for name in ("alone", "pop-s2")]
    assert sizes[1] < 1.2 * sizes[0], sizes
    capsys.readouterr()
    code, err = lab_cli(capsys, "eval", str(runs_dir() / "pop-s3"), "--episodes", "2")
    assert code == 0, err
    code, err = lab_cli(capsys, "resume", str(runs_dir() / "pop-s1"), "--steps", str(2 * int(CASES[algo][3])))
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(DQN_CASES))
def test_a_dqn_member_trains_as_its_separate_run(env, capsys):
    """The same episodes throughout (random acting), and the same losses over the first 100
    gradient steps; then bootstrapped targets amplify the last bits in which the stacked
    products round differently (CartPole: 4e-6 at 100 steps, 5e-3 at 300)."""
    flags = ["train", "dqn", "--env", env, *DQN_CASES[env], *QUIET]
    assert main([*flags, "--seed", "2", "--name", "alone"]) == 0
    assert main([*flags, "--seeds", "1-3", "--vectorize", "--name", "pop"]) == 0
    alone, member = read_jsonl(runs_dir() / "alone" / "metrics.jsonl"), read_jsonl(runs_dir() / "pop-s2" / "metrics.jsonl")
    assert len(alone) == len(member) and any("train/loss" in row for row in member)
    for mine, theirs in zip(comparable(member), comparable(alone), strict=True):
        assert mine.keys() == theirs.keys() and mine["global_step"] == theirs["global_step"]
        for key, value in theirs.items():
            if key == "train/loss" and mine["global_step"] > 300 + 4 * 100:
                assert math.isfinite(mine[key])
            else:
                assert value == mine[key] if isinstance(value, str) else close(value, mine[key]), (key, mine, theirs)
    code, err = lab_cli(capsys, "eval", str(runs_dir() / "pop-s3"), "--episodes", "1")
    assert code == 0, err
    if env == "CartPole-v1":  # a member's checkpoint (weights, Adam, replay) continues as a plain dqn run
        code, err = lab_cli(capsys, "resume", str(runs_dir() / "pop-s1"), "--steps", "1700")
        assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_a_stopped_or_killed_population_run_again_logs_what_an_uninterrupted_one_logs(capsys):
    common = ["train", "ppo", *CASES["ppo"], *QUIET, "--steps", "4096", "--seeds", "1-2", "--vectorize"]
    assert main([*common, "--name", "straight"]) == 0
    proc = start(*common, "--name", "stopped")  # a real process gets a real SIGINT
    wait_for_step(proc, runs_dir() / "stopped-s2", 1024)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    statuses = [json.loads((runs_dir() / f"stopped-s{s}" / "summary.json").read_text())["status"] for s in (1, 2)]
    assert statuses == ["interrupted", "interrupted"]
    capsys.readouterr()
    code, err = lab_cli(capsys, *common, "--name", "stopped")  # the same command continues both members
    assert code == 0, err
    for seed in (1, 2):
        assert comparable(read_jsonl(runs_dir() / f"stopped-s{seed}" / "metrics.jsonl")) == \
            comparable(read_jsonl(runs_dir() / f"straight-s{seed}" / "metrics.jsonl"))
    # kill -9 between the members' checkpoints of one step: member 2's latest.pt older than member 1's
    killed = [*common, "--checkpoint-interval", "512", "--name", "killed"]
    proc = start(*killed)
    wait_for_step(proc, runs_dir() / "killed-s2", 1024)
    proc.kill()
    proc.communicate()
    older = runs_dir().parent / "older-checkpoints"
    shutil.copytree(runs_dir() / "killed-s2" / "checkpoints", older)  # at 1,024 at most
    proc = start(*killed)
    wait_for_step(proc, runs_dir() / "killed-s1", 2048)  # its checkpoint at 1,536 at least
    proc.kill()
    proc.communicate()
    shutil.rmtree(runs_dir() / "killed-s2" / "checkpoints")
    shutil.copytree(older, runs_dir() / "killed-s2" / "checkpoints")
    behind, ahead = checkpoint_step(runs_dir() / "killed-s2"), checkpoint_step(runs_dir() / "killed-s1")
    assert behind is not None and ahead is not None and behind < ahead
    code, err = lab_cli(capsys, *killed)
    assert code == 0 and f"killed-s2: its checkpoint is from step {behind:,}, the others' from {ahead:,}" in err, err
    # member 1 waited, then went on with member 2: what it logs equals the straight run's to float tolerance (its
    # padding to member 2's number of real transitions in a minibatch changed how its sums round)
    continued = comparable(read_jsonl(runs_dir() / "killed-s1" / "metrics.jsonl"))
    straight = comparable(read_jsonl(runs_dir() / "straight-s1" / "metrics.jsonl"))
    assert len(continued) == len(straight)
    for mine, theirs in zip(continued, straight, strict=True):
        for key, value in theirs.items():
            assert value == mine[key] if isinstance(value, str) else close(value, mine[key]), (key, mine, theirs)
    # member 2 logs the straight run's rows up to its checkpoint and none of the killed process's after it; then its
    # steps alone round differently, and in time a sampled action differs: the same run, not the same numbers
    rows = comparable(read_jsonl(runs_dir() / "killed-s2" / "metrics.jsonl"))
    upto = [row for row in rows if row["global_step"] <= behind]
    assert upto == [row for row in comparable(read_jsonl(runs_dir() / "straight-s2" / "metrics.jsonl"))
                    if row["global_step"] <= behind]
    losses = [row["global_step"] for row in rows if "train/loss" in row]
    assert losses == sorted(set(losses)) and losses[-1] == 4096
    assert json.loads((runs_dir() / "killed-s2" / "summary.json").read_text())["status"] == "finished"


def test_what_cannot_be_vectorized_is_refused_in_one_line(capsys):
    one_line_error(capsys, ["train", "sac", "--env", "Pendulum-v1", "--seeds", "1-2", "--vectorize"],
                   "--vectorize", "sac", "drop --vectorize")
    one_line_error(capsys, ["train", "rainbow", "--env", "CartPole-v1", "--seeds", "1-2", "--vectorize"],
                   "without noisy nets and distributional heads", "--noisy")
    examples = str(Path(__file__).parent.parent / "docs" / "examples")
    one_line_error(capsys, ["train", "m-dqn", "--env", "CartPole-v1", "--plugins-dir", examples,
                            "--seeds", "1-2", "--vectorize"], "replaces dqn's td_loss()")
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--vectorize"], "pass --seeds")


@pytest.mark.slow
def test_a_member_that_diverges_ends_alone_and_the_others_finish(capsys):
    plugins = str(Path(__file__).parent / "population_plugins")
    code, err = lab_cli(capsys, "train", "ppo-diverging", *CASES["ppo"], *QUIET, "--plugins-dir", plugins,
                        "--seeds", "1-3", "--vectorize", "--name", "pop")
    assert code == 1 and "Traceback" not in err, err
    summaries = {seed: json.loads((runs_dir() / f"pop-s{seed}" / "summary.json").read_text()) for seed in (1, 2, 3)}
    assert summaries[2]["status"] == "diverged" and summaries[2]["global_step"] < 1024
    for seed in (1, 3):
        assert summaries[seed]["status"] == "finished" and math.isfinite(summaries[seed]["train/loss"])


def test_a_population_that_would_not_fit_in_memory_is_refused_before_its_members_are_built(capsys):
    from lab.buffers.rollout import rollout_bytes
    from lab.memory import free_bytes

    free = free_bytes(torch.device("cpu"))
    if free is None:
        pytest.skip("this platform does not say how much memory is free")
    per_step = rollout_bytes(1, 1, (4,), (), torch.float32, torch.int64)
    n_steps = max(1, free // 40 // per_step)  # one member's rollout: a fortieth of the free memory
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "1", "--n-steps", str(n_steps),
                            "--steps", str(n_steps), "--seeds", "1-64", "--vectorize", "--name", "big"],
                   "a population of 64 members needs", "--vectorize --parallel P")
    assert not any(runs_dir().glob("big-s*")) if runs_dir().exists() else True


@pytest.mark.parametrize("space", ["discrete", "box", "frames"])
def test_the_stacked_policy_computes_what_each_member_computes(space):
    import gymnasium as gym

    from lab.rl.policies import ActorCritic
    from lab.rl.population import StackedPolicy

    shape = (4, 84, 84) if space == "frames" else (5,)
    observations = gym.spaces.Box(0, 255, shape, dtype="uint8") if space == "frames" else gym.spaces.Box(-1, 1, shape)
    actions = gym.spaces.Box(-1, 1, (3,)) if space == "box" else gym.spaces.Discrete(4)
    members = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        members.append(ActorCritic(observations, actions, log_std_init=-0.5 * seed))
    names = [name for name, _ in members[0].named_parameters()]
    stacked = StackedPolicy(members[0], {n: torch.stack([m.get_parameter(n).detach() for m in members]) for n in names})
    obs = torch.randint(0, 256, (3, 6, *shape), dtype=torch.uint8) if space == "frames" else torch.randn(3, 6, *shape)
    with torch.no_grad():
        out, values = stacked(obs)
        taken = stacked.mode(out)
        for k, member in enumerate(members):
            own_out, own_values = member(obs[k])
            assert torch.allclose(out[k], own_out, atol=1e-5) and torch.allclose(values[k], own_values, atol=1e-5)
            assert torch.allclose(stacked.log_prob(out, taken)[k], member.log_prob(own_out, taken[k]), atol=1e-5)
            assert torch.allclose(stacked.entropy(out)[k], member.entropy(own_out), atol=1e-5)


@pytest.mark.parametrize("space", ["vector", "frames"])
def test_the_stacked_q_network_computes_what_each_member_computes(space):
    from lab.rl.q_population import StackedQNetwork
    from lab.rl.qnetworks import QNetwork

    shape = (4, 84, 84) if space == "frames" else (5,)
    members = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        members.append(QNetwork(shape, 4, (32, 32), dueling=True, dueling_hidden="shared"))
    names = [name for name, _ in members[0].named_parameters()]
    stacked = StackedQNetwork(members[0], {n: torch.stack([m.get_parameter(n).detach() for m in members])
                                           for n in names})
    obs = torch.randint(0, 256, (3, 6, *shape), dtype=torch.uint8) if space == "frames" else torch.randn(3, 6, *shape)
    with torch.no_grad():
        q_values = stacked(obs)
        for k, member in enumerate(members):
            assert torch.allclose(q_values[k], member(obs[k]), atol=1e-5)
            assert torch.equal(q_values[k].argmax(-1), member(obs[k]).argmax(-1))


SWEEP = """name: settings
method: grid
metric: {name: eval/return_mean, goal: maximize}
parameters:
  algo: {value: ppo}
  env: {value: CartPole-v1}
  steps: {value: 512}
  num_envs: {value: 4}
  n_steps: {value: 64}
  n_epochs: {value: 4}
  batch_size: {value: 64}
  log_interval: {value: 128}
  eval_interval: {value: 256}
  eval_episodes: {value: 2}
  video: {value: false}
  learning_rate: {values: [0.003, 0.0005]}
  clip_range: {values: [0.05, 0.3]}
  ent_coef: {values: [0.0, 0.02]}
"""


@pytest.mark.slow
def test_a_vectorized_sweep_trains_trials_that_differ_in_float_settings_as_their_separate_runs(tmp_path, capsys):
    """Eight grid trials, four at a time as one population: members differ in learning rate,
    clip range and entropy weight, and each logs what its trial alone logs."""
    (tmp_path / "spec.yaml").write_text(SWEEP)
    code, err = lab_cli(capsys, "sweep", str(tmp_path / "spec.yaml"), "--vectorize", "4")
    assert code == 0, err
    assert err.count("ended trials ") == 2 and "ended trials 001,002,003,004: exit 0" in err, err
    for trial, settings in (("001", ["0.003", "0.05", "0.0"]), ("008", ["0.0005", "0.3", "0.02"])):
        lr, clip, ent = settings
        assert main(["train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--num-envs", "4", "--n-steps", "64",
                     "--n-epochs", "4", "--batch-size", "64", "--log-interval", "128", "--eval-interval", "256",
                     *QUIET, "--learning-rate", lr, "--clip-range", clip, "--ent-coef", ent,
                     "--name", f"alone-{trial}"]) == 0
        alone = read_jsonl(runs_dir() / f"alone-{trial}" / "metrics.jsonl")
        member = read_jsonl(runs_dir() / f"settings-{trial}" / "metrics.jsonl")
        assert len(alone) == len(member)
        assert trial == "008" or any(row.get("train/clip_fraction", 0) > 0 for row in alone)  # its clip range at work
        for mine, theirs in zip(comparable(member), comparable(alone), strict=True):
            for key, value in theirs.items():
                assert value == mine[key] if isinstance(value, str) else close(value, mine[key]), (key, mine, theirs)
    for trial in range(1, 9):  # each trial an ordinary run, its settings in its config
        assert json.loads((runs_dir() / f"settings-{trial:03d}" / "summary.json").read_text())["status"] == "finished"
    assert yaml.safe_load((runs_dir() / "settings-008" / "config.yaml").read_text())["config"]["ent_coef"] == 0.02


@pytest.mark.parametrize("searched, says", [
    ("n_steps: {values: [32, 64]}", "the spec searches n_steps"),
    ("learning_rate: {min: 0.0001, max: 0.001}", "a bayes sweep draws each trial"),
])
def test_a_sweep_that_cannot_be_vectorized_is_refused_in_one_line(tmp_path, capsys, searched, says):
    method = "bayes" if "min:" in searched else "grid"
    (tmp_path / "spec.yaml").write_text(f"name: nv\nmethod: {method}\nmetric: {{name: eval/return_mean, goal: maximize}}\n"
                                        f"parameters:\n  algo: {{value: ppo}}\n  env: {{value: CartPole-v1}}\n"
                                        f"  {searched}\n")
    one_line_error(capsys, ["sweep", str(tmp_path / "spec.yaml"), "--vectorize", "--count", "2"], says)
