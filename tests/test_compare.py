"""`lab compare`: grouping (--by, budgets), the x axis (--x), bands (bootstrap, t), the final-score table.

Every test builds its run directories by hand (config.yaml, metrics.jsonl, summary.json with
known numbers), so the expected means, bands and table cells are exact and nothing trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

from lab.cli import main
from lab.experiments.compare import BANDS, compare_data, t_critical
from lab.run.discovery import load_lab

RETURN = "eval/return_mean"


def make_run(root: Path, name: str, points: list[tuple[int, float, float]], *, algo: str = "dqn",
             env: str | None = "CartPole-v1", data: str | None = None, seed: int = 1,
             config: dict | None = None, metric: str = RETURN, best: float | None = None,
             budget: int | None = None) -> Path:
    """A finished run: `points` are (global_step, time, value) rows of `metric`."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    doc = {"algo": algo, "kind": "agent" if env else "supervised", "seed": seed,
           "total_steps": budget or points[-1][0], "horizon": budget or points[-1][0],
           "run": {"env": env, "data": data, "seed": seed, "steps": points[-1][0], "epochs": None,
                   "name": name, "eval_interval": 100},
           "config": {"learning_rate": 0.001, "gamma": 0.99, **(config or {})}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    rows = [{"global_step": step, "time": t, metric: value, "train/loss": 1.0} for step, t, value in points]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = [v for _, _, v in points]
    summary = {metric: values[-1], "status": "finished", "global_step": points[-1][0], "key_metric": metric,
               "best": max(values) if best is None else best}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def curve(values: list[float], steps: tuple[int, ...] = (0, 100, 200)) -> list[tuple[int, float, float]]:
    return [(s, s / 10, v) for s, v in zip(steps, values, strict=True)]


def table_rows(text: str) -> dict[str, list[str]]:
    """{first cell: the other cells} of the markdown table in `text` (header and rule left out)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {r[0]: r[1:] for r in rows[1:]}


def header(text: str) -> list[str]:
    return [c.strip() for c in text.splitlines()[0].strip().strip("|").split("|")]


@pytest.fixture
def mixed(tmp_path) -> list[Path]:
    """dqn with two seeds at lr 1e-3; ppo at two learning rates, one seed each."""
    root = tmp_path / "runs"
    return [
        make_run(root, "dqn-s1", curve([0, 10, 20]), seed=1),
        make_run(root, "dqn-s2", curve([2, 12, 22]), seed=2),
        make_run(root, "ppo-a", curve([5, 6, 7]), algo="ppo", config={"learning_rate": 0.0003}),
        make_run(root, "ppo-b", curve([5, 8, 9]), algo="ppo", config={"learning_rate": 0.001}),
    ]


def test_by_algo_groups_runs_and_averages_them(mixed, capsys):
    comparison = compare_data(mixed, None, by="algo", band="t")
    assert comparison.metric == RETURN  # the runs' key metric
    assert [g.label for g in comparison.groups] == ["algo=dqn", "algo=ppo"]
    dqn, ppo = comparison.groups
    assert dqn.n == 2 and ppo.n == 2  # ppo's two learning rates are one group under --by algo
    np.testing.assert_allclose(dqn.x, [0, 100, 200])
    np.testing.assert_allclose(dqn.mean, [1, 11, 21])
    np.testing.assert_allclose(ppo.mean, [5, 7, 8])
    # 95% t-interval, 2 runs: mean ± t(0.975, 1) * std(ddof=1) / sqrt(2); std of (0, 2) is sqrt(2)
    np.testing.assert_allclose(dqn.high - dqn.mean, [12.7062] * 3)
    np.testing.assert_allclose(dqn.mean - dqn.low, [12.7062] * 3)

    out = Path("by-algo.png")
    assert main(["compare", *map(str, mixed), "--by", "algo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert header(text) == ["algo", "runs", f"final {RETURN}: IQM [95% CI]", "final: mean [95% CI]",
                            "final: median [95% CI]", "best of the mean curve (max)"]
    assert rows["algo=dqn"] == ["2", "21 [20, 22]", "21 [20, 22]", "21 [20, 22]", "21"]
    assert rows["algo=ppo"] == ["2", "8 [7, 9]", "8 [7, 9]", "8 [7, 9]", "8"]
    assert "normalised" not in text and "(human - random)" not in text  # no Atari run: no column
    assert out.stat().st_size > 1000


def test_by_a_config_key_groups_across_algorithms(mixed, capsys):
    comparison = compare_data(mixed, RETURN, by="learning_rate")
    assert [g.label for g in comparison.groups] == ["learning_rate=0.0003", "learning_rate=0.001"]  # value order
    assert [sorted(r.name for r in g.runs) for g in comparison.groups] == [["ppo-a"], ["dqn-s1", "dqn-s2", "ppo-b"]]
    np.testing.assert_allclose(comparison.groups[1].mean, [(0 + 2 + 5) / 3, (10 + 12 + 8) / 3, (20 + 22 + 9) / 3])
    one = comparison.groups[0]
    np.testing.assert_allclose(one.low, one.mean)  # a single run has no band
    np.testing.assert_allclose(one.high, one.mean)

    out = Path("by-lr.svg")
    assert main(["compare", *map(str, mixed), "--by", "learning-rate", "--out", str(out)]) == 0  # flag spelling
    rows = table_rows(capsys.readouterr().out)
    assert rows["learning_rate=0.0003"] == ["1", "7 [7, 7]", "7 [7, 7]", "7 [7, 7]", "7"]
    assert rows["learning_rate=0.001"][0] == "3"
    assert out.stat().st_size > 1000


def test_without_by_seeds_of_one_experiment_form_one_group(mixed, capsys):
    comparison = compare_data(mixed, RETURN)
    assert [g.n for g in comparison.groups] == [2, 1, 1]
    assert [g.label for g in comparison.groups] == [
        "dqn CartPole-v1", "ppo CartPole-v1 (learning_rate=0.0003)", "ppo CartPole-v1 (learning_rate=0.001)"]


def test_band_covers_only_where_every_run_has_data(tmp_path):
    root = tmp_path / "runs"
    runs = [make_run(root, "long", curve([0, 10, 20, 30], (0, 100, 200, 300)), seed=1, budget=300),
            make_run(root, "short", curve([0, 30, 40], (50, 150, 200)), seed=2, budget=300)]  # stopped early
    (group,) = compare_data(runs, RETURN, band="t").groups
    np.testing.assert_allclose(group.x, [50, 100, 150, 200])  # from the latest start to the earliest end
    long_on_grid, short_on_grid = np.array([5, 10, 15, 20]), np.array([0, 15, 30, 40])
    np.testing.assert_allclose(group.mean, (long_on_grid + short_on_grid) / 2)
    half = 12.7062 * np.abs(long_on_grid - short_on_grid) / np.sqrt(2) / np.sqrt(2)
    np.testing.assert_allclose(group.high, group.mean + half)
    np.testing.assert_allclose(group.finals, [30, 40])  # each run's own last value


def test_x_time_uses_the_time_column(tmp_path, capsys):
    root = tmp_path / "runs"
    runs = [make_run(root, "a", [(0, 0.0, 1.0), (100, 2.0, 3.0), (200, 4.0, 5.0)], seed=1),
            make_run(root, "b", [(0, 0.0, 3.0), (100, 1.0, 5.0), (200, 4.0, 7.0)], seed=2)]
    (group,) = compare_data(runs, RETURN, x="time").groups
    np.testing.assert_allclose(group.x, [0, 1, 2, 4])
    np.testing.assert_allclose(group.mean, [2, (2 + 5) / 2, (3 + 5 + 2 / 3) / 2, 6])  # a at t=1: 2; b at t=2: 5 2/3
    (by_steps,) = compare_data(runs, RETURN, x="steps").groups
    np.testing.assert_allclose(by_steps.x, [0, 100, 200])

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        assert main(["compare", *map(str, runs), "--x", "time", "--out", "t.svg"]) == 0
    assert "wall-clock time (s)" in Path("t.svg").read_text()
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--x", "wallclock"]) == 2
    assert "--x" in capsys.readouterr().err


def test_unknown_by_field_is_one_line_with_close_matches(mixed, capsys):
    code = main(["compare", *map(str, mixed), "--by", "lerning_rate", "--out", "x.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: unknown --by field 'lerning_rate'") and "did you mean: learning_rate" in err[0]
    assert not Path("x.png").exists()
    assert main(["compare", *map(str, mixed), "--by", "zzz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --by field 'zzz'" in err[0] and "did you mean" not in err[0]


def test_atari_runs_get_the_random_normalised_score(tmp_path, capsys):
    pytest.importorskip("ale_py")
    root = tmp_path / "runs"
    random, human = 1.7, 30.5  # Breakout's reference scores
    runs = [make_run(root, "breakout-s1", curve([0.0, 10.0, human]), env="ALE/Breakout-v5", seed=1),
            make_run(root, "breakout-s2", curve([0.0, 5.0, random]), env="ALE/Breakout-v5", seed=2),
            make_run(root, "cartpole", curve([10.0, 100.0, 500.0]))]
    assert main(["compare", *map(str, runs), "--by", "env", "--out", "atari.png"]) == 0
    text, err = capsys.readouterr()
    assert header(text)[-1] == "final (score - random) / (human - random): IQM [95% CI]"
    rows = table_rows(text)
    assert rows["env=ALE/Breakout-v5"] == ["2", *["16.1 [1.7, 30.5]"] * 3, "16.1", "0.500 [0.000, 1.000]"]
    assert "performance profile: atari-profile.png" in err and Path("atari-profile.png").stat().st_size > 1000
    assert rows["env=CartPole-v1"][-1] == "-"
    groups = compare_data(runs, RETURN, by="env", registry=load_lab().registry).groups
    np.testing.assert_allclose(groups[0].normalized, [1.0, 0.0])
    # a metric that is no game score is never normalised
    assert main(["compare", *map(str, runs), "--metric", "train/loss", "--out", "loss.png"]) == 0
    assert "human" not in capsys.readouterr().out


def test_legend_names_only_what_differs(tmp_path):
    root = tmp_path / "runs"
    toy = [make_run(root, f"toy-{lr}-s{s}", curve([s, lr * 100, 1.0]), algo="toy", env=None, data="toy-data",
                    seed=s, config={"learning_rate": lr}) for lr in (0.01, 0.05) for s in (1, 2)]
    comparison = compare_data(toy, RETURN)
    assert [g.legend for g in comparison.groups] == ["learning_rate=0.01", "learning_rate=0.05"]
    assert comparison.title == "toy on toy-data"  # what all share goes in the title
    assert all(g.label.startswith("toy toy-data (learning_rate=") for g in comparison.groups)  # table: in full

    cart = [make_run(root, "dqn", curve([1, 2, 3])),
            make_run(root, "ppo", curve([1, 2, 4]), algo="ppo"),
            make_run(root, "ppo-lr", curve([1, 2, 5]), algo="ppo", config={"learning_rate": 0.01})]
    comparison = compare_data(cart, RETURN)
    assert [g.legend for g in comparison.groups] == ["dqn", "ppo (learning_rate=0.001)", "ppo (learning_rate=0.01)"]
    assert comparison.title == "CartPole-v1"

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        assert main(["compare", *map(str, toy), "--out", "legend.svg"]) == 0
    svg = Path("legend.svg").read_text()
    assert "learning_rate=0.05 (n=2)" in svg and BANDS["bootstrap"] in svg
    assert "toy toy-data" not in svg  # the shared part is the title, not repeated per line


def test_lower_is_better_metrics_report_the_lowest_mean(tmp_path, capsys):
    root = tmp_path / "runs"
    runs = [make_run(root, f"vae-s{s}", curve([300.0, 200.0 + s, 150.0 + s]), algo="vae", env=None, data="mnist",
                     seed=s, metric="eval/nelbo", best=150.0 + s) for s in (1, 2)]
    assert main(["compare", *map(str, runs), "--out", "vae.pdf"]) == 0
    text = capsys.readouterr().out
    assert header(text)[5] == "best of the mean curve (min)"
    assert table_rows(text)["vae mnist"] == ["2", *["151.5 [151, 152]"] * 3, "151.5"]
    assert Path("vae.pdf").stat().st_size > 1000


def test_t_critical_values():
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(4) == pytest.approx(2.7764, abs=1e-4)
    for df, exact in ((40, 2.021075), (60, 2.000298), (120, 1.979930)):  # beyond the table
        assert t_critical(df) == pytest.approx(exact, abs=1e-4)


def test_bootstrap_bands_stay_within_what_the_runs_scored(tmp_path):
    root = tmp_path / "runs"
    values = [[0, 250, 500], [0, 480, 500], [0, 10, 20], [0, 300, 500]]  # four CartPole seeds: returns in [0, 500]
    runs = [make_run(root, f"s{s}", curve(v), seed=s) for s, v in enumerate(values, start=1)]
    (boot,) = compare_data(runs, RETURN).groups
    stacked = np.array(values, dtype=float)
    assert (boot.low >= stacked.min(0) - 1e-9).all() and (boot.high <= stacked.max(0) + 1e-9).all()
    np.testing.assert_allclose(boot.mean, stacked.mean(0))
    (t_band,) = compare_data(runs, RETURN, band="t").groups
    assert t_band.low.min() < 0 and t_band.high.max() > 500, "the t-interval leaves the possible range"
    (iqm,) = compare_data(runs, RETURN, estimator="iqm").groups
    np.testing.assert_allclose(iqm.mean[1], (250 + 300) / 2)  # IQM of four: the middle two (25% cut each end)


def test_runs_of_other_budgets_are_other_experiments_and_mixed_ends_are_said(tmp_path, capsys):
    root = tmp_path / "runs"
    short = [make_run(root, f"short-s{s}", curve([0, s, 2 * s], (0, 15000, 30000)), seed=s, budget=30000)
             for s in (1, 2, 3)]
    long = make_run(root, "long", curve([0, 5, 9, 12], (0, 30000, 60000, 100000)), seed=1, budget=100000)
    comparison = compare_data([*short, long], RETURN)
    assert [g.n for g in comparison.groups] == [3, 1], "a 100k-step run is not pooled with 30k-step seeds"
    assert all("budget=" in g.label for g in comparison.groups)
    pooled = compare_data([*short, long], RETURN, by="algo")
    assert pooled.notes and "end at steps" in pooled.notes[0] and "100000" in pooled.notes[0]
    assert main(["compare", *map(str, [*short, long]), "--by", "algo", "--out", "b.png"]) == 0
    assert "note: algo=dqn: its runs end at steps" in capsys.readouterr().err


def test_the_table_for_a_paper_and_published_reference_curves(mixed, capsys, tmp_path):
    assert main(["compare", *map(str, mixed), "--by", "algo", "--table", "csv", "--out", "c.png"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("algo,runs,final eval/return_mean: IQM [95% CI]") and lines[1].startswith("algo=dqn,2,")
    assert len(lines) == 3 and "plot: c.png" in err, "stdout is the CSV alone; the plot's path goes to stderr"
    assert main(["compare", *map(str, mixed), "--by", "algo", "--table", "latex", "--out", "c.png"]) == 0
    latex = capsys.readouterr().out
    assert latex.startswith("\\begin{tabular}{lrrrrr}") and "algo=dqn & 2 & 21 [20, 22]" in latex
    assert "eval/return\\_mean" in latex and "\\end{tabular}" in latex
    published = tmp_path / "CleanRL ppo.csv"
    published.write_text("step,value,low,high\n0,0,0,0\n100,10,5,15\n200,20,15,25\n")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        assert main(["compare", *map(str, mixed), "--reference", str(published), "--out", "ref.svg"]) == 0
    assert "CleanRL ppo (published)" in Path("ref.svg").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("step,value\n0,zero\n")
    capsys.readouterr()
    assert main(["compare", *map(str, mixed), "--reference", str(bad), "--out", "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0] and not Path("x.png").exists()


def test_the_table_s_iqm_mean_and_median_are_over_the_runs() -> None:
    from lab.experiments.aggregates import final_intervals

    finals = np.array([[91.8], [174.4], [243.3], [500.0], [500.0]])  # five a2c seeds on CartPole
    table = final_intervals({"a2c": finals}, reps=200)["a2c"]
    assert table["median"][0] == pytest.approx(243.3), "the median run, not the mean of one task"
    assert table["mean"][0] == pytest.approx(finals.mean())
    assert table["iqm"][0] == pytest.approx((174.4 + 243.3 + 500) / 3)  # 25% of five cut each end: one
    for estimate, low, high in table.values():
        assert finals.min() <= low <= estimate <= high <= finals.max()
