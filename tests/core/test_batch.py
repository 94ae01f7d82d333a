"""Batch conversion of mocap libraries (core/batch.py through scripts/retarget.py --out-dir and
scripts/prepare_mocap.py): bad files reported while the rest go on, resume after a kill, settings
hash, Ray against the process pool. Clips are cut from the shipped CMU walk in each test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.batch import SETTINGS_KEY, WORKER_DIED, BatchError, ScriptJob, Task, plan, run_batch, settings_hash
from core.pose_files import load_pose_file

REPO = Path(__file__).resolve().parents[2]
WALK = REPO / "examples" / "cmu_02_01_walk.bvh"


def walk_clip(path: Path, start: int, frames: int) -> Path:
    """`frames` frames (120 fps) of the walk from frame `start`, as a BVH file of its own."""
    lines = WALK.read_text().splitlines()
    motion = lines.index("MOTION")
    body = lines[motion + 3:][start:start + frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines[:motion + 1] + [f"Frames: {len(body)}", lines[motion + 2]] + body) + "\n")
    return path


def library(root: Path, clips: int) -> dict[str, Path]:
    """A folder tree of `clips` good clips (24 source frames -> 6 at 30 fps), by relative name."""
    good = {}
    for k in range(clips):
        name = f"{'ab'[k % 2]}/{k:02d}_walk.bvh" if k % 3 else f"{k:02d}_walk.bvh"
        good[name] = walk_clip(root / name, 12 * k, 24)
    return good


def retarget(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/retarget.py", *args, "--fps", "30"],
                          capture_output=True, text=True, cwd=REPO)


def outputs(out_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()
            and p.name != "report.jsonl"}


def report_lines(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "report.jsonl").read_text().splitlines()]


def expected_output(name: str) -> str:
    return name.removesuffix(".bvh") + "_poses.npz"


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    """Five good clips converted by two local processes (the reference for resume and Ray)."""
    root = tmp_path_factory.mktemp("library")
    good = library(root / "in", 5)
    result = retarget(str(root / "in"), "--out-dir", str(root / "pool"), "--workers", "2")
    assert result.returncode == 0, result.stderr
    return root / "in", good, root / "pool", json.loads(result.stdout)


def test_bad_files_are_reported_and_the_rest_written(tmp_path):
    good = library(tmp_path / "in", 4)
    (tmp_path / "in" / "bad").mkdir()
    (tmp_path / "in" / "bad" / "empty.bvh").write_text("")
    (tmp_path / "in" / "bad" / "cut.bvh").write_text(WALK.read_text()[:3000])  # ends inside the hierarchy
    out = tmp_path / "out"
    result = retarget(str(tmp_path / "in"), "--out-dir", str(out), "--workers", "2")
    assert result.returncode == 1  # some clips failed
    summary = json.loads(result.stdout)
    assert (summary["clips"], summary["written"], summary["failed"], summary["skipped"]) == (6, 4, 2, 0)
    assert set(outputs(out)) == {expected_output(name) for name in good}  # the folder tree mirrored
    errors = {line["clip"]: line for line in report_lines(out) if line["status"] == "failed"}
    assert set(errors) == {"bad/empty.bvh", "bad/cut.bvh"}
    assert errors["bad/empty.bvh"]["error"].endswith("empty.bvh: the file is empty")
    assert "cut.bvh:" in errors["bad/cut.bvh"]["error"] and "ends inside the hierarchy" in errors["bad/cut.bvh"]["error"]
    assert "Traceback" not in result.stderr and "failed: " in result.stderr

    # Each output is what the single-clip command writes for that clip (one thread there too).
    name = next(iter(good))
    single = tmp_path / "single.npz"
    assert retarget(str(good[name]), "--out", str(single), "--threads", "1").returncode == 0
    batch = load_pose_file(out / expected_output(name))
    assert batch.num_frames == 6  # 24 frames at 120 fps, every 4th
    np.testing.assert_allclose(batch.poses, load_pose_file(single).poses, atol=1e-6)
    np.testing.assert_allclose(batch.betas, load_pose_file(single).betas, atol=1e-6)
    okay = [line for line in report_lines(out) if line["status"] == "ok"]
    assert all(line["frames"] == 6 and 0 < line["mpjpe_mm"] < 15 and line["seconds"] > 0 for line in okay)

    # A second run skips every good clip (their files untouched) and retries only the bad ones.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    again = retarget(str(tmp_path / "in"), "--out-dir", str(out), "--workers", "2")
    summary = json.loads(again.stdout)
    assert again.returncode == 1 and (summary["written"], summary["skipped"], summary["failed"]) == (0, 4, 2)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == stamps
    lines = report_lines(out)
    assert sorted(line["clip"] for line in lines) == sorted([*good, "bad/empty.bvh", "bad/cut.bvh"])

    # Another setting redoes the clips: the body keeps its default shape now.
    redo = retarget(str(tmp_path / "in"), "--out-dir", str(out), "--workers", "2", "--no-shape")
    assert json.loads(redo.stdout)["written"] == 4
    assert not load_pose_file(out / expected_output(name)).betas.any() and batch.betas.any()
    assert len(report_lines(out)) == 6


def test_a_killed_run_resumes_to_the_same_files(tmp_path, pool_run):
    source, good, reference, _ = pool_run
    out = tmp_path / "out"
    command = [sys.executable, "scripts/retarget.py", str(source), "--out-dir", str(out), "--workers", "1", "--fps", "30"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.rglob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.terminate()
    finally:
        process.wait(30)
    done = {p.relative_to(out).as_posix() for p in out.rglob("*.npz")}
    assert 1 <= len(done) < len(good), "the kill should land mid-way"
    for name in done:  # what exists is complete and marked as made with these settings
        assert load_pose_file(out / name).num_frames == 6 and SETTINGS_KEY in np.load(out / name).files

    resumed = retarget(str(source), "--out-dir", str(out), "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == len(done) and summary["written"] == len(good) - len(done)
    assert outputs(out) == outputs(reference)  # every file once, byte for byte (inline = pool)
    assert not list(out.rglob(".*.part"))
    lines = report_lines(out)
    assert sorted(line["clip"] for line in lines) == sorted(good)
    assert all(line["status"] == "ok" for line in lines)


def test_ray_gives_the_process_pool_outputs(tmp_path, pool_run):
    pytest.importorskip("ray")
    source, good, reference, _ = pool_run
    out = tmp_path / "ray"
    result = retarget(str(source), "--out-dir", str(out), "--workers", "2", "--ray")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backend"] == "ray" and summary["written"] == len(good)
    assert outputs(out) == outputs(reference)
    assert sorted(line["clip"] for line in report_lines(out)) == sorted(good)


CRASHING_JOB = """
import os
import time
import numpy as np

def convert(path, settings):
    if path.stem == settings["crash"]:
        time.sleep(0.2)
        os._exit(3)  # as a worker killed for memory
    time.sleep(0.5)  # the other worker's clip, and the queued ones, are in flight when it dies
    return [{"name_length": np.array(len(path.stem))}], {"frames": 1}
"""


def test_a_dying_worker_costs_only_its_clip(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(CRASHING_JOB)
    tasks = []
    for name in ("ccc", "a", "bb", "dddd", "eeeee", "ffffff", "g"):
        (tmp_path / f"{name}.bvh").write_text("")
        tasks.append(Task(f"{name}.bvh", str(tmp_path / f"{name}.bvh"), (str(tmp_path / "out" / f"{name}.npz"),)))
    result = run_batch(tasks, ScriptJob(str(script), "convert", {"crash": "ccc"}), "digest", tmp_path / "out",
                       workers=2, progress=False)
    assert (result.written, result.failed) == (6, 1)  # the clips in flight beside it were retried
    assert result.failures == [{"input": str(tmp_path / "ccc.bvh"), "error": WORKER_DIED}]
    for task in tasks:
        if task.name != "ccc.bvh":
            assert int(np.load(task.outputs[0])["name_length"]) == len(Path(task.name).stem)
    assert sorted(line["clip"] for line in report_lines(tmp_path / "out")) == sorted(t.name for t in tasks)


def test_without_ray_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package gives `import ray`
    clip = walk_clip(tmp_path / "in" / "01_walk.bvh", 0, 8)
    task = Task("01_walk.bvh", str(clip), (str(tmp_path / "out" / "01_walk_poses.npz"),))
    with pytest.raises(BatchError, match=r"pip install .*ray"):
        run_batch([task], lambda path: ([], {}), "digest", tmp_path / "out", workers=2, ray_address="")


def test_settings_hash_follows_file_contents(tmp_path):
    preset = tmp_path / "preset.json"
    preset.write_text('{"name": "a"}')
    first = settings_hash({"skeleton": str(preset), "fps": 30.0})
    assert settings_hash({"fps": 30.0, "skeleton": str(preset)}) == first  # order does not matter
    preset.write_text('{"name": "b"}')
    assert settings_hash({"skeleton": str(preset), "fps": 30.0}) != first
    assert settings_hash({"skeleton": "cmu", "fps": 30.0}) != settings_hash({"skeleton": "cmu", "fps": 60.0})
    assert settings_hash({"rest": np.zeros(3)}) != settings_hash({"rest": np.ones(3)})


def test_plan_mirrors_folders_and_refuses_clashing_outputs(tmp_path):
    for name in ("a/x.bvh", "a/b/y.BVH", "z.c3d", "notes.txt", ".hidden/w.bvh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    tasks = plan([tmp_path], tmp_path / "out", (".bvh", ".c3d"), "_poses.npz")
    assert [t.name for t in tasks] == ["a/b/y.BVH", "a/x.bvh", "z.c3d"]
    assert tasks[0].outputs == (str(tmp_path / "out" / "a" / "b" / "y_poses.npz"),)
    # a pattern's outputs mirror the paths below its fixed folder part
    tasks = plan([str(tmp_path / "a" / "*" / "*.BVH")], tmp_path / "out", (".bvh",), "_poses.npz")
    assert [t.name for t in tasks] == ["b/y.BVH"]
    (tmp_path / "z.bvh").write_text("")
    with pytest.raises(BatchError, match="would both write"):
        plan([tmp_path / "z.bvh", tmp_path / "z.c3d"], tmp_path / "out", (".bvh", ".c3d"), "_poses.npz")
    with pytest.raises(BatchError, match="no such file"):
        plan([str(tmp_path / "missing*.bvh")], tmp_path / "out", (".bvh",), "_poses.npz")


def test_prepare_mocap_reports_a_bad_file_and_resumes(tmp_path, capsys):
    from test_mocap_transfer import _load_script

    for k in (1, 2):
        walk_clip(tmp_path / "in" / f"02_0{k}.bvh", 40 * k, 40)
    (tmp_path / "in" / "02_03.bvh").write_text("HIERARCHY\nROOT Hips\n")
    script, out = _load_script(), tmp_path / "out"
    assert script.main([str(tmp_path / "in"), str(out), "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "02_03.bvh" in printed and "1 failed" in printed
    written = sorted(p.name for p in (out / "train").iterdir())
    assert written == ["02_01.npz", "02_01_mirror.npz", "02_02.npz", "02_02_mirror.npz"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "train").iterdir()}
    assert script.main([str(tmp_path / "in"), str(out), "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "0 written, 2 already done, 1 failed" in printed
    assert "2 files from subjects 02" in printed  # the summary still counts the skipped files
    assert {p: p.stat().st_mtime_ns for p in (out / "train").iterdir()} == stamps
