"""How long a lab run waits for W&B: the lab's tracker against plain `wandb.init` defaults.

Each sample runs in a fresh process (cold: import wandb, spawn wandb-core, init, log, finish,
teardown), then times further runs in that same process (warm: the service is up).
`--load N` runs N busy processes beside both, as on a machine that is rarely idle. Prints
one JSON object. Usage: python bench/wandb_startup.py [--repeats 3] [--warm 5] [--load N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import add_load_option, busy_processes

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
t0 = time.perf_counter()
import wandb
imported = time.perf_counter() - t0
variant, warm, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def one(i):
    run_dir = Path(tempfile.mkdtemp()) / f"bench-{i}"
    run_dir.mkdir()
    from lab.plugins.wandb_tracker import WandbOptions, make_tracker
    from lab.api import RunInfo
    t = time.perf_counter()
    if variant == "lab":
        info = RunInfo(name=run_dir.name, run_dir=run_dir, algo="random", kind="agent",
                       env="CartPole-v1", data=None, seed=0, experiment="bench", config={"lr": 1e-3},
                       tracker_options={"wandb": WandbOptions(wandb="offline", project="bench")})
        tracker = make_tracker(info)
        started = time.perf_counter()
        for step in range(rows):
            tracker.log({"train/loss": 1.0 / (step + 1), "perf/sps": 100.0}, step)
        logged = time.perf_counter()
        tracker.finish({"status": "finished"})
    else:
        run = wandb.init(project="bench", id=run_dir.name, dir=str(run_dir), mode="offline",
                         config={"lr": 1e-3}, reinit="create_new")
        run.define_metric("*", step_metric="global_step")
        started = time.perf_counter()
        for step in range(rows):
            run.log({"global_step": step, "train/loss": 1.0 / (step + 1), "perf/sps": 100.0})
        logged = time.perf_counter()
        run.finish()
    end = time.perf_counter()
    return {"init_s": started - t, "log_us_per_row": (logged - started) / rows * 1e6,
            "finish_s": end - logged}

first = one(0)
later = [one(i + 1) for i in range(warm)]
t = time.perf_counter()
wandb.teardown()
print(json.dumps({"import_s": imported, "cold": first, "warm": later,
                  "teardown_s": time.perf_counter() - t}))
"""


def sample(variant: str, warm: int, rows: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
    with tempfile.TemporaryDirectory() as home:
        env.update(WANDB_CONFIG_DIR=home, WANDB_CACHE_DIR=home, WANDB_DATA_DIR=home)
        env.pop("WANDB_MODE", None)
        out = subprocess.run([sys.executable, "-c", CHILD, variant, str(warm), str(rows)],
                             capture_output=True, text=True, env=env, check=True, cwd=home)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(samples: list[dict]) -> dict:
    med = statistics.median
    return {
        "import_wandb_s": round(med(s["import_s"] for s in samples), 3),
        "cold_init_s": round(med(s["cold"]["init_s"] for s in samples), 3),
        "warm_init_s": round(med(w["init_s"] for s in samples for w in s["warm"]), 4),
        "finish_s": round(med(w["finish_s"] for s in samples for w in s["warm"]), 4),
        "teardown_s": round(med(s["teardown_s"] for s in samples), 3),
        "log_us_per_row": round(med(w["log_us_per_row"] for s in samples for w in s["warm"]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--warm", type=int, default=5, help="runs after the first, per process")
    parser.add_argument("--rows", type=int, default=200, help="history rows logged per run")
    add_load_option(parser)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"lab": [], "wandb_defaults": []}
    with busy_processes(args.load):
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            for variant in results:
                results[variant].append(sample(variant, args.warm, args.rows))
    import wandb

    print(json.dumps({
        "bench": "wandb_startup",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "wandb": wandb.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "load": args.load,
        "lab_tracker": summarize(results["lab"]),
        "peer_wandb_init_defaults": summarize(results["wandb_defaults"]),
    }, indent=2))


if __name__ == "__main__":
    main()
