"""Bounded work on any input: a small YAML file cannot expand into gigabytes, a message cannot
print megabytes, and settings that cannot mean anything (inf, a network of width 0) are refused."""

from __future__ import annotations

from lab.api import LabError
from lab.api.errors import MESSAGE_LIMIT, one_line, shorten
from lab.cli import main


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
