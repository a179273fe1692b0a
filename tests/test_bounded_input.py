"""Bounded work on any input: a small YAML file cannot expand into gigabytes, a message cannot
print megabytes, and settings that cannot mean anything (inf, a network of width 0) are refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.api import LabError, check_ranges
from lab.api.errors import MESSAGE_LIMIT, one_line, shorten
from lab.cli import main
from lab.run import yamlfile
from lab.run.settings import load_yaml_file


def laughs(levels: int = 9, key: str = "lol") -> str:
    """A "billion laughs": nine aliases of nine aliases ..., 9**levels values from a few hundred bytes."""
    lines = [f"{key}0: &a0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"{key}{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def one_error(capsys, argv, *expected):
    """Exit 2, one short `error:` line naming `expected`, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert len(lines[0]) <= len("error: ") + MESSAGE_LIMIT, lines[0][:2000]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --- messages of bounded length -----------------------------------------------------------------

def test_a_lab_error_is_one_line_of_bounded_length_that_keeps_its_fix():
    text = str(LabError("start " + "x" * 1_000_000 + "\nmore; fix it"))
    assert len(text) <= MESSAGE_LIMIT and "\n" not in text
    assert text.startswith("start x") and text.endswith("; fix it") and "characters cut" in text
    assert str(LabError("short\nline")) == "short\\nline"
    assert one_line("fine") == "fine"


def test_shorten_quotes_a_value_cheaply():
    assert shorten("a" * 1000) == "a" * 80 + "... (1,000 characters)"
    assert shorten(0.5) == "0.5" and shorten((64, 64)) == "(64, 64)"
    nested = [list(range(1000))] * 1000
    assert len(shorten(nested)) <= 83


def test_a_huge_value_is_quoted_short(toy_plugins, capsys, tmp_path):
    line = one_error(capsys, ["train", "toy", "--data", "d" * 200_000], "unknown dataset 'ddd",
                     "(200,000 characters)", "lab plugins")
    assert len(line) < 300
    (tmp_path / "c.yaml").write_text(f"seed: {'9' * 100_000}x\n")
    one_error(capsys, ["train", "toy", "--data", "toy-data", "--config", "c.yaml"],
              "--seed expects an integer", "(100,001 characters)")


# --- one bounded reader for every YAML the lab reads ---------------------------------------------

@pytest.mark.parametrize("command", ["compare", "eval", "resume", "train --config", "runs"])
def test_billion_laughs_in_a_run_folder_is_one_line(toy_plugins, capsys, tmp_path, command):
    run = tmp_path / "runs" / "laughs"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("algo: toy\nrun:\n  seed: 1\nconfig:\n" + laughs().replace("lol", "  lol"))
    assert (run / "config.yaml").stat().st_size < 2000
    if command == "runs":  # the listing marks it unreadable and goes on
        assert main(["runs"]) == 0 and "laughs" in capsys.readouterr().out
        return
    argv = ["train", "toy", "--data", "toy-data", "--config", str(run / "config.yaml")] \
        if command == "train --config" else [command, str(run)]
    one_error(capsys, argv, "config.yaml' expands to more than 100,000 values", "aliases")


def test_the_reader_stops_at_the_cap_however_far_the_aliases_go():
    text = laughs(levels=40)  # 9**40 values from 2 KB
    start = time.perf_counter()
    with pytest.raises(LabError, match="expands to more than 100,000 values"):
        yamlfile.load_yaml(text, "x")
    assert time.perf_counter() - start < 0.5


def test_billion_laughs_in_a_sweep_spec_is_one_short_line(capsys, tmp_path):
    (tmp_path / "spec.yaml").write_text(laughs() + "method: *a8\nparameters: {algo: {value: toy}}\n")
    one_error(capsys, ["sweep", "spec.yaml"], "sweep spec 'spec.yaml' expands to more than 100,000 values")


@pytest.mark.parametrize("text, expected", [
    ("a: &a [*a]\n", "alias inside the value its anchor marks"),  # never ends
    ("a: &a {b: *a}\n", "alias inside the value its anchor marks"),
    ("a: " + "[" * 60 + "]" * 60 + "\n", "nests deeper than 50 levels"),
    # a 900 KB string repeated by aliases: few values, gigabytes of text
    ("s: &s " + "x" * 900_000 + "\nl: [" + ", ".join(["*s"] * 20) + "]\n", "more than 10 MB of text"),
    ("seed: 1\nseed: 2\n", "sets 'seed' twice (line 2)"),
    ("a: " + "1" * 5000 + "\n", "is not valid YAML"),  # an int past Python's 4300 digits
])
def test_what_the_reader_refuses(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(LabError, match=r"config file .*c\.yaml") as caught:
        load_yaml_file(path)
    assert expected in str(caught.value)


def test_a_file_past_the_size_cap_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * yamlfile.MAX_BYTES + "\nseed: 1\n")
    start = time.perf_counter()
    with pytest.raises(LabError, match=r"config file '.*big.yaml' is over 1 MB"):
        load_yaml_file(path)
    assert time.perf_counter() - start < 0.5


def test_aliases_and_merge_keys_within_the_caps_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &base {learning_rate: 0.1, seed: 3}\nrun:\n  <<: *base\n  seed: 4\n"
                    "config: {batch_size: 2, widths: &w [8, 8], more: *w}\n")
    values = load_yaml_file(path)
    assert values == {"learning_rate": 0.1, "seed": 4, "batch_size": 2, "widths": [8, 8], "more": [8, 8]}
    # just under the cap: 9**5 = 59,049 strings read, not refused
    assert len(yamlfile.load_yaml(laughs(levels=5), "x")["lol4"]) == 9


def test_duplicate_key_in_a_sweep_spec_is_refused(capsys, tmp_path):
    (tmp_path / "spec.yaml").write_text("method: grid\nmethod: random\nparameters: {algo: {value: toy}}\n")
    one_error(capsys, ["sweep", "spec.yaml"], "sweep spec 'spec.yaml' sets 'method' twice (line 2)")


def test_a_sweep_range_that_is_not_a_number_is_one_line(capsys, tmp_path):
    for key, bad in (("min", "a"), ("max", "[1, 2]"), ("sigma", "x"), ("min", ".nan")):
        param = {"min": "0.1", "max": "1", key: bad}
        (tmp_path / "spec.yaml").write_text("method: random\nparameters:\n  algo: {value: toy}\n  learning_rate: {"
                                            + ", ".join(f"{k}: {v}" for k, v in param.items()) + "}\n")
        one_error(capsys, ["sweep", "spec.yaml", "--count", "1"],
                  f"parameter 'learning_rate': `{key}:` must be a finite number")


def test_config_folder_says_it_is_a_folder(toy_plugins, capsys, tmp_path):
    (tmp_path / "settings").mkdir()
    one_error(capsys, ["train", "toy", "--data", "toy-data", "--config", "settings"],
              "config file 'settings' is a folder", "pass a YAML file to --config")
    (tmp_path / "settings" / "config.yaml").write_text("seed: 2\n")
    one_error(capsys, ["train", "toy", "--data", "toy-data", "--config", "settings"],
              "is a folder", f"pass --config {Path('settings') / 'config.yaml'}")
    one_error(capsys, ["sweep", "settings"], "sweep spec 'settings' is a folder")


# --- settings that cannot mean anything -----------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_a_non_finite_number_is_refused(toy_plugins, capsys, value):
    one_error(capsys, ["train", "toy", "--data", "toy-data", "--learning-rate", value],
              f"--learning-rate must be a finite number; got '{value}'")


def test_a_non_finite_number_in_yaml_is_refused(toy_plugins, capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: .inf\n")
    one_error(capsys, ["train", "toy", "--data", "toy-data", "--config", "c.yaml"],
              "--learning-rate must be a finite number")


@pytest.mark.parametrize("algo, argv", [
    ("ppo", ["--env", "CartPole-v1", "--net-arch", "0"]),
    ("dqn", ["--env", "CartPole-v1", "--net-arch", "64,0"]),
    ("sac", ["--env", "Pendulum-v1", "--net-arch", "-1"]),
    ("vae", ["--data", "mnist", "--hidden", "0"]),
    ("mlp", ["--data", "mnist", "--hidden", "512,0"]),
    ("cnn", ["--data", "mnist", "--widths", "0"]),
])
def test_a_layer_of_width_zero_is_refused(capsys, algo, argv):
    flag = argv[2]
    one_error(capsys, ["train", algo, *argv], f"{flag} must be >= 1 in every entry, got {argv[3]}")
    assert not list(Path("runs").glob("*"))


@pytest.mark.parametrize("flag, value, expected", [
    ("--ent-coef", "inf", "--ent-coef must be a positive finite number"),
    ("--ent-coef", "auto_inf", "--ent-coef must be a positive finite number"),
    ("--target-entropy", "nan", "--target-entropy must be a finite number"),
])
def test_sac_string_numbers_are_finite(capsys, flag, value, expected):
    one_error(capsys, ["train", "sac", "--env", "Pendulum-v1", flag, value], expected)


def test_check_ranges_refuses_non_finite_values_and_checks_every_entry():
    class Config:
        learning_rate = float("inf")
        net_arch = (64, 0)
        widths: tuple[int, ...] = ()
        gamma = None

    with pytest.raises(ValueError, match="--learning-rate must be a finite number, got inf"):
        check_ranges(Config(), positive=("learning_rate",))
    with pytest.raises(ValueError, match="--net-arch must be >= 1 in every entry, got 64,0"):
        check_ranges(Config(), at_least_one=("net_arch",))
    check_ranges(Config(), at_least_one=("widths",), fraction=("gamma",))  # none to check: passes
