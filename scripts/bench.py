#!/usr/bin/env python3
"""Benchmarks for the core library, printed as Markdown tables.

    python scripts/bench.py --sections body [--repeat 5] [--batches 1,64,1024] [--json OUT]

Sections are registered by name with `@section(...)`; each returns one or more `Table`s. To add
one, write a function `def bench_name(ctx: Context) -> list[Table]` under the decorator. Timings
are medians over `--repeat` runs after `--warmup` runs; when two implementations are compared,
their runs are interleaved so that a change in machine load hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- framework
@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
        lines.extend(["", *(f"- {note}" for note in self.notes)])
        return "\n".join(lines).rstrip() + "\n"


@dataclass
class Context:
    repeat: int
    warmup: int
    batches: list[int]
    device: torch.device
    workdir: Path  # scratch space for files a section builds (removed afterwards)
    prior: Path | None = None  # VPoser weights for the ik section (default: the shipped open prior)
    clip: Path | None = None  # BVH clip for the retarget section (default: the shipped walk)
    mocap: Path | None = None  # the mocap training folder for the character section


@dataclass
class Section:
    name: str
    help: str
    run: Callable[[Context], list[Table]]


SECTIONS: dict[str, Section] = {}


def section(name: str, help: str):
    """Register `function(ctx) -> list[Table]` as the benchmark section `name`."""

    def register(function: Callable[[Context], list[Table]]) -> Callable[[Context], list[Table]]:
        SECTIONS[name] = Section(name, help, function)
        return function

    return register


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(functions: dict[str, Callable[[], object]], ctx: Context) -> dict[str, float]:
    """Median wall time in milliseconds of each function; runs are taken in turn."""
    for _ in range(ctx.warmup):
        for function in functions.values():
            function()
    _sync(ctx.device)
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(ctx.repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            _sync(ctx.device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.date.today().isoformat(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


# --------------------------------------------------------------------------- section: body
def _body_inputs(kind_parts, num_betas: int, num_expression: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"betas": torch.randn(batch, num_betas, generator=g), "transl": torch.randn(batch, 3, generator=g)}
    if num_expression:
        inputs["expression"] = torch.randn(batch, num_expression, generator=g)
    for part, count in kind_parts:
        inputs[part] = 0.3 * torch.randn(batch, 3 * count, generator=g)
    return inputs


def _open_body_pair(workdir: Path):
    """Our open default body and smplx.SMPLH on the same arrays (hand PCA and posedirs added as zeros,
    because smplx always reads them)."""
    from core.body_model import DATA_DIR, OPEN_BODY_VARIANTS, BodyModel

    path = DATA_DIR / OPEN_BODY_VARIANTS["adult"]
    if not path.is_file():
        return None, f"open body skipped: core/data/{path.name} is not built yet"
    ours = BodyModel.open_default("adult", num_betas=10)
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError:
        return (ours, None, 0), "smplx is not installed: its columns are empty"
    data = dict(np.load(path))
    num_verts = data["v_template"].shape[0]
    for side in "lr":
        data.setdefault(f"hands_components{side}", np.zeros((45, 45), np.float32))
        data.setdefault(f"hands_mean{side}", np.zeros(45, np.float32))
    data.setdefault("posedirs", np.zeros((num_verts, 3, 9 * 51), np.float32))
    copy = workdir / "openbody_for_smplx.npz"
    np.savez(copy, **data)
    theirs = smplx.SMPLH(model_path=str(copy), data_struct=Struct(**dict(np.load(copy))), num_betas=10,
                         use_pca=False, flat_hand_mean=True)
    return (ours, theirs, 0), None


def _smplx_layout_pair(workdir: Path):
    """A made-up model in the official SMPL-X v1.1 layout and size (10,475 vertices, 55 joints,
    300 + 100 shape / expression components), used with 10 betas and 10 expression coefficients."""
    from core.body_model import BodyModel
    from core.synthetic_models import write_model

    path = write_model(workdir / "SMPLX_NEUTRAL.npz", "smplx", num_shape=300, num_faces=64, seed=0)
    ours = BodyModel.from_file(path, num_betas=10, num_expression=10)
    try:
        import smplx
    except ImportError:
        return (ours, None, 10), "smplx is not installed: its columns are empty"
    theirs = smplx.SMPLX(model_path=str(path), ext="npz", num_betas=10, num_expression_coeffs=10, use_pca=False,
                         flat_hand_mean=False)
    return (ours, theirs, 10), None


@section("body", "body model forward on CPU: full mesh and joints only, against the smplx package")
def bench_body(ctx: Context) -> list[Table]:
    table = Table(
        "Body model forward (CPU, float32, torch.inference_mode)",
        ["model", "batch", "ours full (ms)", "ours joints-only (ms)", "smplx full (ms)",
         "smplx / ours full", "smplx full / ours joints-only", "max vertex diff vs smplx (µm)"],
    )
    for label, build in (("open body, adult (13,718 v, 52 j)", _open_body_pair),
                         ("SMPL-X layout (10,475 v, 55 j)", _smplx_layout_pair)):
        pair, note = build(ctx.workdir)
        if note:
            table.notes.append(note)
        if pair is None:
            continue
        ours, theirs, num_expression = pair
        ours = ours.to(ctx.device)
        for batch in ctx.batches:
            inputs = {k: v.to(ctx.device) for k, v in
                      _body_inputs(ours.kind.pose_parts, 10, num_expression, batch).items()}
            functions = {
                "full": lambda: ours(**inputs),
                "joints": lambda: ours(**inputs, return_vertices=False),
            }
            if theirs is not None:
                functions["smplx"] = lambda: theirs(**inputs)
            with torch.inference_mode():
                times = time_interleaved(functions, ctx)
                error = None
                if theirs is not None:
                    error = float((ours(**inputs).vertices - theirs(**inputs).vertices).abs().max()) * 1e6
            smplx_ms = times.get("smplx")
            table.rows.append([
                label, batch, times["full"], times["joints"], smplx_ms,
                None if smplx_ms is None else smplx_ms / times["full"],
                None if smplx_ms is None else smplx_ms / times["joints"],
                error,
            ])
            print(f"  body: {label}, batch {batch}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items()),
                  file=sys.stderr, flush=True)
    table.notes.append("Same inputs for both libraries: 10 betas (+ 10 expression for SMPL-X), random poses "
                       "(0.3 rad per axis), translation; smplx built with use_pca=False.")
    table.notes.append("The open body has no pose correctives; smplx needs a posedirs array, so it gets zeros "
                       "and still multiplies them, while ours skips the term.")
    table.notes.append(f"Median of {ctx.repeat} runs after {ctx.warmup} warm-up run(s); "
                       "ours and smplx runs interleaved.")
    return [table]


# --------------------------------------------------------------------------- section: ik
def _ik_setup(ctx: Context):
    """The open body and the open prior when they are built, else stand-ins (named in the notes)."""
    from core.body_model import DATA_DIR, OPEN_BODY_VARIANTS, BodyModel
    from core.synthetic_models import write_model
    from core.vposer import VPoser, default_vposer_path, load_vposer

    notes = []
    if (DATA_DIR / OPEN_BODY_VARIANTS["adult"]).is_file():
        model, body = BodyModel.open_default("adult"), "open body, adult (13,718 v, 52 j)"
    else:
        model = BodyModel.from_file(write_model(ctx.workdir / "smplh.npz", "smplh"))
        body = "made-up SMPL-H layout body (6,890 v, 52 j)"
        notes.append("core/data/openbody_adult.npz is not built: a made-up SMPL-H layout body stands in.")
    if ctx.prior is not None:
        prior, name = load_vposer(ctx.prior), f"VPoser from {ctx.prior.name} (given with --prior)"
    elif default_vposer_path().is_file():
        prior, name = load_vposer(default_vposer_path()), "open VPoser (core/data/vposer_open.pt)"
    else:
        torch.manual_seed(0)
        prior, name = VPoser().eval().requires_grad_(False), "randomly initialised VPoser"
        notes.append("core/data/vposer_open.pt is not trained yet: a randomly initialised VPoser stands in. Its "
                     "samples are arbitrary rotations and its ReLU kinks are dense, so iteration counts are "
                     "pessimistic; re-run when the trained prior exists.")
    return model.to(ctx.device), prior.to(ctx.device), body, name, notes


def _ik_targets(model, prior, keypoints, count: int, seed: int) -> torch.Tensor:
    """Keypoints of `count` prior samples (z ~ N(0, I)), each turned about the vertical by a random
    angle and placed within a few metres of the origin: frames with no temporal coherence."""
    from core.rotations import axis_angle_to_matrix

    g = torch.Generator().manual_seed(seed)
    rotations = axis_angle_to_matrix(model.full_pose({}, 1).view(1, -1, 3)).expand(count, -1, -1, -1).clone()
    yaw = torch.rand(count, generator=g) * 2 * np.pi
    rotations[:, 0] = axis_angle_to_matrix(torch.stack([0 * yaw, yaw, 0 * yaw], 1).to(rotations))
    latent = torch.randn(count, prior.latent_dim, generator=g).to(rotations)
    transl = (torch.randn(count, 3, generator=g) * torch.tensor([2.0, 0.1, 2.0])).to(rotations)
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix(latent)
        return keypoints.evaluate(rotations, transl=transl)


def _ik_errors(result) -> tuple[float, float, float]:
    """(mean target error mm, 95th percentile of each frame's worst target mm, % frames converged)."""
    errors = result.errors.nan_to_num(0)
    worst = errors.amax(1)
    return (float(result.errors.nanmean()) * 1e3, float(worst.quantile(0.95)) * 1e3,
            100 * float(result.converged.float().mean()))


@section("ik", "IK: interactive single frames (warm/cold), 1,000-frame retargets, LM vs LBFGS vs Adam")
def bench_ik(ctx: Context) -> list[Table]:
    from core.ik import IKSolver, live_lm_options
    from core.keypoints import KeypointSet, sample_surface

    model, prior, body, prior_name, notes = _ik_setup(ctx)
    effectors = KeypointSet.named(model, "effectors")
    joints = KeypointSet.named(model, "body22")
    markers = sample_surface(model, 40, offset=0.01, seed=0)
    common = [f"Body: {body}; prior: {prior_name}; float32 on {ctx.device}.", *notes]

    # (a) interactive: one frame, six effectors; the warm case drags the right wrist 6 cm.
    live = Table("IK, interactive single frame (6 effectors)",
                 ["start", "LM iterations cap", "median time (ms)", "median iterations", "median worst error (mm)",
                  "90th pct worst error (mm)"])
    frames = _ik_targets(model, prior, effectors, 20, seed=1)
    drag = torch.tensor([0.05, 0.03, 0.0], device=ctx.device)
    full, capped = IKSolver(model, effectors, prior), IKSolver(model, effectors, prior,
                                                                lm_options=live_lm_options(), retry=None)
    starts = [full.solve(frame) for frame in frames]
    cases = [("cold (T-pose)", full, lambda i: (frames[i], None)),
             ("warm, after a 6 cm drag", full, lambda i: (_dragged(frames[i], drag), starts[i])),
             ("warm, after a 6 cm drag", capped, lambda i: (_dragged(frames[i], drag), starts[i]))]
    for label, solver, case in cases:
        times, iterations, worst = [], [], []
        warm_up_targets, warm_up_init = case(0)
        solver.solve(warm_up_targets, init=warm_up_init)
        for i in range(len(frames)):
            targets, init = case(i)
            start = time.perf_counter()
            result = solver.solve(targets, init=init)
            _sync(ctx.device)
            times.append((time.perf_counter() - start) * 1e3)
            iterations.append(int(result.iterations.sum()))
            worst.append(float(result.errors.nan_to_num(0).max()) * 1e3)
        live.rows.append([label, solver.lm_options.max_iterations, statistics.median(times),
                          statistics.median(iterations), statistics.median(worst), float(np.percentile(worst, 90))])
        print(f"  ik: {label}, cap {solver.lm_options.max_iterations}: {statistics.median(times):.1f} ms",
              file=sys.stderr, flush=True)
    live.notes.extend([*common, (f"{len(frames)} random prior samples; each row's median over them, one solve "
                       "each (after one warm-up solve). Cold starts include the 3-iteration orientation/translation "
                       "stage; the capped row is what a live session runs per update, the next update "
                       "continuing from it.")])

    # (b), (c) 1,000 independent frames, cold starts.
    batch = Table("IK, 1,000 independent frames from a cold start (LM)",
                  ["targets", "frames/s", "total (s)", "mean error (mm)", "95th pct worst error (mm)",
                   "converged (%)", "mean iterations"])
    for label, keypoints in (("22 body joints", joints), ("40 surface markers, 1 cm off the skin", markers)):
        targets = _ik_targets(model, prior, keypoints, 1000, seed=2)
        solver = IKSolver(model, keypoints, prior)
        solver.solve(targets[:8])  # warm-up
        runs = []
        for _ in range(max(1, min(ctx.repeat, 3))):
            start = time.perf_counter()
            result = solver.solve(targets)
            _sync(ctx.device)
            runs.append(time.perf_counter() - start)
        seconds = statistics.median(runs)
        mean, p95, converged = _ik_errors(result)
        batch.rows.append([label, 1000 / seconds, seconds, mean, p95, converged,
                           float(result.iterations.float().mean())])
        print(f"  ik: 1000 frames, {label}: {1000 / seconds:.0f} frames/s, {mean:.2f} mm", file=sys.stderr, flush=True)
    batch.notes.extend([*common, (f"Median of {max(1, min(ctx.repeat, 3))} solves of the same 1,000 frames "
                        "(random prior samples, random heading, translation within a few metres). Iterations "
                        "count LM trial steps per frame, both stages; converged frames leave the batch.")])

    # LM against the first-order optimisers of the original, on the same 100 frames.
    methods = Table("IK optimisers on the same 100 frames (cold start)",
                    ["targets", "method", "time (s)", "iterations", "mean error (mm)", "95th pct worst error (mm)"])
    for label, keypoints in (("22 body joints", joints), ("40 surface markers", markers)):
        targets = _ik_targets(model, prior, keypoints, 100, seed=3)
        solvers = {method: IKSolver(model, keypoints, prior, method=method) for method in ("lm", "lbfgs", "adam")}
        results = {}

        def run(method: str, solvers=solvers, results=results, targets=targets):
            def solve():
                results[method] = solvers[method].solve(targets)
            return solve

        times = time_interleaved({method: run(method) for method in solvers},
                                 replace(ctx, repeat=1, warmup=0))
        for method, result in results.items():
            mean, p95, _ = _ik_errors(result)
            iterations = result.iterations.float()
            shown = f"{float(iterations.mean()):.1f} (max {int(iterations.max())})" if method == "lm" else int(iterations[0])
            methods.rows.append([label, method, times[method] / 1e3, shown, mean, p95])
        print(f"  ik: methods on {label}: " + ", ".join(f"{k} {v / 1e3:.1f} s" for k, v in times.items()),
              file=sys.stderr, flush=True)
    methods.notes.extend([*common, ("LM: per-frame damping, stopping and active set (default options). LBFGS: "
                          "strong-Wolfe line search on the batch-mean loss, up to 100 iterations per stage. Adam: "
                          "lr 0.02, 300 iterations per stage. Same objective, stages and start for all three; "
                          "iterations are per stage summed (LM: per frame; the others: the whole batch's).")])
    return [live, batch, methods]


def _dragged(targets: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    moved = targets.clone()
    moved[3] += offset  # the right wrist in the "effectors" set
    return moved


# --------------------------------------------------------------------------- section: retarget
def _clip_frames(ctx: Context, count: int = 1000):
    """A BVH clip of exactly `count` frames: --clip (default the shipped CMU walk), looped if shorter."""
    from core.mocap.bvh import read_bvh

    motion = read_bvh(ctx.clip or ROOT / "examples" / "cmu_02_01_walk.bvh")
    return motion, np.arange(count) % motion.num_frames


@section("retarget", "retarget a 1,000-frame BVH clip onto the body (core.retarget, CMU preset)")
def bench_retarget(ctx: Context) -> list[Table]:
    from core.body_model import BodyModel
    from core.retarget import bvh_targets, retarget

    model = BodyModel.open_default("adult").to(ctx.device)
    motion, frames = _clip_frames(ctx)
    table = Table("Retarget, 1,000 frames of a CMU clip (landmark joints as targets, shape fit and calibration "
                  "included)", ["clip", "frames", "median time (s)", "frames/s", "mean error (mm)", "worst joint (mm)"])
    results = []

    def run():
        targets = bvh_targets(motion, "cmu", model, frames)
        results.append(retarget(model, targets))

    seconds = time_interleaved({"retarget": run}, ctx)["retarget"] / 1e3
    result = results[-1]
    table.rows.append([Path(motion.source).name, len(frames), seconds, len(frames) / seconds, result.mpjpe_mm,
                       max(result.per_keypoint_mm().values())])
    table.notes.append(f"Body: open adult, float32 on {ctx.device}; the clip's frames looped to 1,000 when shorter; "
                       "time includes building the targets (BVH forward kinematics and rotation transfer).")
    return [table]


# --------------------------------------------------------------------------- section: character
# (clip, its skeleton preset) -> (character file, its bind frame): CMU clips onto a DAZ-release
# skeleton (its frame 0 is the T-pose) and DAZ-release clips onto a CMU skeleton (zero-rotation rest).
CHARACTER_PAIRS = (
    (("cmu_asfamc_bvh/02_07.bvh", "cmu"), ("cmu_daz_bvh/13_10.bvh", 0)),
    (("cmu_asfamc_bvh/05_06.bvh", "cmu"), ("cmu_daz_bvh/13_10.bvh", 0)),
    (("cmu_asfamc_bvh/16_40.bvh", "cmu"), ("cmu_daz_bvh/13_10.bvh", 0)),
    (("cmu_asfamc_bvh/49_18.bvh", "cmu"), ("cmu_daz_bvh/13_10.bvh", 0)),
    (("cmu_daz_bvh/13_10.bvh", "cmu_daz"), ("cmu_asfamc_bvh/02_01.bvh", None)),
    (("cmu_daz_bvh/papagina_martial_05.bvh", "cmu_daz"), ("cmu_asfamc_bvh/02_01.bvh", None)),
    (("cmu_daz_bvh/papagina_indian_08.bvh", "cmu_daz"), ("cmu_asfamc_bvh/02_01.bvh", None)),
)
# Held out: clips of the prior's validation people (CMU 06 and 49; 49_18 above was used in
# development, these takes were not) onto rigs never used in development or tests: an HDM05 actor
# (CMU-31 names, another skeleton), a DAZ-release skeleton of subject 08 (its T-pose frame was
# removed from the 30 fps files, so its OFFSET pose, arms hanging, is the rest) and the 3dsMax-release
# skeleton of subject 131 (legs splayed in its OFFSET pose, zero-length thorax and wrists).
HELD_OUT_CLIPS = (("cmu_asfamc_bvh/06_14.bvh", "cmu"), ("cmu_asfamc_bvh/06_15.bvh", "cmu"),
                  ("cmu_asfamc_bvh/49_04.bvh", "cmu"), ("cmu_asfamc_bvh/49_13.bvh", "cmu"))
HELD_OUT_CHARACTERS = (("hdm05_asfamc_bvh30/HDM_tr_sneak2StepsLStart_014_120.bvh", None),
                       ("cmu_daz_bvh30/08_01.bvh", None), ("cmu_mb_bvh30/131_01.bvh", None))


def _mean(values: dict) -> float:
    return float(np.mean(list(values.values())))


@section("character", "retarget mocap clips onto another mocap skeleton taken as a character (limb directions, "
         "hand/foot rotations against the source, foot slide); development pairs and held-out pairs")
def bench_character(ctx: Context) -> list[Table]:
    folder = ctx.mocap
    if folder is None or not (folder / "cmu_daz_bvh").is_dir():
        raise SystemExit(f"error: the character section needs --mocap (a folder with cmu_asfamc_bvh/ and "
                         f"cmu_daz_bvh/), got {folder}")
    from core.body_model import BodyModel

    model = BodyModel.open_default("adult").to(ctx.device)
    table = Table("Clips onto a character (30 fps, up to 600 frames each)",
                  ["clip -> character", "frames", "limb, ik (deg, mean)", "worst limb, ik (deg)",
                   "hands/feet, ik (deg, mean)", "worst hand/foot, ik (deg)", "limb, transfer (deg, mean)",
                   "hands/feet, transfer (deg, mean)", "foot slide, source (mm/frame)", "foot slide, ik",
                   "foot slide, transfer", "foot slide, transfer + foot lock", "seconds"])
    for (clip, preset), (character, rest_frame) in CHARACTER_PAIRS:
        start = time.perf_counter()
        solved = _solve_clip(folder, clip, preset, model)
        ik = _on_character(solved, folder, character, rest_frame, model, "ik", lock=False)
        transfer = _on_character(solved, folder, character, rest_frame, model, "transfer", lock=False)
        locked = _on_character(solved, folder, character, rest_frame, model, "transfer", lock=True)
        table.rows.append([f"{clip} -> {Path(character).parent.name}", len(solved["frames"]), _mean(ik["limb"]),
                           max(ik["limb"].values()), _mean(ik["end"]), max(ik["end"].values()),
                           _mean(transfer["limb"]), _mean(transfer["end"]), transfer["slide_source"],
                           ik["slide"], transfer["slide"], locked["slide"], time.perf_counter() - start])
    table.notes.append("Limb: angle between the source's bone (hip -> knee, knee -> ankle, shoulder -> elbow, "
                       "elbow -> wrist) and the character's, per frame, averaged; hands/feet: angle between the "
                       "character's hand and foot rotations from rest and the source's carried through both rest "
                       "alignments. 'ik': the character follows the solved body (retarget.py --character-from ik; "
                       "the body's joints are calibrated landmarks, not the source's joints). 'transfer': the "
                       "clip's rotations carried to the character with the solved root path and shape "
                       "(--character-from transfer, the default). The foot lock moves the root only, so its limb "
                       "and hand/foot figures are the transfer's.")
    table.notes.append("Foot slide: mean horizontal travel per frame of the ankles over the frames where the source's "
                       "ankle is planted (within 3 cm of its lowest and moving < 5 mm/frame), the character's divided "
                       "by its scale (body size). 'foot lock': core.foot_contact's root pass on the source's ankle "
                       "and toe contacts (retarget.py's default; --no-foot-lock gives the 'transfer' column).")
    table.notes.append(f"Body: open adult, float32 on {ctx.device}; the clip's shape fitted; seconds = retarget + "
                       "binding + the three character motions.")
    return [table, _held_out(ctx, model)]


def _held_out(ctx: Context, model) -> Table:
    """The held-out pairs (HELD_OUT_CLIPS x HELD_OUT_CHARACTERS), driven as retarget.py does by default."""
    table = Table("Held-out clips onto held-out characters (30 fps, up to 600 frames; transfer + foot lock, the "
                  "defaults)", ["clip -> character", "frames", "limb (deg, mean)", "worst limb (deg, mean)",
                                "hands/feet (deg, mean)", "worst hand/foot (deg, mean)",
                                "foot slide, source (mm/frame)", "foot slide, without foot lock",
                                "foot slide, with foot lock"])
    for clip, preset in HELD_OUT_CLIPS:
        solved = _solve_clip(ctx.mocap, clip, preset, model)
        for character, rest_frame in HELD_OUT_CHARACTERS:
            free = _on_character(solved, ctx.mocap, character, rest_frame, model, "transfer", lock=False)
            locked = _on_character(solved, ctx.mocap, character, rest_frame, model, "transfer", lock=True)
            table.rows.append([f"{Path(clip).stem} -> {Path(character).parent.name}/{Path(character).stem[:12]}",
                               len(solved["frames"]), _mean(locked["limb"]), max(locked["limb"].values()),
                               _mean(locked["end"]), max(locked["end"].values()), locked["slide_source"],
                               free["slide"], locked["slide"]])
    table.notes.append("CMU subjects 06 and 49 are the prior's validation people; none of these takes nor rigs was "
                       "used to develop or test the character transfer. Measures as in the table above.")
    return table


def _solve_clip(folder: Path, clip: str, preset: str, model) -> dict:
    """A clip read at 30 fps (up to 600 frames), its targets and the solved body."""
    from core.mocap.bvh import read_bvh
    from core.mocap.convert import subsample_indices
    from core.mocap.skeletons import get_preset
    from core.retarget import bvh_targets, retarget

    motion = read_bvh(folder / clip)
    frames = subsample_indices(motion.num_frames, motion.fps, 30)
    first = 1 if get_preset(preset).rest_frame == 0 else 0  # the DAZ files' T-pose frame is not motion
    frames = frames[frames >= first][:600]
    targets = bvh_targets(motion, preset, model, frames)
    return {"motion": motion, "preset": preset, "frames": frames, "targets": targets,
            "result": retarget(model, targets)}


def _on_character(solved: dict, folder: Path, character: str, rest_frame, model, drive: str, lock: bool) -> dict:
    """The solved clip on a character: drive "ik" (the solved body) or "transfer" (the clip's
    rotations, the solved root path), with or without the foot lock (the source's contacts).
    Returns limb and end agreement (clip_agreement) and foot slides (mm/frame)."""
    from core.character import CharacterSkeleton, character_motion, clip_agreement
    from core.foot_contact import source_contacts
    from core.rotations import matrix_to_axis_angle

    targets, result = solved["targets"], solved["result"]
    poses = result.poses if drive == "ik" else matrix_to_axis_angle(targets.init.rotations.double())
    contacts = None
    if lock:
        contacts = source_contacts(targets.keypoints.names, targets.positions.detach().cpu().double(), 30.0)
    skeleton = CharacterSkeleton.from_bvh(folder / character, rest_frame=rest_frame)
    binding, _, heads, D = character_motion(skeleton, "auto", model, poses, result.transl, result.betas, contacts)
    agreement = clip_agreement(binding, solved["motion"], solved["preset"], solved["frames"], heads, D)
    source, slide = _foot_slide(solved["motion"], solved["preset"], solved["frames"], binding, heads)
    return {**agreement, "slide_source": source, "slide": slide}


def _foot_slide(motion, preset_name, frames, binding, heads) -> tuple[float, float]:
    """Mean horizontal ankle travel (mm/frame) of the source and of the character (at body size) over
    the source's planted-ankle frames."""
    from core.mocap.bvh import forward_kinematics
    from core.mocap.skeletons import get_preset
    from core.mocap.transfer import axes_matrix

    preset = get_preset(preset_name)
    _, positions = forward_kinematics(motion, frames=frames)
    positions = preset.unit_scale * positions @ axes_matrix(preset.axes).T
    source, character = [], []
    for side in ("left", "right"):
        src = positions[:, motion.index(preset.sources(f"{side}_ankle")[0])]
        dst = heads[:, binding.joint_bones[binding.body_names.index(f"{side}_ankle")][0]] / binding.scale
        step_src = (src[1:] - src[:-1])[:, [0, 2]].norm(dim=-1)
        step_dst = (dst[1:] - dst[:-1])[:, [0, 2]].norm(dim=-1)
        planted = (src[1:, 1] < src[:, 1].min() + 0.03) & ((src[1:] - src[:-1]).norm(dim=-1) < 0.005)
        source.append(step_src[planted])
        character.append(step_dst[planted])
    source, character = torch.cat(source), torch.cat(character)
    if not len(source):
        return float("nan"), float("nan")
    return 1000 * float(source.mean()), 1000 * float(character.mean())


# --------------------------------------------------------------------------- section: blender
@section("blender", "Blender (bpy module): key writing, a Live Posing update, a 1,000-frame retarget end to end")
def bench_blender(ctx: Context) -> list[Table]:
    from blender_scene import blender_output_to_stderr, start_blender

    from core.mocap.skeletons import get_preset

    with blender_output_to_stderr():
        bpy = start_blender()
        import importlib

        bridge = importlib.import_module("vposer.vposer_addon.bridge")
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.ops.vposer.add_body("EXEC_DEFAULT", source="ADULT")
        rig = bpy.context.view_layer.objects.active
        names = rig.vposer_body.joint_names()
        table = Table("Blender: key writing and Live Posing", ["operation", "median time (ms)", "runs"])
        generator = np.random.default_rng(0)
        quaternions = generator.normal(size=(1000, len(names), 4))
        quaternions /= np.linalg.norm(quaternions, axis=-1, keepdims=True)
        translations = generator.normal(size=(1000, 3))

        def write():
            action = bridge.write_action(rig, names, quaternions, translations, 1, "bench")
            bpy.data.actions.remove(action)

        write_ms = time_interleaved({"write": write}, ctx)["write"]
        table.rows.append([f"write_action: 1,000 frames x {len(names)} bones (+ root location)", write_ms, ctx.repeat])

        rig.animation_data_clear()
        bpy.ops.vposer.add_targets("EXEC_DEFAULT", preset="EFFECTORS")
        wrist = next(obj for obj in bpy.data.objects if getattr(obj, "vposer_target", None)
                     and obj.vposer_target.joint == "right_wrist")
        bpy.context.scene.vposer_live = True
        times = []
        for step in range(21):
            wrist.location.x += 0.01 if step % 2 else -0.008
            wrist.location.z += 0.005
            start = time.perf_counter()
            bpy.context.view_layer.update()  # the handler solves and writes the pose; Blender re-evaluates
            times.append((time.perf_counter() - start) * 1e3)
        bpy.context.scene.vposer_live = False
        table.rows.append(["Live Posing update: drag the right-wrist target (solve + write + depsgraph)",
                           statistics.median(times[1:]), len(times) - 1])

        # A 1,000-frame clip: Blender's BVH importer, then Retarget over the scene's first 1,000 frames.
        clip = ctx.clip or ROOT / "examples" / "cmu_02_01_walk.bvh"
        retarget_ms = []
        for _ in range(ctx.repeat):
            bpy.ops.wm.read_homefile(use_empty=True)
            bpy.ops.import_anim.bvh(filepath=str(clip), global_scale=get_preset("cmu").unit_scale, rotate_mode="QUATERNION", frame_start=1)
            source = bpy.context.view_layer.objects.active
            bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 1000
            bpy.ops.object.select_all(action="DESELECT")
            bpy.ops.vposer.add_body("EXEC_DEFAULT", source="ADULT")
            source.select_set(True)
            start = time.perf_counter()
            bpy.ops.vposer.retarget("EXEC_DEFAULT", source="ARMATURE", preset="CMU", use_scene_range=True)
            retarget_ms.append((time.perf_counter() - start) * 1e3)
        table.rows.append([f"Retarget {clip.name}, frames 1-1000 (sample, solve, write the action, set the shape)",
                           statistics.median(retarget_ms), ctx.repeat])
        table.rows.extend(_bench_marker_retarget(ctx, bpy))
        table.notes.append(f"Blender {bpy.app.version_string} (bpy module) on Python {platform.python_version()}, "
                           f"numpy {np.__version__}.")
        table.notes.append("Open adult body, float32 on the CPU; Live Posing runs "
                           "core.ik.live_lm_options() per update (4 LM iterations), warm-started.")
        characters = _bench_characters(bpy, ctx, clip)
    return [table, characters]


def _bench_characters(bpy, ctx: Context, clip: Path) -> Table:  # noqa: ANN001 - the bpy module
    """Bind Character, a Live Posing update and a 1,000-frame Retarget on characters from Blender's
    bundled Rigify: its human metarig (a plain hierarchy) and the rig it generates (FK controls
    under constraint-driven mechanism bones)."""
    import addon_utils

    from core.mocap.skeletons import get_preset

    table = Table("Blender: a bound character", ["character", "operation", "median time (ms)", "runs"])
    addon_utils.enable("rigify", default_set=True)
    blend = ctx.workdir / "rigify.blend"
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.object.armature_human_metarig_add()
    bpy.ops.pose.rigify_generate()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    for label, name in (("Rigify metarig", "metarig"), ("generated Rigify rig", "rig")):
        def scene():  # the character alone, selected and active
            bpy.ops.wm.open_mainfile(filepath=str(blend))
            character = bpy.data.objects[name]
            bpy.ops.object.select_all(action="DESELECT")
            character.select_set(True)
            bpy.context.view_layer.objects.active = character
            return character

        bind_ms = []
        for _ in range(ctx.repeat):
            character = scene()
            start = time.perf_counter()
            bpy.ops.vposer.bind_character("EXEC_DEFAULT")
            bind_ms.append((time.perf_counter() - start) * 1e3)
        table.rows.append([label, f"Bind Character ({len(character.data.bones)} bones; detect, fit, place)",
                           statistics.median(bind_ms), ctx.repeat])

        bpy.ops.vposer.add_targets("EXEC_DEFAULT", preset="EFFECTORS")
        wrist = next(obj for obj in bpy.data.objects if obj.vposer_target.joint == "right_wrist")
        bpy.context.view_layer.objects.active = character
        bpy.ops.vposer.solve_pose("EXEC_DEFAULT")
        bpy.context.scene.vposer_live = True
        times = []
        for step in range(21):
            wrist.location.x += 0.01 if step % 2 else -0.008
            start = time.perf_counter()
            bpy.context.view_layer.update()
            times.append((time.perf_counter() - start) * 1e3)
        bpy.context.scene.vposer_live = False
        table.rows.append([label, "Live Posing update (solve, write the body and the character, depsgraph)",
                           statistics.median(times[1:]), len(times) - 1])

        retarget_ms = []
        for _ in range(ctx.repeat):
            character = scene()
            bpy.ops.vposer.bind_character("EXEC_DEFAULT")
            bpy.ops.import_anim.bvh(filepath=str(clip), global_scale=get_preset("cmu").unit_scale,
                                    rotate_mode="QUATERNION", frame_start=1)
            source = bpy.context.view_layer.objects.active
            bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 1000
            source.select_set(True)
            character.select_set(True)
            bpy.context.view_layer.objects.active = character
            start = time.perf_counter()
            bpy.ops.vposer.retarget("EXEC_DEFAULT", source="ARMATURE", preset="CMU", use_scene_range=True)
            retarget_ms.append((time.perf_counter() - start) * 1e3)
        table.rows.append([label, f"Retarget {clip.name}, frames 1-1000, as a new action on the character",
                           statistics.median(retarget_ms), ctx.repeat])
    table.notes.append("Generated with Blender's bundled Rigify in the bpy module; Bind Character includes "
                       "fitting the body's shape and scale to the character's rest joints.")
    return table


def _bench_marker_retarget(ctx: Context, bpy) -> list[list]:
    """1,000 marker frames (a C3D take made by eval_markers.py from the shipped walk, looped):
    Import C3D then Retarget in Blender, against core's Retarget of the same file with the same
    options (calibrated, 100-frame batches as the operator solves), runs alternated."""
    from eval_markers import LAYOUT, make_take

    from core.body_model import BodyModel
    from core.mocap.c3d import read_c3d, to_model_space
    from core.retarget import Retarget, RetargetOptions, marker_targets
    from core.vposer import load_default_vposer

    model = BodyModel.open_default("adult").to(ctx.device)
    take, _ = make_take(model, ROOT / "examples" / "cmu_02_01_walk.bvh", 1000, 1, ctx.workdir)
    prior = load_default_vposer().to(ctx.device).eval()

    def core() -> None:
        clip = read_c3d(take)
        targets = marker_targets(model, LAYOUT, clip.labels, to_model_space(clip.positions), clip.frame_rate)
        for _ in Retarget(model, targets, prior, RetargetOptions(batch_size=100)):
            pass

    def blender() -> None:
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.ops.vposer.import_c3d("EXEC_DEFAULT", filepath=str(take))
        collection = bpy.data.collections[-1].name
        bpy.ops.object.select_all(action="DESELECT")
        bpy.ops.vposer.add_body("EXEC_DEFAULT", source="ADULT")
        start = time.perf_counter()
        bpy.ops.vposer.retarget("EXEC_DEFAULT", source="MARKERS", marker_collection=collection)
        times["blender retarget"].append((time.perf_counter() - start) * 1e3)

    times: dict[str, list[float]] = {"blender retarget": []}
    core_ms = time_interleaved({"core": core, "blender": blender}, ctx)
    return [["Retarget 1,000 C3D marker frames in core (read, calibrate, solve)", core_ms["core"], ctx.repeat],
            ["Retarget 1,000 C3D marker frames in Blender (sample the empties, calibrate, solve, write, set the shape)",
             statistics.median(times["blender retarget"][-ctx.repeat:]), ctx.repeat]]


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="body",
                        help=f"comma-separated sections to run, or 'all' (known: {', '.join(SECTIONS)})")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--batches", default="1,64,1024", help="batch sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--prior", type=Path, help="VPoser weights for the ik section (default: the shipped "
                        "open prior, else a randomly initialised one)")
    parser.add_argument("--clip", type=Path, help="BVH clip (CMU skeleton) for the retarget section "
                        "(default: the shipped walk)")
    parser.add_argument("--mocap", type=Path, default=ROOT.parent / "shared" / "data" / "mocap" / "train",
                        help="mocap folder with cmu_asfamc_bvh/ and cmu_daz_bvh/ for the character section")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(argv)
    if args.list:
        for item in SECTIONS.values():
            print(f"{item.name}: {item.help}")
        return 0
    names = list(SECTIONS) if args.sections == "all" else [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    info = machine_info()
    results: dict[str, object] = {"machine": info, "command": " ".join(["python", "scripts/bench.py", *sys.argv[1:]]),
                                  "sections": {}}
    print(f"Machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
          f"{info['torch_threads']} threads, {info['date']}\n")
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        ctx = Context(repeat=args.repeat, warmup=args.warmup,
                      batches=[int(b) for b in args.batches.split(",")], device=torch.device(args.device),
                      workdir=Path(scratch), prior=args.prior, clip=args.clip, mocap=args.mocap)
        for name in names:
            tables = SECTIONS[name].run(ctx)
            results["sections"][name] = [asdict(table) for table in tables]
            for table in tables:
                print(table.markdown())
    if hasattr(os, "getloadavg"):
        info["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
