"""`lab runs` (a table of runs) and `lab compare` (mean curves with a 95% band over runs + markdown table)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lab.errors import LabError, unknown
from lab.run.rundir import lock_holder, read_config, read_metrics, read_summary, write_summary

if TYPE_CHECKING:
    from lab.run.registry import Registry

# Plot formats `lab compare --out` writes (matplotlib knows more, but these are the useful ones).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
# Settings that never make two runs different experiments (trackers' settings neither: `compare_data`).
_NOT_EXPERIMENT = {"seed", "name", "runs_dir", "data_dir", "device", "experiment", "video", "log_interval",
                   "eval_interval", "checkpoint_interval", "threads", "trackers"}


def _summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json; {} while it does not exist (the run is still going), None when it is corrupt.

    rundir.read_summary returns {} for both, which would list a corrupt run as running.
    """
    path = run_dir / "summary.json"
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _config(run_dir: Path) -> dict[str, Any] | None:
    """config.yaml, or None when it is corrupt."""
    try:
        doc = read_config(run_dir)
    except LabError:
        return None
    return doc if isinstance(doc["run"], dict) else None


def checkpoint_step(run_dir: Path) -> int | None:
    """The global_step of checkpoints/latest.pt, read without loading its tensors (mmap)."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:
        return None


def rebuild_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json again for a run that lost it (deleted, or killed before it ended): the last
    value of each metric from metrics.jsonl, the step and best value from checkpoints/latest.pt,
    finished if that reached the budget config.yaml records, else interrupted. Written
    atomically and returned; None when there is no checkpoint to rebuild from."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        target = int(read_config(run_dir).get("total_steps") or 0)
    except Exception:
        return None
    step, runner = int(state["global_step"]), state.get("runner", {})
    summary: dict[str, Any] = {}
    for row in read_metrics(run_dir):
        if row["global_step"] <= step:
            summary.update({k: v for k, v in row.items() if k not in ("global_step", "time")})
    summary.update({"status": "finished" if target and step >= target else "interrupted", "global_step": step,
                    "target_steps": target, "elapsed_s": runner.get("elapsed"), "best": runner.get("best"),
                    "best_step": runner.get("best_step"), "rebuilt": True})
    write_summary(run_dir, summary)
    print(f"note: rebuilt {run_dir / 'summary.json'} from metrics.jsonl and checkpoints/latest.pt", file=sys.stderr)
    return summary


def _status(run_dir: Path, summary: dict[str, Any]) -> tuple[str, Any]:
    """(status, steps) as they are now: the lock tells a live run from one a kill stopped, and
    a killed run's steps are its checkpoint's (a summary may be from before a killed resume)."""
    holder = lock_holder(run_dir)
    if holder:
        return f"running ({holder.split(' (')[0]})", summary.get("global_step", "-")
    if holder == "":  # a lock left behind: its process was killed
        step = checkpoint_step(run_dir)
        where = f"at step {step:,}; `lab resume` continues it" if step is not None else "before its first checkpoint"
        return f"killed ({where})", step if step is not None else "-"
    if not summary:
        summary = rebuild_summary(run_dir) or {}
        if not summary:
            return "no summary.json and no checkpoint: start it again with `lab train`", "-"
    return str(summary.get("status", "-")), summary.get("global_step", "-")


def run_rows(runs_dir: Path) -> list[dict[str, Any]]:
    """One row per run directory; a run with a corrupt file is shown as broken, never hidden."""
    rows = []
    if not runs_dir.is_dir():
        return rows
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()):
        doc, summary = _config(run_dir), _summary(run_dir)
        unreadable = [name for name, part in (("config.yaml", doc), ("summary.json", summary)) if part is None]
        run = doc["run"] if doc else {}
        summary = summary or {}
        key = summary.get("key_metric")
        status, steps = _status(run_dir, summary)
        rows.append({
            "name": run_dir.name,
            "algo": doc["algo"] if doc else "-",
            "target": run.get("env") or run.get("data") or "-",
            "steps": steps,
            "status": f"broken ({' and '.join(unreadable)} unreadable)" if unreadable else status,
            "metric": key or "-",
            "value": summary.get(key) if key else None,
        })
    return rows


def print_runs(runs_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = run_rows(runs_dir)
    if not rows:
        print(f"no runs in {runs_dir} (start one with `lab train ALGO ...`)")
        return
    table = Table(title=f"runs in {runs_dir}")
    for column in ("name", "algo", "env/data", "steps", "status", "key metric"):
        table.add_column(column)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['metric']} = {r['value']:.4g}"
        table.add_row(r["name"], r["algo"], r["target"], str(r["steps"]), r["status"], value)
    Console(width=200).print(table)


def _experiment_key(doc: dict[str, Any], ignored: set[str]) -> tuple:
    settings = {k: v for k, v in doc["run"].items() if k not in ignored | {"steps", "epochs"}}
    return (doc["algo"], repr(sorted(settings.items())), repr(sorted(doc.get("config", {}).items())))


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
        shared = set.intersection(*(set(p) for p in peers)) - ignored - {"steps", "epochs"}
        differing = sorted(k for k in shared if len({repr(p.get(k)) for p in peers}) > 1)
        mine = {**doc["run"], **doc.get("config", {})}
        extras.append([f"{k}={mine[k]}" for k in differing])
    return extras


def _labels(experiments: list[dict[str, Any]], ignored: set[str]) -> list[str]:
    """'algo env', plus the settings that tell apart experiments sharing that much: only
    the fields that differ between them, so the table stays short."""
    return [_base_label(doc) + (f" ({', '.join(extra)})" if extra else "")
            for doc, extra in zip(experiments, _extras(experiments, ignored))]


def _legend_labels(experiments: list[dict[str, Any]], ignored: set[str]) -> list[str]:
    """Like `_labels`, but algorithm and env/data only where they differ between experiments
    (what all share goes in the plot's title): the legend names only what tells curves apart."""
    many_algos = len({d["algo"] for d in experiments}) > 1
    many_targets = len({repr(_target(d)) for d in experiments}) > 1
    labels = []
    for doc, extra in zip(experiments, _extras(experiments, ignored)):
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
BAND = "95% t-interval of the mean over runs"


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
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))  # band edges (== mean for one run)
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    finals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each run's last logged value
    normalized: np.ndarray | None = None  # finals, normalised by reference scores, when every run's env has them


@dataclass
class Comparison:
    metric: str
    x: str  # "steps" or "time"
    by: str | None
    title: str
    higher_is_better: bool
    groups: list[Group]


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
    xs, ys = (np.asarray(a, dtype=float) for a in zip(*pts))
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def compare_data(run_dirs: list[Path], metric: str | None = None, by: str | None = None,
                 x: str = "steps", registry: Registry | None = None) -> Comparison:
    """The numbers behind `lab compare`: per group, the mean curve and its band on a common grid.

    Each run's curve is linearly interpolated onto the union of the group's x values, kept only
    where every run of the group has data (from the latest first point to the earliest last one),
    so a shorter run never drags the band. The band is the 95% t-interval of the mean over the
    group's runs: mean ± t(0.975, n-1) · std / sqrt(n) (std with n-1). `registry` (the loaded
    plugins) says which settings are trackers' and how each env's scores normalise.
    """
    if x not in ("steps", "time"):
        raise LabError(f"--x must be steps or time (got {x!r})")
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

    members: dict[Any, list[Path]] = {}
    if by is None:
        for run_dir, doc in docs.items():
            members.setdefault(_experiment_key(doc, ignored), []).append(run_dir)
        firsts = [docs[runs[0]] for runs in members.values()]
        labels, legends = _labels(firsts, ignored), _legend_labels(firsts, ignored)
    else:
        name = _field_name(by)
        if not any(_field_value(doc, name) is not _UNSET for doc in docs.values()):
            shown = by.encode("unicode_escape").decode("ascii")  # the error stays one line
            raise unknown("--by field", shown, _known_fields(list(docs.values())),
                          "use algo, env, data or a key of the runs' config.yaml (e.g. learning_rate, seed)")
        values: dict[str, Any] = {}
        for run_dir, doc in docs.items():
            value = _field_value(doc, name)
            key = "unset" if value is _UNSET else repr(value)
            values.setdefault(key, value)
            members.setdefault(key, []).append(run_dir)
        members = dict(sorted(members.items(), key=lambda item: _sort_key(values[item[0]])))
        labels = [f"{name} not set" if values[k] is _UNSET else f"{name}={values[k]}" for k in members]
        legends = labels
    if len(set(labels)) < len(labels):  # experiments that differ only in settings some of them lack
        labels = [f"{label} [{runs[0].name}]" for label, runs in zip(labels, members.values())]
        legends = [f"{label} [{runs[0].name}]" for label, runs in zip(legends, members.values())]

    score = metric in SCORE_METRICS
    def normalized(run_dir: Path, value: float) -> float | None:
        return registry.normalized_score(docs[run_dir]["run"].get("env"), value) if registry is not None else None

    groups = []
    for label, legend, runs in zip(labels, legends, members.values()):
        group = Group(label, legend, runs)
        have = [curves[d] for d in runs if d in curves]
        group.n = len(have)
        if have:
            group.finals = np.array([ys[-1] for _, ys in have])
            start, end = max(xs[0] for xs, _ in have), min(xs[-1] for xs, _ in have)
            grid = np.unique(np.concatenate([xs for xs, _ in have]))
            group.x = grid[(grid >= start) & (grid <= end)]
            stacked = np.stack([np.interp(group.x, xs, ys) for xs, ys in have])
            group.mean = stacked.mean(0)
            if group.n > 1:
                half = t_critical(group.n - 1) * stacked.std(0, ddof=1) / np.sqrt(group.n)
                group.low, group.high = group.mean - half, group.mean + half
            else:
                group.low, group.high = group.mean.copy(), group.mean.copy()
            with_curve = [d for d in runs if d in curves]
            finals = [normalized(d, curves[d][1][-1]) for d in with_curve] if score else [None]
            if all(value is not None for value in finals):
                group.normalized = np.array(finals)
        groups.append(group)
    return Comparison(metric, x, _field_name(by) if by else None, _shared_title(list(docs.values())),
                      _higher_is_better(metric, run_dirs, summaries, curves), groups)


def _mean_std(values: np.ndarray, mean_digits: str = ".4g") -> str:
    if len(values) == 1:
        return format(float(values[0]), mean_digits)
    return f"{values.mean():{mean_digits}} ± {values.std(ddof=1):.2g}"


def compare_table(comparison: Comparison) -> str:
    """Markdown: group, runs, final value mean ± std over runs, best of the mean curve, and for
    game scores with reference scores (Atari) the final normalised score (a column only when some group has one)."""
    metric = comparison.metric
    normalized = any(g.normalized is not None for g in comparison.groups)
    best = "max" if comparison.higher_is_better else "min"
    head = ["experiment" if comparison.by is None else comparison.by, "runs",
            f"final {metric} (mean ± std)", f"best mean ({best})"]
    if normalized:
        head.append("final (score - random) / (human - random)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in comparison.groups:
        if g.n == 0:
            cells = [g.label, str(len(g.runs)), f"no '{metric}' logged", "-"]
        else:
            peak = "-" if not len(g.mean) else format(float(g.mean.max() if best == "max" else g.mean.min()), ".4g")
            cells = [g.label, str(g.n), _mean_std(g.finals), peak]
        if normalized:
            cells.append("-" if g.normalized is None else _mean_std(g.normalized, ".3f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(run_dirs: list[Path], metric: str | None, out: Path, by: str | None = None, x: str = "steps",
            registry: Registry | None = None) -> str:
    """Plot `metric` against global_step (or wall-clock time) per group: the mean over its runs
    and a 95% t-interval band. Returns the markdown table of `compare_table` and the plot's path."""
    comparison = compare_data(run_dirs, metric, by, x, registry)
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
    ax.set_xlabel("global_step" if comparison.x == "steps" else "wall-clock time (s)")
    ax.set_ylabel(comparison.metric)
    if comparison.title:
        ax.set_title(comparison.title)
    ax.legend(fontsize="small", title=f"mean; band: {BAND}", title_fontsize="small",
              loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over it
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return compare_table(comparison) + f"\n\nplot: {out}"
