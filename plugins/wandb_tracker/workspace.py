"""`lab wandb-workspace --project P`: a W&B workspace laid out for the lab's runs.

What the tracking docs' "Comparing runs on the dashboard" describes, built with
wandb-workspaces: runs grouped by their W&B group (an experiment: the seeds of one setting),
evaluation metrics against `global_step` as group means with a band, the training return
and loss, `perf/sps`, a sweep section (parallel coordinates of the searched settings,
parameter importance for the key metric), and the runs table's columns pinned. Logged in,
the command saves the workspace and prints its URL; offline, it writes the workspace's spec
(W&B's own view JSON) to a file and says that saving it needs `wandb login`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lab.api import LabError

STEP = "global_step"
EVALUATION = ("eval/return_mean", "eval/normalized_score", "eval/accuracy", "eval/fld", "eval/nelbo",
              "eval/class_preservation")
TRAINING = ("train/episode_return", "train/loss")
SWEPT = ("learning_rate", "batch_size", "gamma", "tau", "ent_coef")  # under config.yaml's `config:`
PINNED = ("run:displayName", "config:algo", "config:run.env", "config:run.data", "config:seed",
          "summary:status", "summary:best", "summary:global_step")


def build(entity: str, project: str, key_metric: str = "eval/return_mean") -> Any:
    """The workspace (a wandb_workspaces Workspace), not saved."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def curves(metrics: tuple[str, ...]) -> list[Any]:
        return [wr.LinePlot(title=metric, x=STEP, y=[metric], groupby_aggfunc="mean", groupby_rangefunc="stderr",
                            smoothing_type="none") for metric in metrics]

    sections = [
        ws.Section(name="Evaluation", panels=curves(EVALUATION), is_open=True),
        ws.Section(name="Training", panels=curves(TRAINING), is_open=True),
        ws.Section(name="Speed", panels=curves(("perf/sps",)), is_open=False),
        ws.Section(name="Sweeps", is_open=False, panels=[
            wr.ParallelCoordinatesPlot(title="settings against the key metric", columns=[
                *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(f"config.{name}")) for name in SWEPT),
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(key_metric))]),
            wr.ParameterImportancePlot(with_respect_to=key_metric)]),
    ]
    return ws.Workspace(
        entity=entity, project=project, name="arcade-lab", sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP, smoothing_type="none"),
        runset_settings=ws.RunsetSettings(groupby=[expr.Metric("Group")], pinned_columns=list(PINNED)),
    )


def spec(workspace: Any) -> dict[str, Any]:
    """W&B's JSON of the workspace's view (what saving it sends)."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", default="arcade-lab", help="W&B project (default arcade-lab)")
    parser.add_argument("--entity", help="W&B entity (default: $WANDB_ENTITY, or your login's)")
    parser.add_argument("--key-metric", default="eval/return_mean", help="the sweep panels' metric")
    parser.add_argument("--out", help="offline: where to write the spec (default wandb-workspace-PROJECT.json)")


def command(args: argparse.Namespace, lab: Any) -> int:
    """Save the workspace when logged in to W&B; otherwise write its spec to a file."""
    from lab.plugins.wandb_tracker import wandb_mode

    online = wandb_mode(None) == "online"
    entity = args.entity or os.environ.get("WANDB_ENTITY")
    if online and entity is None:
        import wandb

        entity = wandb.Api().default_entity
    workspace = build(entity or "your-entity", args.project, args.key_metric)
    if online:
        try:
            workspace.save()
        except Exception as exc:
            raise LabError(f"W&B did not save the workspace ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                           "check `wandb login` and the --project/--entity") from None
        print(f"saved the workspace: {workspace.url}")
        return 0
    out = Path(args.out or f"wandb-workspace-{args.project}.json")
    out.write_text(json.dumps(spec(workspace), indent=2) + "\n", encoding="utf-8")
    print(f"W&B is offline: wrote the workspace's spec to {out}; saving it to W&B needs `wandb login` "
          "(then run this command again)", file=sys.stderr)
    return 0
