"""TensorBoard tracker: event files under `<run_dir>/tensorboard/`, so `tensorboard --logdir runs/`
shows every run (one TensorBoard run per run directory).

On by default when the `tensorboard` package is installed (`pip install -e ".[tensorboard]"`);
`--trackers` picks trackers explicitly. What it writes, for training runs only (`lab eval`
adds nothing, as with metrics.jsonl):

- scalars: every metric under its own name (`train/episode_return`, `eval/return_mean`, ...)
  against the run's global_step, the same rows as metrics.jsonl;
- images: the PNGs the run writes under media/ (sample grids, plots), at their step;
- videos: nothing. TensorBoard's video summaries need moviepy, which the lab does not
  depend on; the MP4s stay in media/ (and go to W&B);
- the resolved config (config.yaml) as text under `config`, at the step the process starts.

Resume: a resumed run writes a new event file into the same folder, and TensorBoard merges
a folder's event files. The new file starts with a purge marker at the checkpoint's step + 1
(`SummaryWriter(purge_step=...)`), so whatever the interrupted process logged after that
checkpoint (it may have crashed, or the run resumes from best.pt) is dropped and every step
shows once, just as metrics.jsonl is cut back to the checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.api import LabError, RunInfo, Tracker, hookimpl

NAME = "tensorboard"
LOG_DIR = "tensorboard"  # under the run directory
# Seconds between flushes of the event file; metrics.jsonl is written line by line, so keep
# what a killed process leaves behind close to it (the writer's default is 120 s).
FLUSH_SECS = 1
INSTALL_HINT = 'pip install -e ".[tensorboard]" (or pip install "tensorboard>=2.14")'


def _number(value: Any) -> float | None:
    """A plain float for add_scalar, or None for values that are not numbers."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError):  # arrays/tensors with more than one element
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _config_text(config: dict[str, Any]) -> str:
    """config.yaml as a Markdown code block (TensorBoard renders text summaries as Markdown)."""
    import yaml

    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return "\n".join("    " + line for line in text.splitlines())


def _sort_after_existing_files(log_dir: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the
    second it was created in (then host, pid, a counter): wait for the next second when a
    file from this very second is there, so a resumed run's file, and its purge marker,
    is read after the files it continues."""
    newest = 0
    for path in log_dir.glob("events.out.tfevents.*"):
        stamp = path.name.split(".")[3]
        if stamp.isdigit():
            newest = max(newest, int(stamp))
    wait = newest + 1 - time.time()
    if 0 < wait <= 1.5:  # (a file from the future: the clock moved back; nothing to wait for)
        time.sleep(wait)


class TensorBoardTracker(Tracker):
    """Writes scalars, images and the config of one run with torch's SummaryWriter."""

    def __init__(self, info: RunInfo, writer_cls: Callable[..., Any]) -> None:
        self.info = info
        self.log_dir = info.run_dir / LOG_DIR
        # On resume, hide what the interrupted process logged after the checkpoint.
        purge_step = info.start_step + 1 if info.resumed else None
        if info.resumed:
            _sort_after_existing_files(self.log_dir)
        self.writer = writer_cls(log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=FLUSH_SECS)
        self._finished = False
        self._warned_images: set[str] = set()
        if info.config:
            self.writer.add_text("config", _config_text(info.config), global_step=info.start_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            number = _number(value)
            if number is not None:
                self.writer.add_scalar(key, number, global_step=int(step))

    def log_image(self, key: str, path: Path, step: int) -> None:
        import cv2
        import numpy as np

        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError:
            data = None
        image = None if data is None or data.size == 0 else cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            if key not in self._warned_images:  # a tracker must never stop the training
                self._warned_images.add(key)
                print(f"warning: tensorboard tracker could not read image '{path}' ({key}); skipped",
                      file=sys.stderr)
            return
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        self.writer.add_image(key, rgb, global_step=int(step), dataformats="HWC")

    def log_video(self, key: str, path: Path, step: int) -> None:
        """Nothing: TensorBoard videos need moviepy (see the module docstring)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Flush and close the event file; safe to call twice."""
        if self._finished:
            return
        self._finished = True
        self.writer.flush()
        self.writer.close()


def make_tracker(info: RunInfo) -> Tracker | None:
    """The `register_trackers` factory: None for `lab eval`, and when tensorboard is not
    installed unless --trackers names it (then a new run stops with an install hint)."""
    if info.purpose != "train":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if info.trackers is not None and NAME in info.trackers:
            if not info.resumed:
                raise LabError(f"--trackers {NAME} needs the tensorboard package: {INSTALL_HINT}") from None
            print(f"warning: the run was trained with --trackers {NAME} but tensorboard is not installed; "
                  f"continuing without it ({INSTALL_HINT})", file=sys.stderr)
        return None
    return TensorBoardTracker(info, SummaryWriter)


@hookimpl
def register_trackers(register: Callable[..., None]) -> None:
    register(NAME, make_tracker, description=f"TensorBoard event files under <run_dir>/{LOG_DIR}/")
