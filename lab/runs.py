"""`lab runs` (a table of runs) and `lab compare` (curves with seed spread + markdown table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lab.errors import LabError
from lab.rundir import read_config, read_metrics, read_summary

# Plot formats `lab compare --out` writes (matplotlib knows more, but these are the useful ones).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
# Settings that never make two runs different experiments.
_NOT_EXPERIMENT = {"seed", "name", "runs_dir", "data_dir", "wandb", "device", "experiment", "project",
                   "wandb_artifacts", "video", "log_interval", "eval_interval", "checkpoint_interval", "threads"}


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
        rows.append({
            "name": run_dir.name,
            "algo": doc["algo"] if doc else "-",
            "target": run.get("env") or run.get("data") or "-",
            "steps": summary.get("global_step", "-"),
            "status": (f"broken ({' and '.join(unreadable)} unreadable)" if unreadable
                       else summary.get("status", "running")),
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


def _experiment_key(doc: dict[str, Any]) -> tuple:
    settings = {k: v for k, v in doc["run"].items() if k not in _NOT_EXPERIMENT | {"steps", "epochs"}}
    return (doc["algo"], repr(sorted(settings.items())), repr(sorted(doc.get("config", {}).items())))


def _base_label(doc: dict[str, Any]) -> str:
    return f"{doc['algo']} {doc['run'].get('env') or doc['run'].get('data')}"


def _labels(experiments: list[dict[str, Any]]) -> list[str]:
    """'algo env', plus the settings that tell apart experiments sharing that much: only
    the fields that differ between them, so the legend stays short."""
    labels = []
    for doc in experiments:
        base = _base_label(doc)
        peers = [{**d["run"], **d.get("config", {})} for d in experiments if _base_label(d) == base]
        shared = set.intersection(*(set(p) for p in peers)) - _NOT_EXPERIMENT - {"steps", "epochs"}
        differing = sorted(k for k in shared if len({repr(p.get(k)) for p in peers}) > 1)
        mine = {**doc["run"], **doc.get("config", {})}
        extras = [f"{k}={mine[k]}" for k in differing]
        labels.append(base + (f" ({', '.join(extras)})" if extras else ""))
    return labels


def compare(run_dirs: list[Path], metric: str | None, out: Path) -> str:
    """Plot `metric` against global_step per experiment (mean and spread over seeds).

    Returns a markdown table: experiment, seeds, final mean ± std, best mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = {d: read_config(d) for d in run_dirs}
    if metric is None:
        metric = read_summary(run_dirs[0]).get("key_metric") or "train/episode_return"
    groups: dict[tuple, list[Path]] = {}
    for run_dir, doc in docs.items():
        groups.setdefault(_experiment_key(doc), []).append(run_dir)
    labels = dict(zip(groups, _labels([docs[members[0]] for members in groups.values()])))

    fig, ax = plt.subplots(figsize=(10, 5))
    lines = [f"| experiment | seeds | final {metric} (mean ± std) | best mean |", "|---|---|---|---|"]
    plotted = 0
    for key, members in groups.items():
        curves = []
        for run_dir in members:
            pts = [(r["global_step"], r[metric]) for r in read_metrics(run_dir)
                   if isinstance(r.get(metric), (int, float))]
            if pts:
                steps, values = map(np.asarray, zip(*pts))
                curves.append((steps, values.astype(float)))
        label = labels[key]
        if not curves:
            lines.append(f"| {label} | {len(members)} | no '{metric}' logged | - |")
            continue
        grid = np.unique(np.concatenate([s for s, _ in curves]))
        grid = grid[grid <= min(s[-1] for s, _ in curves)] if len(curves) > 1 else grid
        stacked = np.stack([np.interp(grid, s, v) for s, v in curves])
        mean, std = stacked.mean(0), stacked.std(0)
        ax.plot(grid, mean, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        finals = np.array([v[-1] for _, v in curves])
        best = float(mean.max())
        lines.append(f"| {label} | {len(curves)} | {finals.mean():.4g} ± {finals.std():.2g} | {best:.4g} |")
        plotted += 1
    if plotted == 0:
        plt.close(fig)
        raise LabError(f"no run logged {metric!r}; pass --metric with a name from metrics.jsonl")
    ax.set_xlabel("global_step")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over it
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return "\n".join(lines) + f"\n\nplot: {out}"
