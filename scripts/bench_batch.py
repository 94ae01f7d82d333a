"""Throughput of batch retargeting (scripts/retarget.py --out-dir): 1 local process, N processes,
Ray's local cluster with N CPUs, run alternated over the same clips; and Ray's own cost (cluster
start, per-task overhead of an empty task). The figures of docs/scaling.md.

    python scripts/bench_batch.py ../shared/data/mocap/train/cmu_asfamc_bvh --clips 100 --rounds 2

Each configuration runs as a user runs it (a fresh process, a fresh output folder); `seconds` is
the runner's wall time from planning to the last file (Ray's included: its cluster start,
`startup_s`, and its workers' imports), `process_s` the whole command's. The 1-minute load average before and after
each run says how much other work shared the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.batch import write_atomic  # noqa: E402


def run_config(clips: list[str], workers: int, ray: bool, fps: float | None, out: Path) -> dict:
    command = [sys.executable, str(REPO / "scripts" / "retarget.py"), *clips, "--out-dir", str(out),
               "--workers", str(workers)] + (["--fps", str(fps)] if fps else []) + (["--ray"] if ray else [])
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    process_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{result.stderr[-2000:]}")
    summary = json.loads(result.stdout)
    lines = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    frames = np.array([line["frames"] for line in lines], float)
    cpu = np.array([line["cpu_seconds"] for line in lines])
    fixed, per_frame = np.polyfit(frames, cpu, 1)[::-1]  # a clip's CPU seconds ~ fixed + per_frame * frames
    start = time.perf_counter()
    for path in out.rglob("*.npz"):
        write_atomic(out / "rewrite.npz", path.read_bytes())
    write_ms = 1000 * (time.perf_counter() - start) / len(lines)
    return {"config": f"{'ray' if ray else 'processes'} x{workers}", "seconds": summary["seconds"],
            "clip_cpu_fixed_s": round(float(fixed), 4), "frame_cpu_ms": round(1000 * float(per_frame), 4),
            "driver_write_ms": round(write_ms, 2),
            "startup_s": summary["startup_seconds"],
            "process_s": round(process_s, 2), "clips_per_s": summary["clips_per_s"], "frames": summary["frames"],
            "clip_s_mean": round(statistics.fmean(line["seconds"] for line in lines), 3),
            "clip_cpu_s_mean": round(statistics.fmean(line["cpu_seconds"] for line in lines), 3),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def ray_overhead(workers: int, tasks: int = 400) -> dict:
    """Cluster start, and per-task cost of an empty task: one at a time (latency) and many at once."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    started = time.perf_counter() - start
    noop = ray.remote(num_cpus=1)(lambda x: x)
    ray.get([noop.remote(i) for i in range(2 * workers)])  # workers up
    start = time.perf_counter()
    for i in range(50):
        ray.get(noop.remote(i))
    latency = (time.perf_counter() - start) / 50
    start = time.perf_counter()
    ray.get([noop.remote(i) for i in range(tasks)])
    throughput = (time.perf_counter() - start) / tasks
    ray.shutdown()
    return {"ray_init_s": round(started, 2), "task_latency_ms": round(1000 * latency, 2),
            "task_cost_ms_batched": round(1000 * throughput, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of BVH clips (the first --clips, sorted, are used)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="processes / Ray CPUs of the parallel runs")
    parser.add_argument("--rounds", type=int, default=2, help="alternated repetitions of the three runs")
    parser.add_argument("--fps", type=float, default=30.0, help="output frame rate; 0: each clip's own (the default "
                        "of scripts/retarget.py)")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)
    clips = sorted(str(p) for p in args.folder.glob("*.bvh"))[:args.clips]
    if not clips:
        raise SystemExit(f"error: no .bvh files in {args.folder}")
    configs = [(1, False), (args.workers, False)] + ([] if args.no_ray else [(args.workers, True)])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for k, (workers, ray) in enumerate(configs):
                run = run_config(clips, workers, ray, args.fps, Path(tmp) / f"r{round_}_{k}")
                print(json.dumps(run), file=sys.stderr)
                runs.append(run)
    best = {}
    for run in runs:
        if run["config"] not in best or run["seconds"] < best[run["config"]]["seconds"]:
            best[run["config"]] = run
    one, many = best["processes x1"], best[f"processes x{args.workers}"]
    result = {"clips": len(clips), "frames": one["frames"], "runs": runs,
              "speedup_processes": round(one["seconds"] / many["seconds"], 3)}
    if not args.no_ray:
        ray_run = best[f"ray x{args.workers}"]
        result["ray_vs_processes"] = round(ray_run["seconds"] / many["seconds"], 3)
        result["ray_vs_processes_cluster_up"] = round((ray_run["seconds"] - ray_run["startup_s"]) / many["seconds"], 3)
        # the whole command, as a user times it: the pool's workers are forked from a driver that has
        # imported torch, Ray's start fresh and import it themselves
        result["ray_vs_processes_command"] = round(ray_run["process_s"] / many["process_s"], 3)
        result.update(ray_overhead(args.workers))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
