"""`lab compare`: curves of a metric over runs grouped into experiments, with bands and a table.

Runs group into one experiment when every setting that shapes learning agrees, the budget
included (it sets the schedules' horizon); `--by FIELD` groups by one setting instead. Each
group's curve is its runs' mean (or IQM) on a common grid, with a 95% percentile bootstrap
band (`--band t`: the Student-t interval of the mean); its final scores get the IQM, mean and
median with stratified bootstrap intervals (`lab.experiments.aggregates`). Game scores
normalise by the env family's reference scores (Atari: random and human), and across tasks a
performance profile shows the fraction of runs above each normalised score.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lab.api import LabError
from lab.api.errors import unknown
from lab.experiments.aggregates import bootstrap_band, final_intervals, performance_profile
from lab.files import check_output, writing
from lab.run.rundir import read_config, read_metrics, read_summary

if TYPE_CHECKING:
    from lab.run.registry import Registry

# Plot formats `lab compare --out` writes (matplotlib knows more, but these are the useful ones).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
TABLE_FORMATS = ("md", "csv", "latex")
# Settings that never make two runs different experiments (trackers' settings neither: `compare_data`).
_NOT_EXPERIMENT = {"seed", "name", "runs_dir", "data_dir", "device", "experiment", "video", "log_interval",
                   "eval_interval", "checkpoint_interval", "threads", "trackers"}


# What `_budget` stands for (the schedules' horizon): steps and epochs may differ within an experiment.
BUDGET_SETTINGS = {"steps", "epochs", "horizon"}


def _experiment_key(doc: dict[str, Any], ignored: set[str]) -> tuple:
    """What makes runs one experiment: the algorithm, every setting that shapes learning, and
    the budget the run was created with (it is the schedules' horizon)."""
    settings = {k: v for k, v in doc["run"].items() if k not in ignored | BUDGET_SETTINGS}
    return (doc["algo"], repr(sorted(settings.items())), repr(sorted(doc.get("config", {}).items())), _budget(doc))


def _budget(doc: dict[str, Any]) -> int | None:
    """The schedules' horizon: `--horizon`, else the step budget a run was created with
    (`lab resume --steps` extends `total_steps` but leaves it; older runs recorded only
    `total_steps`)."""
    value = doc.get("horizon", doc.get("total_steps"))
    return int(value) if isinstance(value, (int, float)) else None


def _target(doc: dict[str, Any]) -> Any:
    return doc["run"].get("env") or doc["run"].get("data")


def _base_label(doc: dict[str, Any]) -> str:
    return f"{doc['algo']} {_target(doc)}"


def _extras(experiments: list[dict[str, Any]], ignored: set[str]) -> list[list[str]]:
    """Per experiment, 'key=value' for the settings that tell it apart from the experiments
    sharing its algorithm and env/data (only settings they all have, and only those that differ)."""
    extras = []
    for doc in experiments:
        base = _base_label(doc)
        peers = [{**d["run"], **d.get("config", {})} for d in experiments if _base_label(d) == base]
        shared = set.intersection(*(set(p) for p in peers)) - ignored - BUDGET_SETTINGS
        differing = sorted(k for k in shared if len({repr(p.get(k)) for p in peers}) > 1)
        mine = {**doc["run"], **doc.get("config", {})}
        budgets = {_budget(d) for d in experiments if _base_label(d) == base}
        extras.append([f"{k}={mine[k]}" for k in differing] + ([f"budget={_budget(doc)}"] if len(budgets) > 1 else []))
    return extras


def _labels(experiments: list[dict[str, Any]], ignored: set[str]) -> list[str]:
    """'algo env', plus the settings that tell apart experiments sharing that much: only
    the fields that differ between them, so the table stays short."""
    return [_base_label(doc) + (f" ({', '.join(extra)})" if extra else "")
            for doc, extra in zip(experiments, _extras(experiments, ignored), strict=True)]


def _legend_labels(experiments: list[dict[str, Any]], ignored: set[str]) -> list[str]:
    """Like `_labels`, but algorithm and env/data only where they differ between experiments
    (what all share goes in the plot's title): the legend names only what tells curves apart."""
    many_algos = len({d["algo"] for d in experiments}) > 1
    many_targets = len({repr(_target(d)) for d in experiments}) > 1
    labels = []
    for doc, extra in zip(experiments, _extras(experiments, ignored), strict=True):
        parts = ([doc["algo"]] if many_algos else []) + ([str(_target(doc))] if many_targets else [])
        if extra:
            parts.append(f"({', '.join(extra)})" if parts else ", ".join(extra))
        labels.append(" ".join(parts) or _base_label(doc))
    return labels


def _shared_title(docs: list[dict[str, Any]]) -> str:
    """'algo on env' for what every run shares (either part may be missing)."""
    algos, targets = {d["algo"] for d in docs}, {repr(_target(d)) for d in docs}
    algo = docs[0]["algo"] if len(algos) == 1 else None
    target = _target(docs[0]) if len(targets) == 1 and _target(docs[0]) is not None else None
    if algo and target:
        return f"{algo} on {target}"
    return str(algo or target or "")


# --- `lab compare --by FIELD`: the value of FIELD in a run's config.yaml -------------------------------
_TOP_LEVEL_FIELDS = ("algo", "kind")
_UNSET = object()


def _field_name(by: str) -> str:
    """`--by learning-rate` and `--by --learning-rate` mean the config key learning_rate."""
    return by.strip().lstrip("-").replace("-", "_")


def _field_value(doc: dict[str, Any], name: str) -> Any:
    if name in _TOP_LEVEL_FIELDS:
        return doc.get(name, _UNSET)
    if name in doc["run"]:
        return doc["run"][name]
    return doc.get("config", {}).get(name, _UNSET)


def _known_fields(docs: list[dict[str, Any]]) -> list[str]:
    fields: dict[str, None] = dict.fromkeys(_TOP_LEVEL_FIELDS)
    for doc in docs:
        fields.update(dict.fromkeys(doc["run"]))
        fields.update(dict.fromkeys(doc.get("config", {})))
    return list(fields)


def _sort_key(value: Any) -> tuple:
    """Groups of --by in value order (numbers numerically); unset last."""
    if value is _UNSET:
        return (2, "", 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, "", float(value))
    return (1, repr(value), 0.0)


# --- the confidence band --------------------------------------------------------------------------------
# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
BANDS = {"bootstrap": "95% bootstrap interval over runs", "t": "95% t-interval of the mean over runs"}


def t_critical(df: int) -> float:
    """t_{0.975, df}: the table above, then the Cornish-Fisher expansion (error < 1e-4 beyond 30)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 runs")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963985
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


# --- game scores: finals normalised as (score - random) / (human - random) where the env's family says how
SCORE_METRICS = ("eval/return_mean", "train/episode_return")  # true game scores (not clipped rewards)


@dataclass
class Group:
    """One curve of `lab compare`: runs sharing an experiment (or a --by value)."""

    label: str  # its row in the table
    legend: str  # its line in the legend: only what differs between groups
    runs: list[Path]
    n: int = 0  # runs that logged the metric
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # common grid: where all n runs have data
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the curve: the estimator over runs
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))  # band edges (== the curve for one run)
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    finals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each run's last logged value
    normalized: np.ndarray | None = None  # finals, normalised by reference scores, when every run's env has them
    tasks: list[str] = field(default_factory=list)  # the env (or data) of each run with a curve
    aggregates: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # IQM/mean/median, 95% CI
    budgets: set[int | None] = field(default_factory=set)  # the budgets its runs were created with


@dataclass
class Comparison:
    metric: str
    x: str  # "steps" or "time"
    by: str | None
    title: str
    higher_is_better: bool
    groups: list[Group]
    band: str = "bootstrap"  # bootstrap | t
    estimator: str = "mean"  # mean | iqm: the curve
    notes: list[str] = field(default_factory=list)


def _higher_is_better(metric: str, run_dirs: list[Path], summaries: dict[Path, dict[str, Any]],
                      curves: dict[Path, tuple[np.ndarray, np.ndarray]]) -> bool:
    """Read off a run that ranks by this metric (its summary's `best` is its max or its min);
    otherwise by name: losses, likelihood bounds and distances are better low."""
    for run_dir in run_dirs:
        summary, curve = summaries[run_dir], curves.get(run_dir)
        best = summary.get("best")
        if summary.get("key_metric") != metric or not isinstance(best, (int, float)) or curve is None:
            continue
        low, high = float(curve[1].min()), float(curve[1].max())
        if low < high and np.isclose(best, low):
            return False
        if low < high and np.isclose(best, high):
            return True
    name = metric.rsplit("/", 1)[-1]
    return not any(word in name for word in ("loss", "nll", "nelbo", "fld", "error", "l1", "bpd"))


def _curve(run_dir: Path, metric: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    column = "global_step" if x == "steps" else "time"
    pts = [(r[column], r[metric]) for r in read_metrics(run_dir)
           if isinstance(r.get(metric), (int, float)) and isinstance(r.get(column), (int, float))]
    if not pts:
        return None
    xs, ys = (np.asarray(a, dtype=float) for a in zip(*pts, strict=True))
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def _group_runs(docs: dict[Path, dict[str, Any]], by: str | None,
                ignored: set[str]) -> tuple[dict[Any, list[Path]], list[str], list[str]]:
    """(group key: its runs, each group's table label, each group's legend label): the runs of
    each experiment (the same settings but the seed), or with `by` of each value of that field."""
    if by is None:
        members: dict[Any, list[Path]] = {}
        for run_dir, doc in docs.items():
            members.setdefault(_experiment_key(doc, ignored), []).append(run_dir)
        firsts = [docs[runs[0]] for runs in members.values()]
        labels, legends = _labels(firsts, ignored), _legend_labels(firsts, ignored)
    else:
        members, labels = _group_by_field(docs, by)
        legends = labels
    if len(set(labels)) < len(labels):  # experiments that differ only in settings some of them lack
        labels = [f"{label} [{runs[0].name}]" for label, runs in zip(labels, members.values(), strict=True)]
        legends = [f"{label} [{runs[0].name}]" for label, runs in zip(legends, members.values(), strict=True)]
    return members, labels, legends


def _group_by_field(docs: dict[Path, dict[str, Any]], by: str) -> tuple[dict[Any, list[Path]], list[str]]:
    """`--by FIELD`: (value: its runs, in the values' order; each group's label)."""
    name = _field_name(by)
    if not any(_field_value(doc, name) is not _UNSET for doc in docs.values()):
        shown = by.encode("unicode_escape").decode("ascii")  # the error stays one line
        raise unknown("--by field", shown, _known_fields(list(docs.values())),
                      "use algo, env, data or a key of the runs' config.yaml (e.g. learning_rate, seed)")
    members: dict[Any, list[Path]] = {}
    values: dict[str, Any] = {}
    for run_dir, doc in docs.items():
        value = _field_value(doc, name)
        key = "unset" if value is _UNSET else repr(value)
        values.setdefault(key, value)
        members.setdefault(key, []).append(run_dir)
    members = dict(sorted(members.items(), key=lambda item: _sort_key(values[item[0]])))
    return members, [f"{name} not set" if values[k] is _UNSET else f"{name}={values[k]}" for k in members]


def compare_data(run_dirs: list[Path], metric: str | None = None, by: str | None = None,
                 x: str = "steps", registry: Registry | None = None, band: str = "bootstrap",
                 estimator: str = "mean") -> Comparison:
    """The numbers behind `lab compare`: per group, the curve and its band on a common grid,
    and the final scores' aggregates.

    Each run's curve is linearly interpolated onto the union of the group's x values, kept only
    where every run of the group has data (from the latest first point to the earliest last one),
    so a shorter run never drags the band (a note says when runs of a group end at different
    steps). The curve is the mean (or IQM) over the group's runs; the band its 95% percentile
    bootstrap interval (`band="t"`: mean ± t(0.975, n-1) · std / sqrt(n)). `registry` (the
    loaded plugins) says which settings are trackers' and how each env's scores normalise.
    """
    if x not in ("steps", "time"):
        raise LabError(f"--x must be steps or time (got {x!r})")
    if band not in BANDS:
        raise LabError(f"--band must be {' or '.join(BANDS)} (got {band!r})")
    if estimator not in ("mean", "iqm"):
        raise LabError(f"--estimator must be mean or iqm (got {estimator!r})")
    docs = {d: read_config(d) for d in run_dirs}
    ignored = _NOT_EXPERIMENT | (registry.tracker_setting_names() if registry is not None else set())
    summaries = {d: read_summary(d) for d in run_dirs}
    if metric is None:
        metric = summaries[run_dirs[0]].get("key_metric") or "train/episode_return"
    curves = {d: c for d in run_dirs if (c := _curve(d, metric, x)) is not None}
    if not curves:
        if x == "time" and any(_curve(d, metric, "steps") is not None for d in run_dirs):
            raise LabError(f"no run has a 'time' column beside {metric!r} in metrics.jsonl; use --x steps")
        raise LabError(f"no run logged {metric!r}; pass --metric with a name from metrics.jsonl")

    members, labels, legends = _group_runs(docs, by, ignored)
    score = metric in SCORE_METRICS
    def normalized(run_dir: Path, value: float) -> float | None:
        return registry.normalized_score(docs[run_dir]["run"].get("env"), value) if registry is not None else None

    groups, notes = [], []
    for label, legend, runs in zip(labels, legends, members.values(), strict=True):
        group = Group(label, legend, runs)
        with_curve = [d for d in runs if d in curves]
        have = [curves[d] for d in with_curve]
        group.n = len(have)
        group.budgets = {_budget(docs[d]) for d in runs}
        if have:
            group.finals = np.array([ys[-1] for _, ys in have])
            group.tasks = [str(_target(docs[d])) for d in with_curve]
            start, end = max(xs[0] for xs, _ in have), min(xs[-1] for xs, _ in have)
            if len({xs[-1] for xs, _ in have}) > 1:
                notes.append(f"{label}: its runs end at steps {', '.join(f'{xs[-1]:g}' for xs, _ in have)}; the "
                             f"curve stops at {end:g}, where all have data (the table takes each run's last value)")
            grid = np.unique(np.concatenate([xs for xs, _ in have]))
            group.x = grid[(grid >= start) & (grid <= end)]
            stacked = np.stack([np.interp(group.x, xs, ys) for xs, ys in have])
            if band == "t":
                group.mean = stacked.mean(0)
                half = t_critical(group.n - 1) * stacked.std(0, ddof=1) / np.sqrt(group.n) if group.n > 1 else 0.0
                group.low, group.high = group.mean - half, group.mean + half
            else:
                group.mean, group.low, group.high = bootstrap_band(stacked, estimator)
            finals = [normalized(d, curves[d][1][-1]) for d in with_curve] if score else [None]
            if all(value is not None for value in finals):
                group.normalized = np.array(finals)
            group.aggregates = final_intervals({"g": _by_task(group.finals, group.tasks)})["g"]
        groups.append(group)
    return Comparison(metric, x, _field_name(by) if by else None, _shared_title(list(docs.values())),
                      _higher_is_better(metric, run_dirs, summaries, curves), groups, band, estimator, notes)


def _by_task(values: np.ndarray, tasks: list[str]) -> np.ndarray:
    """Scores as rliable takes them, (runs, tasks): the same number of runs of each task (the
    first ones, where tasks have different counts)."""
    names = list(dict.fromkeys(tasks))
    columns = [values[[i for i, task in enumerate(tasks) if task == name]] for name in names]
    runs = min(len(column) for column in columns)
    return np.stack([column[:runs] for column in columns], axis=1)


def _interval(value: tuple[float, float, float] | None, digits: str = ".4g") -> str:
    if value is None:
        return "-"
    estimate, low, high = value
    return f"{estimate:{digits}} [{low:{digits}}, {high:{digits}}]"


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the final-score table: per group its runs, the IQM, mean and median of
    the runs' final values with 95% stratified bootstrap intervals, the best point of its
    curve, and (for game scores with reference scores) the normalised IQM."""
    metric, best = comparison.metric, "max" if comparison.higher_is_better else "min"
    normalized = any(g.normalized is not None for g in comparison.groups)
    head = ["experiment" if comparison.by is None else comparison.by, "runs", f"final {metric}: IQM [95% CI]",
            "final: mean [95% CI]", "final: median [95% CI]", f"best of the {comparison.estimator} curve ({best})"]
    if normalized:
        head.append("final (score - random) / (human - random): IQM [95% CI]")
    rows = []
    for g in comparison.groups:
        if g.n == 0:
            cells = [g.label, str(len(g.runs)), f"no '{metric}' logged", "-", "-", "-"]
        else:
            peak = "-" if not len(g.mean) else format(float(g.mean.max() if best == "max" else g.mean.min()), ".4g")
            cells = [g.label, str(g.n), *(_interval(g.aggregates.get(name)) for name in ("iqm", "mean", "median")),
                     peak]
        if normalized:
            cells.append("-" if g.normalized is None else
                         _interval(final_intervals({"g": _by_task(g.normalized, g.tasks)})["g"]["iqm"], ".3f"))
        rows.append(cells)
    return head, rows


def compare_table(comparison: Comparison, fmt: str = "md") -> str:
    """The final-score table as markdown (`md`), `csv` or `latex` (for a paper)."""
    head, rows = table_rows(comparison)
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([head, *rows])
        return out.getvalue().rstrip("\n")
    if fmt == "latex":
        escape = lambda text: text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%") \
            .replace("&", "\\&").replace("#", "\\#")  # noqa: E731
        lines = ["\\begin{tabular}{l" + "r" * (len(head) - 1) + "}", "\\toprule",
                 " & ".join(escape(h) for h in head) + " \\\\", "\\midrule"]
        lines += [" & ".join(escape(c) for c in row) + " \\\\" for row in rows]
        return "\n".join([*lines, "\\bottomrule", "\\end{tabular}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def read_reference(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(label, steps, values, low, high) of a published curve: a CSV of step,value[,low,high]
    (a header row is allowed); the label is the file's stem."""
    if not path.is_file():
        raise LabError(f"--reference '{path}' is not a file; pass a CSV of step,value[,low,high]")
    rows = []
    for line in csv.reader(path.read_text(encoding="utf-8").splitlines()):
        try:
            rows.append([float(cell) for cell in line])
        except ValueError:
            if rows or not line:  # only a first (header) row may hold words
                raise LabError(f"--reference '{path}': '{','.join(line)}' is not step,value[,low,high] numbers") \
                    from None
    if not rows or any(len(row) not in (2, 4) or len(row) != len(rows[0]) for row in rows):
        raise LabError(f"--reference '{path}' needs rows of step,value or step,value,low,high")
    data = np.array(rows)
    low, high = (data[:, 2], data[:, 3]) if data.shape[1] == 4 else (None, None)
    return path.stem, data[:, 0], data[:, 1], low, high


def compare(run_dirs: list[Path], metric: str | None, out: Path, by: str | None = None, x: str = "steps",
            registry: Registry | None = None, band: str = "bootstrap", estimator: str = "mean",
            table: str = "md", references: list[Path] | None = None) -> tuple[str, list[str]]:
    """Plot `metric` against global_step (or wall-clock time) per group, with its band and any
    published reference curves, and, where scores normalise, a performance profile beside it
    (`OUT-profile.png`). Returns the final-score table (`table`: md, csv or latex) and the
    lines for the reader (notes, the plots' paths), kept apart so `> scores.csv` holds the
    table alone."""
    if table not in TABLE_FORMATS:
        raise LabError(f"--table must be one of {', '.join(TABLE_FORMATS)} (got {table!r})")
    check_output(out, "--out")  # before the work, as the suffix is
    curves = [read_reference(path) for path in references or []]
    comparison = compare_data(run_dirs, metric, by, x, registry, band, estimator)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for g in comparison.groups:
        if not len(g.x):
            continue
        (line,) = ax.plot(g.x, g.mean, label=f"{g.legend} (n={g.n})")
        if g.n > 1:
            ax.fill_between(g.x, g.low, g.high, color=line.get_color(), alpha=0.2, linewidth=0)
    for label, steps, values, low, high in curves:
        (line,) = ax.plot(steps, values, linestyle="--", label=f"{label} (published)")
        if low is not None:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.1, linewidth=0)
    ax.set_xlabel("global_step" if comparison.x == "steps" else "wall-clock time (s)")
    ax.set_ylabel(comparison.metric)
    if comparison.title:
        ax.set_title(comparison.title)
    what = "mean" if band == "t" else estimator
    ax.legend(fontsize="small", title=f"{what}; band: {BANDS[band]}", title_fontsize="small",
              loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over it
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with writing(out, "write the plot", "choose another --out"):
            fig.savefig(out, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    written = [f"plot: {out}"]
    profiled = {g.legend: g.normalized for g in comparison.groups if g.normalized is not None}
    if profiled:
        written.append(f"performance profile: {plot_profile(profiled, out.with_name(f'{out.stem}-profile{out.suffix}'))}")
    return compare_table(comparison, table), [*(f"note: {n}" for n in comparison.notes), *written]


def plot_profile(scores: dict[str, np.ndarray], out: Path) -> Path:
    """The fraction of runs whose normalised score exceeds each threshold, per group."""
    import matplotlib.pyplot as plt

    everything = np.concatenate(list(scores.values()))
    thresholds = np.linspace(min(0.0, float(everything.min())), max(1.0, float(everything.max())), 101)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, fraction in performance_profile(scores, thresholds).items():
        ax.plot(thresholds, fraction, label=f"{label} (n={len(scores[label])})")
    ax.set_xlabel("normalised score tau: (score - random) / (human - random)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with writing(out, "write the performance profile", "choose another --out"):
            fig.savefig(out, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
