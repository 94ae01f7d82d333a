"""Targets that pose a body: which object drives which joint, pins, the solve, and Live Posing.

Any object can be a target: `Object.vposer_target` names the body it drives, the joint and a
weight; `PoseBone.vposer_pinned` marks joints whose rotation a solve keeps. A solve reads the
targets' world positions, takes them into model space through the inverse of the rig's world
matrix, runs core's IK with the prior, and writes the body joints' pose bones.

Each body remembers the prior latent of its last solve (for this session only). When the rig
still shows that solve's pose, the next solve starts from the latent, so repeated solves and live
drags go on smoothly; when the pose was changed by other means it is encoded afresh, which the
prior may turn a little.

Live Posing is a `depsgraph_update_post` handler that re-solves a body, with a few iterations,
whenever one of its targets moves. A few iterations follow a drag, but a jump can leave the body
short, so once the targets stop a full solve (with its retries) finishes the pose: when an update
finds the targets where the last live step saw them, or, in the UI, from a timer shortly after the
last step (`finish_live_solves`; headless, timers never fire, so tests call it). The handler is
persistent, so it keeps working across file loads; it only acts on scenes whose Live Posing is on,
and its latents are checked against the rig's pose before use, so nothing it remembers can go
stale across loads or undo. The update that undo and redo cause is skipped, so they restore the
pose instead of re-solving it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np
from bpy.app.handlers import persistent

from ..core.errors import VPoserError
from . import bridge
from .preferences import resolve_device
from .properties import active_body

if TYPE_CHECKING:
    from torch import Tensor

FINISH_DELAY = 0.3  # seconds without a live step after which a timer finishes the body's solve

class TargetError(VPoserError):
    """The targets of a body cannot be solved as they are; the message names the object and says why."""


def _is_body(_target: VPoserTarget, obj: bpy.types.Object) -> bool:
    return obj.type == "ARMATURE" and obj.vposer_body.is_body


def _joint_search(self: VPoserTarget, _context: bpy.types.Context, _text: str) -> list[str]:
    return self.body.vposer_body.joint_names() if self.body else []


class VPoserTarget(bpy.types.PropertyGroup):
    """Set on an object (usually an empty) that drives a joint of a body."""

    body: bpy.props.PointerProperty(
        name="Body", type=bpy.types.Object, poll=_is_body, description="The VPoser body this object drives"
    )
    joint: bpy.props.StringProperty(
        name="Joint", description="The body joint this object pulls on", search=_joint_search, search_options=set()
    )
    weight: bpy.props.FloatProperty(
        name="Weight",
        description="How strongly this target pulls, relative to the others (0 ignores it)",
        default=1.0,
        min=0.0,
        soft_max=10.0,
    )
    joint_offset: bpy.props.FloatVectorProperty(
        name="Joint Offset",
        description="Where this target sits from its joint (body metres, the body's axes at rest, carried by the "
                    "joint's parent bone): Add Targets on a bound character sets it so the target sits on the "
                    "character's bone and an untouched target pulls nothing",
        size=3,
        default=(0.0, 0.0, 0.0),
    )


def driven_body(context: bpy.types.Context) -> bpy.types.Object | None:
    """The body of the active object, or the body the active target drives."""
    rig = active_body(context)
    obj = context.active_object
    if rig is None and obj is not None and obj.vposer_target.body:
        rig = obj.vposer_target.body
    return rig


def mapped_targets(scene: bpy.types.Scene, rig: bpy.types.Object) -> list[bpy.types.Object]:
    """The scene's objects that drive one of the rig's joints (a body and a joint set)."""
    return [obj for obj in scene.objects if obj.vposer_target.body == rig and obj.vposer_target.joint]


def pinned_joints(rig: bpy.types.Object) -> list[str]:
    """The body's joints whose pose bones are pinned, in model order."""
    pose_bones = rig.pose.bones
    return [name for name in rig.vposer_body.joint_names() if pose_bones[name].vposer_pinned]


def solve(
    context: bpy.types.Context,
    rig: bpy.types.Object,
    targets: list[bpy.types.Object],
    live: bool = False,
) -> np.ndarray:
    """Pose the rig's body joints so its joints reach the targets, and write the pose bones.

    Returns the distances (metres, in the scene) from each target to its joint, NaN for targets of
    weight 0. live: a Live Posing step (core.ik.live_lm_options(), no retries: the step
    after goes on from it, and a full solve finishes once the targets stop). Raises TargetError for bad
    mappings and core's IKError / BodyModelError / VPoserLoadError when the solve cannot run; the
    pose is only written once the solve succeeded.
    """
    import torch

    from ..core.ik import IKState
    from ..core.keypoints import NUM_BODY_JOINTS
    from ..core.rotations import matrix_to_quaternion, quaternion_to_matrix
    from .prior import load_prior

    body = rig.vposer_body
    joints = _target_joints(rig, targets)
    weights = np.array([obj.vposer_target.weight for obj in targets])
    if not (weights > 0).any():
        raise TargetError(f"every target of {rig.name} has weight 0: give at least one a weight")
    model = body.body_model(resolve_device(context))
    prior = load_prior(context, like=model)
    names = body.joint_names()

    world = np.array([obj.matrix_world.translation for obj in targets])
    _check_finite(targets, world)
    to_model = np.array(rig.matrix_world.inverted())
    positions = world @ to_model[:3, :3].T + to_model[:3, 3]
    quaternions, transl = bridge.get_pose(rig, names)
    start = IKState(
        quaternion_to_matrix(torch.as_tensor(quaternions, dtype=model.dtype))[None],
        torch.as_tensor(transl, dtype=model.dtype)[None],
        latent=_remembered_latent(rig, quaternions[:NUM_BODY_JOINTS], transl),
    )
    keypoints = {obj.vposer_target.joint: {"joint": obj.vposer_target.joint} for obj in targets}
    for obj in targets:  # a target placed on a character's bone pulls that point (Add Targets sets it)
        if any(obj.vposer_target.joint_offset):
            keypoints[obj.vposer_target.joint]["local"] = list(obj.vposer_target.joint_offset)
    solver = _solver(model, prior, keypoints, f"{rig.name}'s targets", live)
    result = solver.solve(
        torch.as_tensor(positions, dtype=model.dtype),
        torch.as_tensor(weights, dtype=model.dtype),
        init=start,
        betas=torch.as_tensor(body.betas_array(), dtype=model.dtype),
        pins=pinned_joints(rig),
    )

    solved = matrix_to_quaternion(result.rotations[0, :NUM_BODY_JOINTS]).double().cpu().numpy()
    # Keep each quaternion on the side of the one it replaces, so keys interpolate the short way.
    solved = bridge.continuous_quaternions(np.stack([quaternions[:NUM_BODY_JOINTS], solved]))[1]
    bridge.set_pose(rig, names[:NUM_BODY_JOINTS], solved, result.transl[0].double().cpu().numpy())
    _remember(rig, result.latent, names[:NUM_BODY_JOINTS])

    matrix = np.array(rig.matrix_world)
    reached = result.points[0].double().cpu().numpy() @ matrix[:3, :3].T + matrix[:3, 3]
    return np.where(weights > 0, np.linalg.norm(reached - world, axis=1), np.nan)


# (targets' keypoints, their source, live) -> the IKSolver last made for them: Live Posing solves the
# same targets on every update, and building the keypoint set and the solver cost ~0.6 ms of it.
_solvers: dict[tuple[str, str, bool], Any] = {}


def _solver(model, prior, keypoints: dict[str, dict], source: str, live: bool):
    """The IK solver for these keypoints (core.keypoints.KeypointSet.from_dict's layout) on this
    model and prior; live: core.ik.live_lm_options() and no retries. Made again when the
    model or the prior is another object (reloaded, moved to another device)."""
    from ..core.ik import IKSolver, live_lm_options
    from ..core.keypoints import KeypointSet

    key = (json.dumps(keypoints, sort_keys=True), source, live)
    solver = _solvers.get(key)
    if solver is None or solver.model is not model or solver.prior is not prior:
        options = {"lm_options": live_lm_options(), "retry": None} if live else {}
        solver = IKSolver(model, KeypointSet.from_dict(model, keypoints, source=source), prior, **options)
        if len(_solvers) >= 16:
            _solvers.clear()
        _solvers[key] = solver
    return solver


def _target_joints(rig: bpy.types.Object, targets: list[bpy.types.Object]) -> list[str]:
    """The joint each target drives; refuses unknown joints and two targets on one joint."""
    if not targets:
        raise TargetError(f"{rig.name} has no targets: add some with Add Targets, or map an empty to a joint")
    known = set(rig.vposer_body.joint_names())
    owner: dict[str, str] = {}
    for obj in targets:
        joint = obj.vposer_target.joint
        if joint not in known:
            raise TargetError(f"target '{obj.name}' names joint '{joint}', which {rig.name} does not have")
        if joint in owner:
            raise TargetError(f"targets '{owner[joint]}' and '{obj.name}' both drive {joint} of {rig.name}: "
                              f"unmap one of them")
        owner[joint] = obj.name
    return list(owner)


def _check_finite(targets: list[bpy.types.Object], world: np.ndarray) -> None:
    """Refuse a target at an infinite or NaN location, naming the object (core would take a NaN
    one as missing). Blender clamps a location typed as inf to the largest float (3.4e38), which
    counts as infinite here: no body reaches it."""
    infinite = ~(np.abs(world) < np.finfo(np.float32).max)  # NaN too
    bad = np.flatnonzero(infinite.any(axis=1))
    if len(bad):
        obj = targets[bad[0]]
        shown = np.where(infinite[bad[0]], np.copysign(np.inf, world[bad[0]]), world[bad[0]])
        location = ", ".join(f"{value:g}" for value in np.where(np.isnan(world[bad[0]]), np.nan, shown))
        raise TargetError(f"target '{obj.name}' is at ({location}), not a finite location: move it back "
                          f"into the scene{f' ({len(bad)} targets in all)' if len(bad) > 1 else ''}")


# rig session id -> (latent of its last solve, the body pose written then as one flat float32 array
# followed by the pinned joints' flags: a latent decodes the pinned joints differently from the pose)
_latents: dict[int, tuple[Tensor, np.ndarray]] = {}


def _pose_key(rig: bpy.types.Object, body_quaternions: np.ndarray, transl: np.ndarray) -> np.ndarray:
    pinned = [rig.pose.bones[name].vposer_pinned for name in rig.vposer_body.joint_names()]
    return np.concatenate([body_quaternions.ravel(), transl, pinned]).astype(np.float32)


def _remember(rig: bpy.types.Object, latent: Tensor | None, body_names: list[str]) -> None:
    """Keep the solve's latent together with the body pose as Blender stored it, for the check."""
    if latent is None:
        return
    quaternions, transl = bridge.get_pose(rig, body_names)
    _latents[rig.session_uid] = (latent.detach().cpu().clone(), _pose_key(rig, quaternions, transl))


def _remembered_latent(rig: bpy.types.Object, body_quaternions: np.ndarray, transl: np.ndarray) -> Tensor | None:
    """The last solve's latent if the rig still shows the pose it wrote, else None (encode afresh)."""
    entry = _latents.get(rig.session_uid)
    if entry is None or not np.allclose(entry[1], _pose_key(rig, body_quaternions, transl), rtol=0.0, atol=1e-6):
        return None
    return entry[0]


# ------------------------------------------------------------------------------------- Live Posing
_busy = False  # re-entry guard: writing the pose triggers another depsgraph update
_restoring = False  # set by undo and redo: the update that follows restores the scene, it is no drag


# rig session id -> where its targets stood (and the rig) at its last live step, until a full solve
# finishes it; and when the last live step ran, for the timer
_unfinished: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}
_last_step = 0.0


@persistent
def _on_undo_redo(*_args: object) -> None:
    """undo_post / redo_post: the restored targets report a transform update, which must not re-solve
    the body (it would overwrite the pose the undo just brought back), nor may a pending finish."""
    global _restoring
    _restoring = True
    _unfinished.clear()


def _targets_key(rig: bpy.types.Object, targets: list[bpy.types.Object]) -> tuple[tuple[str, ...], np.ndarray]:
    """What a solve reads from the scene: the targets' joints, and their weights and world positions
    with the rig's world matrix as one array."""
    numbers = np.concatenate([[obj.vposer_target.weight for obj in targets],
                              np.ravel([obj.matrix_world.translation for obj in targets]), np.ravel(rig.matrix_world)])
    return tuple(obj.vposer_target.joint for obj in targets), numbers


def _unchanged(key: tuple[tuple[str, ...], np.ndarray] | None, other: tuple[tuple[str, ...], np.ndarray]) -> bool:
    return key is not None and key[0] == other[0] and np.array_equal(key[1], other[1])


def _moved_bodies(depsgraph: bpy.types.Depsgraph) -> list[bpy.types.Object]:
    """Bodies with a target among the objects whose transform this update changed."""
    bodies: dict[int, bpy.types.Object] = {}
    for update in depsgraph.updates:
        if not (update.is_updated_transform and isinstance(update.id, bpy.types.Object)):
            continue
        target = update.id.original.vposer_target
        if target.body and target.joint and target.body.mode != "EDIT":
            bodies[target.body.session_uid] = target.body
    return list(bodies.values())


@persistent
def live_update(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    """depsgraph_update_post: a live step for each body whose target moved, or the full solve that
    finishes it when its targets are where its last live step saw them. Never raises: a failure is
    printed once and turns Live Posing off, since a handler has no operator to report through."""
    global _restoring
    restoring, _restoring = _restoring, False
    if restoring or _busy or not scene.vposer_live:
        return
    bodies = _moved_bodies(depsgraph)

    def steps() -> None:
        for rig in bodies:
            _live_step(scene, rig)

    if bodies:
        _guarded(scene, steps)


def _live_step(scene: bpy.types.Scene, rig: bpy.types.Object) -> None:
    global _last_step
    targets = mapped_targets(scene, rig)
    key = _targets_key(rig, targets)
    if _unchanged(_unfinished.pop(rig.session_uid, None), key):  # the targets stopped: finish
        _solve_and_follow(rig, targets)
        return
    _solve_and_follow(rig, targets, live=True)
    _unfinished[rig.session_uid] = key
    _last_step = time.monotonic()
    if not bpy.app.timers.is_registered(_finish_timer):
        bpy.app.timers.register(_finish_timer, first_interval=FINISH_DELAY)


def _solve_and_follow(rig: bpy.types.Object, targets: list[bpy.types.Object], live: bool = False) -> None:
    """A live step (or the solve that finishes it); a character bound to the body follows."""
    from .character import follow_pose

    with _one_torch_thread():
        solve(bpy.context, rig, targets, live=live)
        follow_pose(bpy.context, rig)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside: a live step is one frame of small tensors, whose
    operations gain nothing from a second thread but wait for it at every parallel section. While
    other processes keep the cores busy, that wait made a bound Rigify rig's update several times
    slower (~300 ms against ~70 ms at load 5 on a 2-core machine); the solved pose is the same. The
    caller's thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _guarded(scene: bpy.types.Scene, work: Callable[[], object]) -> None:
    """Run `work` with the re-entry guard up (writing a pose causes another depsgraph update); a
    failure turns the scene's Live Posing off and is printed."""
    global _busy
    _busy = True
    try:
        work()
    except Exception as error:  # noqa: BLE001 - anything escaping a handler would repeat on every update
        scene.vposer_live = False
        _unfinished.clear()
        print(f"VPoser: Live Posing turned off in scene '{scene.name}': {error}")
    finally:
        _busy = False


def finish_live_solves() -> int:
    """Run the full solve for every body whose last live step is not yet finished and whose targets
    have not moved since (in a scene with Live Posing on); the number of bodies solved. The timer
    calls it once the targets stop; it is safe to call at any time."""
    solved = 0
    for uid, key in list(_unfinished.items()):
        rig = next((obj for obj in bpy.data.objects if obj.session_uid == uid), None)
        scene = next((scene for scene in rig.users_scene if scene.vposer_live), None) if rig else None
        if scene is None:
            del _unfinished[uid]
            continue
        targets = mapped_targets(scene, rig)
        if not _unchanged(key, _targets_key(rig, targets)):
            continue  # moved again: the next live step takes it on
        del _unfinished[uid]
        _guarded(scene, lambda rig=rig, targets=targets: _solve_and_follow(rig, targets))
        solved += 1
    return solved


def _finish_timer() -> float | None:
    """bpy.app.timers callback: wait until no live step ran for FINISH_DELAY, then finish."""
    wait = FINISH_DELAY - (time.monotonic() - _last_step)
    if wait > 0.01:
        return wait
    finish_live_solves()
    return None


_HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, live_update),
    (bpy.app.handlers.undo_post, _on_undo_redo),
    (bpy.app.handlers.redo_post, _on_undo_redo),
)


def attach() -> None:
    bpy.types.Object.vposer_target = bpy.props.PointerProperty(type=VPoserTarget)
    bpy.types.PoseBone.vposer_pinned = bpy.props.BoolProperty(
        name="Pinned", description="Solving keeps this joint's rotation", default=False
    )
    bpy.types.Scene.vposer_live = bpy.props.BoolProperty(
        name="Live Posing", description="Re-solve a body while its targets are moved", default=False
    )
    for handlers, handler in _HANDLERS:
        handlers.append(handler)


def detach() -> None:
    for handlers, handler in _HANDLERS:
        while handler in handlers:
            handlers.remove(handler)
    if bpy.app.timers.is_registered(_finish_timer):
        bpy.app.timers.unregister(_finish_timer)
    _latents.clear()
    _unfinished.clear()
    _solvers.clear()
    del bpy.types.Scene.vposer_live
    del bpy.types.PoseBone.vposer_pinned
    del bpy.types.Object.vposer_target


CLASSES: tuple[type, ...] = (VPoserTarget,)
