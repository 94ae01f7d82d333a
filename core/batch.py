"""Batch runs over whole mocap libraries: one task per clip, resumable, on local processes or a
Ray cluster.

The driver (the process the user started) plans the tasks, skips clips already done, hands the
rest to workers (largest inputs first), and alone writes what comes back: every output file,
compressed by the worker and written here atomically (a temporary name, then a rename), and one
line per clip in OUT_DIR/report.jsonl. Workers only read inputs and
compute, so a cluster needs the inputs (and the project) at the same path on every node, but no
shared output folder.

Resume rule: a clip is done when every one of its outputs exists and carries the hash of the
settings it was made with (key `batch_settings`). A run killed at any point leaves either a
finished file or none under an output's name (a `.NAME.part` at most), so the next run with the
same settings redoes exactly the clips that were not finished, and rewrites the report with one
line per clip.

The work per clip is a function of a script (ScriptJob): workers load the script by path, so
the same function runs in this process, in a local process pool and on Ray's workers. It takes
(input path, settings) and returns (one dict of arrays per output, JSON-able info); info's
"frames" (if any) feeds the progress bar. Torch runs one thread per worker: clips are the
parallel unit, and small batched solves scale worse over threads than over processes.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .errors import VPoserError

SETTINGS_KEY = "batch_settings"  # npz key: the settings hash an output was made with
REPORT_NAME = "report.jsonl"
FORMAT = 1  # bump when the outputs of the same settings change meaning
RAY_INSTALL = "pip install 'ray>=2.9' (or the project's extra: pip install '.[cluster]')"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class BatchError(VPoserError):
    """A batch cannot start as asked (no inputs, clashing outputs, Ray missing); the message says why."""


@dataclass(frozen=True)
class Task:
    """One clip: `name` is its path relative to the inputs' common folder (the report's key),
    `input` the absolute path workers read, `outputs` the files the driver writes for it."""

    name: str
    input: str
    outputs: tuple[str, ...]


@dataclass
class Outcome:
    """What a worker sends back for a task: each output's .npz bytes (compressed in the worker, so
    the driver only writes files), or an error message."""

    name: str
    files: list[bytes] | None
    info: dict[str, Any]
    error: str | None
    seconds: float


@dataclass
class BatchResult:
    """Counts of this run, and the report record of every clip (earlier runs' for skipped clips)."""

    records: list[dict[str, Any]]
    written: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    backend: str = "inline"  # where the clips ran: inline (this process), processes or ray
    workers: int = 1
    failures: list[dict[str, Any]] = field(default_factory=list)
    startup_seconds: float = 0.0  # of `seconds`, spent starting or joining a Ray cluster

    def summary(self, report: Path) -> dict[str, Any]:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return {"clips": len(self.records), "written": self.written, "skipped": self.skipped,
                "failed": self.failed, "frames": self.frames, "seconds": round(self.seconds, 3),
                "clips_per_s": round(rate, 3), "frames_per_s": round(self.frames / self.seconds, 1) if self.seconds else 0.0,
                "backend": self.backend, "workers": self.workers, "startup_seconds": round(self.startup_seconds, 3),
                "report": str(report),
                "failures": self.failures}


# ------------------------------------------------------------------------------------------------
# Planning


def find_inputs(items: Sequence[str | Path], suffixes: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Folders (searched recursively for files with these suffixes), files and glob patterns ->
    sorted unique (file, path relative to the common folder of the items) pairs; the relative
    paths are what the outputs mirror. BatchError when an item matches nothing."""
    found: dict[Path, None] = {}
    roots = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            roots.append(path.resolve())
            found.update(dict.fromkeys(p.resolve() for p in path.rglob("*")
                                       if p.is_file() and p.suffix.lower() in suffixes
                                       and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            roots.append(path.resolve().parent)
            found[path.resolve()] = None
        else:
            matches = sorted(Path(p).resolve() for p in glob.glob(str(item), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in suffixes]
            if not files:
                raise BatchError(f"{item}: no such file or folder, and no {'/'.join(suffixes)} file matches it")
            roots.append(_static_prefix(str(item)).resolve())
            found.update(dict.fromkeys(files))
    if not found:
        raise BatchError(f"no {'/'.join(suffixes)} files in {' '.join(map(str, items))}")
    base = Path(os.path.commonpath(roots))
    return [(file, file.relative_to(base).as_posix()) for file in sorted(found)]


def _static_prefix(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard ('data/*/x*.bvh' -> 'data')."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def plan(items: Sequence[str | Path], out_dir: Path, suffixes: tuple[str, ...], output_suffix: str) -> list[Task]:
    """One task per input clip, its output `OUT_DIR/<relative folder>/<stem><output_suffix>`."""
    tasks = []
    for file, relative in find_inputs(items, suffixes):
        output = out_dir / Path(relative).parent / (Path(relative).stem + output_suffix)
        tasks.append(Task(relative, str(file), (str(output),)))
    check_outputs(tasks)
    return tasks


def check_outputs(tasks: Iterable[Task]) -> None:
    """BatchError when two clips would write the same file (e.g. walk.bvh and walk.c3d)."""
    owners: dict[str, str] = {}
    for task in tasks:
        for output in task.outputs:
            if output in owners:
                raise BatchError(f"{owners[output]} and {task.name} would both write {output}: "
                                 f"rename one or convert them in separate runs")
            owners[output] = task.name


# ------------------------------------------------------------------------------------------------
# Settings hash and resume


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings that shape the outputs. A value naming an existing file counts
    by its content (editing a preset JSON or a body file redoes the clips); arrays and tensors by
    their bytes."""
    def canonical(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            return {"array": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
                    "dtype": str(value.dtype), "shape": list(value.shape)}
        if isinstance(value, (str, Path)) and str(value) and os.path.isfile(value):
            return {"file": hashlib.sha256(Path(value).read_bytes()).hexdigest()}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, Mapping):
            return {str(k): canonical(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return value

    text = json.dumps({"format": FORMAT, "settings": canonical(dict(settings))}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_settings(path: str | Path) -> str | None:
    """The settings hash stored in an output, None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz[SETTINGS_KEY]) if SETTINGS_KEY in npz.files else None
    except (OSError, ValueError, EOFError, KeyError):  # includes zipfile.BadZipFile
        return None


def is_done(task: Task, digest: str) -> bool:
    return all(output_settings(output) == digest for output in task.outputs)


def npz_bytes(arrays: Mapping[str, np.ndarray], digest: str) -> bytes:
    """An output's file: its arrays and the settings hash, compressed. np.savez_compressed writes
    the same bytes for the same arrays (fixed member times), so a redone clip reproduces its file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, **{SETTINGS_KEY: np.array(digest)})
    return buffer.getvalue()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write a file under a temporary name beside `path`, then rename it: a reader (or a resumed
    run) sees the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    with open(part, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())  # the rename must not reach the disk before the data
    os.replace(part, path)


# ------------------------------------------------------------------------------------------------
# The work per clip


_SCRIPTS: dict[str, ModuleType] = {}


@dataclass(frozen=True)
class ScriptJob:
    """`function(Path(input), settings)` of the script at `script`, loaded once per worker process
    (so its module-level caches, e.g. a loaded body model, serve every clip of that worker)."""

    script: str
    function: str
    settings: Any

    def __call__(self, path: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
        module = _SCRIPTS.get(self.script)
        if module is None:
            name = "_batch_job_" + Path(self.script).stem
            spec = importlib.util.spec_from_file_location(name, self.script)
            if spec is None or spec.loader is None:
                raise BatchError(f"{self.script}: cannot load the batch job's script")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            _SCRIPTS[self.script] = module
        return getattr(module, self.function)(path, self.settings)


def run_task(job: Callable, task: Task, digest: str) -> Outcome:
    """Run one clip, turning any failure into an error message (the batch goes on)."""
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        arrays, info = job(Path(task.input))
        if len(arrays) != len(task.outputs):
            raise BatchError(f"the job gave {len(arrays)} outputs for {len(task.outputs)} files")
        files = [npz_bytes(output, digest) for output in arrays]
        # CPU seconds as well as wall: on a shared machine only the CPU time measures the clip's cost
        info = {**info, "cpu_seconds": round(time.process_time() - cpu, 3)}
        return Outcome(task.name, files, info, None, time.perf_counter() - start)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - one clip's failure must not end the batch
        return Outcome(task.name, None, {}, error_message(error), time.perf_counter() - start)


def error_message(error: BaseException) -> str:
    """The message of a clip's failure: our typed errors' text as is, other types named."""
    text = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    if isinstance(error, SystemExit):
        return str(error.code).removeprefix("error: ")
    if isinstance(error, (ValueError, OSError, LookupError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"


# ------------------------------------------------------------------------------------------------
# Backends: each yields Outcomes as clips finish


def _inline(job: Callable, tasks: Sequence[Task], digest: str) -> Iterator[Outcome]:
    for task in tasks:
        yield run_task(job, task, digest)


def _init_process(parent: int) -> None:
    """Pool worker set-up: one torch thread, and exit when the driver is gone (killed), instead
    of waiting forever for work."""
    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


WORKER_DIED = "its worker process died (killed, or out of memory?) while converting this clip"


def _process_pool(job: Callable, tasks: Sequence[Task], digest: str, workers: int) -> Iterator[Outcome]:
    """Clips in `workers` local processes, at most two per worker queued. A worker that dies
    breaks the pool and every clip in flight with it: a fresh pool goes on, and the clips that
    were in flight are first retried one at a time, so that only the clip that kills its worker
    is reported."""
    # Linux: fork, the workers start at once with the driver's imports (spawn re-imports torch and
    # the script in each worker: seconds per worker). Only from a single-threaded driver (as the
    # scripts are): a fork copies no other thread, nor can it release the locks they hold.
    method = START_METHOD if threading.active_count() == 1 else "spawn"
    context = multiprocessing.get_context(method)
    queue, suspects = list(reversed(tasks)), []
    while queue or suspects:
        if suspects:
            lost: list[Task] = []
            yield from _pool_pass(context, job, [suspects.pop()], digest, 1, lost)
            yield from (Outcome(task.name, None, {}, WORKER_DIED, 0.0) for task in lost)
        else:
            yield from _pool_pass(context, job, queue, digest, workers, suspects)


def _pool_pass(context: Any, job: Callable, queue: list[Task], digest: str, workers: int,
               lost: list[Task]) -> Iterator[Outcome]:
    """Run the queue's tasks (taken from its end) in a fresh pool until it is empty or a worker
    dies; then the tasks in flight without a result go to `lost`."""
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process,
                             initargs=(os.getpid(),)) as pool:
        running: dict[Future, Task] = {}
        broken = False
        try:
            while (queue or running) and not broken:
                while queue and len(running) < 2 * workers:
                    try:
                        running[pool.submit(run_task, job, queue[-1], digest)] = queue[-1]
                    except BrokenProcessPool:
                        broken = True
                        break
                    queue.pop()
                done, _ = wait(running, return_when=FIRST_COMPLETED) if not broken else (set(running), None)
                for future in done:
                    if future.exception() is not None:  # only BrokenProcessPool: run_task catches the rest
                        broken = True
                        continue
                    yield future.result()
                    del running[future]
            if broken:  # the finished ones were yielded; what is left was in flight when a worker died
                for future, task in running.items():
                    if future.done() and future.exception() is None:
                        yield future.result()
                    else:
                        lost.append(task)
        finally:  # stopped early (Ctrl-C): drop the queued clips, let the running ones end
            pool.shutdown(wait=True, cancel_futures=True)


def _ray(job: Callable, tasks: Sequence[Task], digest: str, workers: int, address: str | None,
         result: BatchResult) -> Iterator[Outcome]:
    """Clips as Ray tasks (one CPU each), results taken as they finish. No address: Ray's local
    cluster with `workers` CPUs; else ray.init(address), whose nodes read the inputs and the
    project at the driver's paths."""
    try:
        import ray
    except ImportError:
        raise BatchError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    start = time.perf_counter()
    try:
        if address:  # the project at this path on every node, before whatever the nodes have
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}${{PYTHONPATH}}"}}
            ray.init(address=address, **options)
        else:  # the local cluster's workers inherit this environment
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
            ray.init(address="local", num_cpus=workers, **options)  # a new one, even where `ray start` ran
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise BatchError(f"cannot {'join the Ray cluster at ' + address if address else 'start a local Ray cluster'}: "
                         f"{error}") from None
    result.startup_seconds = time.perf_counter() - start
    result.workers = int(ray.cluster_resources().get("CPU", workers))  # a cluster's CPUs, not this machine's
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        job_ref = ray.put(job)
        pending = {remote.remote(job_ref, task, digest): task for task in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as error:
                    yield Outcome(task.name, None, {}, f"the Ray task failed: {error}", 0.0)
    finally:
        _shutdown_ray(ray, started_here=not address)


def _shutdown_ray(ray: ModuleType, started_here: bool) -> None:
    """ray.shutdown(), a second sooner for a cluster this process started: Ray stops that cluster's
    GCS before its autoscaler monitor, whose SIGTERM handler then waits on the gone GCS until Ray
    kills it a second later (measured with Ray 2.60: 1.1-1.4 s of a shutdown's 1.1-1.4 s). A local
    cluster gives the monitor nothing to clean up, so it is killed first. Ray keeps its processes
    in a private attribute: where a version has none, this is the plain shutdown."""
    if started_here:
        node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
        for info in getattr(node, "all_processes", {}).get("monitor", []):
            if getattr(info, "process", None) is not None and info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=5)
    ray.shutdown()


# ------------------------------------------------------------------------------------------------
# The driver


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_report(path: Path) -> dict[str, dict[str, Any]]:
    """Earlier records by clip name; a line cut short by a kill is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "clip" in record:
                records[record["clip"]] = record
    return records


def run_batch(tasks: Sequence[Task], job: Callable, digest: str, out_dir: Path, workers: int | None = None,
              ray_address: str | None = None, on_record: Callable[[dict[str, Any]], None] | None = None,
              progress: bool = True) -> BatchResult:
    """Run every task not done yet (see is_done) and keep OUT_DIR/report.jsonl to one line per clip.

    workers: local processes (None: the machine's cores; 1: in this process); ray_address: None
    for no Ray, "" for Ray's local cluster, else a cluster address. on_record sees each new record
    as its clip finishes. Outputs get `digest` under SETTINGS_KEY."""
    workers = workers or default_workers()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_NAME
    earlier = read_report(report)
    # Largest inputs first: the last clips to finish are then short ones, so no long clip runs
    # alone at the end while the other workers idle.
    todo = sorted((task for task in tasks if not is_done(task, digest)), key=lambda task: -_input_size(task))
    waiting = {task.name for task in todo}
    kept = [earlier.get(task.name) or _record(task, None) for task in tasks if task.name not in waiting]
    result = BatchResult(records=list(kept), skipped=len(kept), workers=workers)
    write_atomic_text(report, "".join(json.dumps(record) + "\n" for record in kept))
    by_name = {task.name: task for task in todo}
    start = time.perf_counter()
    if ray_address is not None:
        result.backend, outcomes = "ray", _ray(job, todo, digest, workers, ray_address or None, result)
    elif workers > 1 and len(todo) > 1:
        result.backend, outcomes = "processes", _process_pool(job, todo, digest, min(workers, len(todo)))
    else:
        result.backend, outcomes = "inline", _inline(job, todo, digest)
    quiet = not progress or not todo
    monitor, tqdm.monitor_interval = tqdm.monitor_interval, 0  # no bar thread: workers may be forked
    with open(report, "a", encoding="utf-8") as lines, \
            tqdm(total=len(todo), unit="clip", file=sys.stderr, disable=quiet, position=0) as clip_bar, \
            tqdm(unit="frame", file=sys.stderr, disable=quiet, position=1, leave=False) as frame_bar:
        tqdm.monitor_interval = monitor
        for outcome in outcomes:
            task = by_name[outcome.name]
            if outcome.error is None:
                try:
                    for output, data in zip(task.outputs, outcome.files or []):
                        write_atomic(output, data)
                except OSError as error:
                    outcome.error = f"cannot write the output: {error}"
            record = _record(task, outcome)
            lines.write(json.dumps(record) + "\n")
            lines.flush()
            result.records.append(record)
            if outcome.error is None:
                result.written += 1
                result.frames += int(outcome.info.get("frames", 0))
            else:
                result.failed += 1
                result.failures.append({"input": task.input, "error": outcome.error})
            if on_record is not None:
                on_record(record)
            clip_bar.update(1)
            frame_bar.update(int(outcome.info.get("frames", 0)))
    result.seconds = time.perf_counter() - start
    return result


def _input_size(task: Task) -> int:
    try:
        return os.path.getsize(task.input)
    except OSError:  # reported when the clip runs
        return 0


def _record(task: Task, outcome: Outcome | None) -> dict[str, Any]:
    """A report line. Without an outcome: a clip found done whose earlier line was lost."""
    record: dict[str, Any] = {"clip": task.name, "input": task.input, "output": task.outputs[0]}
    if len(task.outputs) > 1:
        record["outputs"] = list(task.outputs)
    if outcome is None:
        return {**record, "status": "ok", "note": "made by an earlier run"}
    if outcome.error is not None:
        return {**record, "status": "failed", "error": outcome.error, "seconds": round(outcome.seconds, 3)}
    return {**record, "status": "ok", **outcome.info, "seconds": round(outcome.seconds, 3)}


def write_atomic_text(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


# ------------------------------------------------------------------------------------------------
# Command-line helpers shared by the scripts


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers and --ray, as every batch script takes them."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help="clips in parallel in N local processes, one torch thread each (default: the "
                             "machine's cores); with --ray, the local Ray cluster's CPUs")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="run the clips as tasks on a Ray cluster (ray.init(ADDRESS); no address: Ray's "
                             "local cluster). Write it --ray=ADDRESS before the inputs. Inputs must be readable "
                             "at the same path on every node; outputs are written here")


def check_runner_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            parser.error(f"--ray needs Ray, which is not installed: {RAY_INSTALL}")


def print_summary(result: BatchResult, report: Path, log: Callable[[str], None]) -> None:
    """One line per failure and a closing line, for people (the JSON summary is for programs)."""
    for failure in result.failures:  # our readers' messages start with the file's path
        where = "" if failure["error"].startswith(failure["input"]) else f"{failure['input']}: "
        log(f"failed: {where}{failure['error']}")
    log(f"{result.written} written, {result.skipped} already done, {result.failed} failed "
        f"in {result.seconds:.1f} s ({result.backend}, {result.workers} workers); report: {report}")
