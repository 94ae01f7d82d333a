"""The headless Blender half of scripts/retarget.py: a .blend with the source clip and the keyed body.

Blender runs as the `bpy` module with its user folders in a temporary directory (the user's own
Blender configuration is never read or written), the extension registered from this checkout, and
the scene built with the extension's own operators: Blender's BVH importer (or the extension's C3D
importer) for the source, Add Body, and Import Poses with the retargeted poses and fitted shape.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXTENSION_ID = "vposer"
PREVIEW_FRAMES = 6


def start_blender():
    """bpy with temporary user folders, and this checkout registered as the extension."""
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="vposer-blender-user-")
    try:
        import bpy
    except ImportError:
        raise SystemExit("error: --blend needs Blender as a Python module: pip install bpy==5.0.1 (Python 3.11)") from None
    parent = Path(tempfile.mkdtemp(prefix="vposer-package-"))
    (parent / EXTENSION_ID).symlink_to(REPO, target_is_directory=True)  # the package name Blender would give it
    sys.path.insert(0, str(parent))
    extension = importlib.import_module(EXTENSION_ID)
    extension.register()
    bpy.context.preferences.addons.new().module = EXTENSION_ID
    return bpy


@contextmanager
def blender_output_to_stderr() -> Iterator[None]:
    """Blender prints progress on the process's standard output; keep that free for the JSON report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def save_scene(clip: Path, poses: Path, blend: Path, body: Path | None = None, skeleton: str = "cmu") -> dict:
    """Build and save the scene; returns the paths written."""
    with blender_output_to_stderr():
        return _save_scene(clip, poses, blend, body, skeleton)


def _save_scene(clip: Path, poses: Path, blend: Path, body: Path | None, skeleton: str) -> dict:
    bpy = start_blender()
    from core.mocap.skeletons import load_preset
    from core.pose_files import load_pose_file

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    sequence = load_pose_file(poses)
    scene.render.fps = round(sequence.framerate)
    scene.frame_start = scene.frame_current = 1
    if clip.suffix.lower() == ".bvh":
        scale = load_preset(skeleton).unit_scale or 1.0
        bpy.ops.import_anim.bvh(filepath=str(clip), global_scale=scale, rotate_mode="QUATERNION", frame_start=1,
                                use_fps_scale=True, update_scene_duration=True)
    else:
        bpy.ops.vposer.import_c3d(filepath=str(clip))
    source = bpy.context.view_layer.objects.active
    if body is not None:
        bpy.context.preferences.addons[EXTENSION_ID].preferences.model_path = str(body.resolve())
    bpy.ops.object.select_all(action="DESELECT")
    bpy.ops.vposer.add_body("EXEC_DEFAULT", source="USER_FILE" if body else "ADULT")
    rig = bpy.context.view_layer.objects.active
    bpy.ops.vposer.import_poses("EXEC_DEFAULT", filepath=str(poses), set_scene_fps=True, use_betas=True)
    scene.frame_end = max(scene.frame_end, sequence.num_frames)
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    frames = np.unique(np.linspace(1, sequence.num_frames, PREVIEW_FRAMES).round().astype(int))
    render, fit = blend.with_suffix(".png"), blend.with_name(blend.stem + "_fit.png")
    render_strip(bpy, scene, rig, frames, render)
    _plot_preview(bpy, scene, rig, source, frames, fit)
    return {"blend": str(blend), "preview": str(render), "fit_plot": str(fit)}


def render_strip(bpy, scene, rig, frames, path: Path, height: int = 360) -> None:
    """Workbench renders of the body at `frames`, side by side in one PNG: an orthographic camera
    in front of the body (world -Y), re-centred on it at every frame."""
    import matplotlib.image

    bridge = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.bridge")
    camera = bpy.data.objects.new("Preview Camera", bpy.data.cameras.new("Preview Camera"))
    scene.collection.objects.link(camera)
    camera.data.type = "ORTHO"
    camera.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looking along +Y, Z up
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = height * 2 // 3, height
    scene.render.film_transparent = False
    mesh_object = rig.vposer_body.mesh
    tiles = []
    with tempfile.TemporaryDirectory() as folder:
        for frame in frames:
            scene.frame_set(int(frame))
            world = np.array(mesh_object.matrix_world)
            points = bridge.evaluated_vertices(mesh_object, bpy.context.evaluated_depsgraph_get()) @ world[:3, :3].T
            points = points + world[:3, 3]
            low, high = points.min(0), points.max(0)
            camera.location = ((low[0] + high[0]) / 2, low[1] - 5.0, (low[2] + high[2]) / 2)
            camera.data.ortho_scale = 1.15 * max(high[2] - low[2], 1.5 * (high[0] - low[0]))
            scene.render.filepath = str(Path(folder) / f"{frame:05d}.png")
            bpy.ops.render.render(write_still=True)
            tiles.append(matplotlib.image.imread(scene.render.filepath))
    bpy.data.objects.remove(camera)
    matplotlib.image.imsave(path, np.concatenate(tiles, axis=1))


def _plot_preview(bpy, scene, rig, source, frames, path: Path) -> None:
    """Blender's own evaluated body mesh (grey) and the source's joints or markers (red) at a few
    frames, seen from the front (world X right, Z up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bridge = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.bridge")
    figure, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 4.2), sharey=True)
    mesh_object = rig.vposer_body.mesh
    for axis, frame in zip(np.atleast_1d(axes), frames):
        scene.frame_set(int(frame))
        depsgraph = bpy.context.evaluated_depsgraph_get()
        local = bridge.evaluated_vertices(mesh_object, depsgraph)[::5]
        world = np.array(mesh_object.matrix_world)
        vertices = local @ world[:3, :3].T + world[:3, 3]
        axis.scatter(vertices[:, 0], vertices[:, 2], s=0.3, c="0.6", linewidths=0)
        points = _source_points(source, depsgraph)
        axis.scatter(points[:, 0], points[:, 2], s=6, c="tab:red")
        axis.set_title(f"frame {frame}", fontsize=9)
        axis.set_aspect("equal")
        axis.axis("off")
    figure.suptitle("body (grey, Blender's evaluated mesh) and source (red)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _source_points(source, depsgraph) -> np.ndarray:
    if source is not None and source.type == "ARMATURE":
        evaluated = source.evaluated_get(depsgraph)
        return np.array([evaluated.matrix_world @ bone.head for bone in evaluated.pose.bones])
    empties = [obj for obj in depsgraph.view_layer.objects if obj.type == "EMPTY" and "vposer_marker" in obj]
    return np.array([obj.evaluated_get(depsgraph).matrix_world.translation for obj in empties]).reshape(-1, 3)
