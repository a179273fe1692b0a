"""`lab runs`: a table of the runs in a folder, live or killed, with their status and key metric."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

from lab.api import LabError, RunStatus
from lab.files import FileFault
from lab.run.checkpoint import checkpoint_step
from lab.run.rundir import lock_holder, read_config, read_metrics, write_summary


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


def rebuild_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json again for a run that lost it (deleted, or killed before it ended): the last
    value of each metric from metrics.jsonl (else the checkpoint's), the step, the key metric and
    its best value from checkpoints/latest.pt, finished if that reached the budget config.yaml
    records, else interrupted. Written atomically (where the folder takes it) and returned; None
    when there is no checkpoint to rebuild from."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        doc = read_config(run_dir)
    except Exception:
        return None
    step, runner = int(state["global_step"]), state.get("runner", {})
    target = int(doc.get("total_steps") or 0)
    summary: dict[str, Any] = dict(runner.get("last_values", {}))
    for row in read_metrics(run_dir):
        if row["global_step"] <= step:
            summary.update({k: v for k, v in row.items() if k not in ("global_step", "time")})
    status = RunStatus.FINISHED if target and step >= target else RunStatus.INTERRUPTED
    summary.update({"status": status.value, "global_step": step,
                    "target_steps": target, "elapsed_s": runner.get("elapsed"),
                    "key_metric": runner.get("key_metric") or _key_metric(str(doc.get("algo"))),
                    "best": runner.get("best"), "best_step": runner.get("best_step"), "rebuilt": True})
    try:
        write_summary(run_dir, summary)
    except FileFault as exc:  # a folder `lab runs` may only read (a colleague's): the table shows it anyway
        print(f"note: rebuilt the summary of {run_dir} from metrics.jsonl and checkpoints/latest.pt, but {exc}",
              file=sys.stderr)
        return summary
    print(f"note: rebuilt {run_dir / 'summary.json'} from metrics.jsonl and checkpoints/latest.pt", file=sys.stderr)
    return summary


@functools.cache
def _key_metrics(plugins_dir: str | None) -> dict[str, str]:
    """{algorithm: key metric} of the algorithms installed (built-in, installed, $LAB_PLUGINS_DIR),
    for checkpoints written before they named it; loaded once, and only when one is rebuilt."""
    from lab.run.discovery import load_lab

    try:
        return {name: reg.obj.key_metric for name, reg in load_lab(plugins_dir).registry.algorithms.items()}
    except Exception:  # a summary without its key metric rather than no `lab runs`
        return {}


def _key_metric(algo: str) -> str | None:
    return _key_metrics(os.environ.get("LAB_PLUGINS_DIR") or None).get(algo)


def _status(run_dir: Path, summary: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """(status, steps, summary) as they are now: the lock tells a live run from one a kill
    stopped, and a killed run's steps are its checkpoint's (a summary may be from before a
    killed resume); a summary.json that is missing is rebuilt (`rebuild_summary`)."""
    holder = lock_holder(run_dir)
    if holder:
        return f"running ({holder.split(' (')[0]})", summary.get("global_step", "-"), summary
    if holder == "":  # a lock left behind: its process was killed
        step = checkpoint_step(run_dir)
        where = f"at step {step:,}; `lab resume` continues it" if step is not None else \
            f"before its first checkpoint; nothing to resume: `rm -r {run_dir}` and train again"
        return f"killed ({where})", step if step is not None else "-", summary
    if not summary:
        summary = rebuild_summary(run_dir) or {}
        if not summary:
            return f"no summary.json and no checkpoint; nothing to resume: `rm -r {run_dir}` and train again", "-", {}
    return str(summary.get("status", "-")), summary.get("global_step", "-"), summary


def run_rows(runs_dir: Path) -> list[dict[str, Any]]:
    """One row per run directory; a run with a corrupt file is shown as broken, never hidden."""
    rows = []
    if not runs_dir.is_dir():
        return rows
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()):
        doc, summary = _config(run_dir), _summary(run_dir)
        unreadable = [name for name, part in (("config.yaml", doc), ("summary.json", summary)) if part is None]
        run = doc["run"] if doc else {}
        status, steps, summary = _status(run_dir, summary or {})
        key = summary.get("key_metric")  # after `_status`: a rebuilt summary names it too
        rows.append({
            "name": run_dir.name,
            "algo": doc["algo"] if doc else "-",
            "target": run.get("env") or run.get("data") or "-",
            "steps": steps,
            "status": f"broken ({' and '.join(unreadable)} unreadable)" if unreadable else status,
            "metric": key or "-",
            "value": summary.get(key) if key else None,
            "best": summary.get("best") if key else None,
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
    for column in ("name", "algo", "env/data", "steps", "status", "key metric: last (best)"):
        table.add_column(column)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['metric']} {r['value']:.4g}"
        if r["best"] is not None:
            value += f" ({r['best']:.4g})"
        table.add_row(r["name"], r["algo"], r["target"], str(r["steps"]), r["status"], value)
    Console(width=200).print(table)
