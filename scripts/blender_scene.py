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
STRIP_HEIGHT = 360  # pixels
VIEWS = {"front": (np.pi / 2, 0.0, 0.0), "side": (np.pi / 2, 0.0, np.pi / 2)}  # camera Euler angles (XYZ)


def start_blender():
    """bpy with temporary user folders, and this checkout registered as the extension."""
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="vposer-blender-user-")
    try:
        import bpy
        import matplotlib  # noqa: F401 - the preview images
    except ImportError as error:
        raise SystemExit(f"error: a Blender scene needs {error.name}: pip install -e '.[scene]' "
                         "(Blender as a module: bpy 5.0.1 on Python 3.11 or 5.2.3 on Python 3.13; and matplotlib)") from None
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

    bridge = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.bridge")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    sequence = load_pose_file(poses)
    bridge.set_scene_frame_rate(scene, sequence.framerate)  # before the import, which scales the clip to it
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
    bpy.ops.vposer.import_poses("EXEC_DEFAULT", filepath=str(poses), set_scene_fps=False, use_betas=True)
    scene.frame_end = max(scene.frame_end, sequence.num_frames)
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    frames = np.unique(np.linspace(1, sequence.num_frames, PREVIEW_FRAMES).round().astype(int))
    render, fit = blend.with_suffix(".png"), blend.with_name(blend.stem + "_fit.png")
    render_strip(bpy, scene, rig, frames, render)
    _plot_preview(bpy, scene, rig, source, frames, fit)
    return {"blend": str(blend), "preview": str(render), "fit_plot": str(fit)}


def render_strip(bpy, scene, rig, frames, path: Path, height: int = STRIP_HEIGHT) -> Path:
    """Workbench renders of the body at `frames`, from the front, side by side in one PNG."""
    shots = [(int(frame), "front") for frame in frames]
    return save_strip(render_shots(bpy, scene, [rig.vposer_body.mesh], shots, height), path)


def render_shots(bpy, scene, objects, shots: list[tuple[int, str]], height: int) -> list[np.ndarray]:
    """Workbench renders, one per (frame, view) shot (VIEWS), from an orthographic camera that frames
    every evaluated vertex of `objects` at that frame."""
    import matplotlib.image
    from mathutils import Euler

    camera = bpy.data.objects.new("Preview Camera", bpy.data.cameras.new("Preview Camera"))
    scene.collection.objects.link(camera)
    camera.data.type = "ORTHO"
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = height * 2 // 3, height
    scene.render.film_transparent = False
    tiles = []
    with tempfile.TemporaryDirectory() as folder:
        for frame, view in shots:
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            points = np.concatenate([world_vertices(obj, depsgraph) for obj in objects])
            axes = np.array(Euler(VIEWS[view]).to_matrix())  # columns: screen right, screen up, backwards
            right, up, depth = (points @ axes).T
            camera.rotation_euler = VIEWS[view]
            camera.location = (axes[:, 0] * (right.min() + right.max()) / 2 + axes[:, 1] * (up.min() + up.max()) / 2
                               + axes[:, 2] * (depth.max() + 5.0))
            camera.data.ortho_scale = 1.15 * max(np.ptp(up), 1.5 * np.ptp(right))
            scene.render.filepath = str(Path(folder) / f"{len(tiles):03d}.png")
            bpy.ops.render.render(write_still=True)
            tiles.append(matplotlib.image.imread(scene.render.filepath))
    bpy.data.objects.remove(camera)
    return tiles


def save_strip(tiles: list[np.ndarray], path: Path) -> Path:
    import matplotlib.image

    matplotlib.image.imsave(path, np.concatenate(tiles, axis=1))
    return path


def world_vertices(obj, depsgraph) -> np.ndarray:
    """(V, 3) world positions of a mesh object's evaluated (deformed) vertices."""
    bridge = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.bridge")
    matrix = np.array(obj.matrix_world)
    return bridge.evaluated_vertices(obj, depsgraph) @ matrix[:3, :3].T + matrix[:3, 3]


def _plot_preview(bpy, scene, rig, source, frames, path: Path) -> None:
    """Blender's own evaluated body mesh (grey) and the source's joints or markers (red) at a few
    frames, seen from the front (world X right, Z up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 4.2), sharey=True)
    mesh_object = rig.vposer_body.mesh
    for axis, frame in zip(np.atleast_1d(axes), frames):
        scene.frame_set(int(frame))
        depsgraph = bpy.context.evaluated_depsgraph_get()
        vertices = world_vertices(mesh_object, depsgraph)[::5]
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


def save_fit_scene(poses: Path, blend: Path, cameras, picture: Path | None, frames: int) -> str:
    """The Blender half of scripts/fit_2d.py --blend: the body (Add Body) keyed with the fitted
    `poses` (Import Poses), one camera per view of `cameras` (core.cameras.Cameras (C,), set through
    the extension's Blender camera conversion; the first is the scene's camera) and, behind the
    first, `picture` as its background: an image, a video as a movie clip, or a folder's images as an
    image sequence. Returns the .blend's path."""
    with blender_output_to_stderr():
        return _save_fit_scene(poses, blend, cameras, picture, frames)


def _save_fit_scene(poses: Path, blend: Path, cameras, picture: Path | None, frames: int) -> str:
    bpy = start_blender()
    from core.pose_files import load_pose_file

    bridge = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.bridge")
    blender_cameras = importlib.import_module(f"{EXTENSION_ID}.vposer_addon.cameras")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bridge.set_scene_frame_rate(scene, load_pose_file(poses).framerate)
    scene.frame_start = scene.frame_current = 1
    scene.frame_end = frames
    bpy.ops.vposer.add_body("EXEC_DEFAULT", source="ADULT")
    rig = bpy.context.view_layer.objects.active
    bpy.ops.vposer.import_poses("EXEC_DEFAULT", filepath=str(poses), set_scene_fps=False, use_betas=True)
    views = []
    for index in range(cameras.batch_shape[0]):
        name = cameras.names[index] if index < len(cameras.names) and cameras.names[index] else f"Camera{index + 1}"
        views.append(blender_cameras.create_blender_camera(scene.collection, scene, cameras[index], name, body=rig))
    scene.camera = views[0]
    if picture is not None and picture.exists():
        _background(bpy, views[0].data, picture, frames)
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    return str(blend)


def _background(bpy, camera, picture: Path, frames: int) -> None:
    """`picture` behind the camera's view: an image, a video (movie clip) or a folder's first image
    as the start of an image sequence of `frames` frames."""
    from core.detect2d import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    camera.show_background_images = True
    background = camera.background_images.new()
    if picture.suffix.lower() in VIDEO_SUFFIXES:
        background.source = "MOVIE_CLIP"
        background.clip = bpy.data.movieclips.load(str(picture.resolve()))
        return
    sequence = picture.is_dir()
    if sequence:
        picture = sorted(p for p in picture.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[0]
    background.image = bpy.data.images.load(str(picture.resolve()))
    if sequence and frames > 1:
        background.image.source = "SEQUENCE"
        background.image_user.frame_duration = frames
        background.image_user.frame_start = 1
