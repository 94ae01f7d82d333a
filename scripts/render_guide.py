"""Render the user guide's pictures with the extension's own operators, as a user would click them.

    OMP_NUM_THREADS=1 python scripts/render_guide.py [--out docs/images]

Blender runs headless as the bpy module, with the extension registered from this checkout (see
blender_scene.py). Each picture starts from an empty scene:

- guide_pose.png: Add Body, Add Targets (Effectors), the six targets moved to a natural pose, Solve
  Pose; front and side views with the targets shown as coloured spheres.
- guide_samples.png: Sample Poses (5 poses, fixed seed), one render per keyed pose.
- guide_inbetweens.png: two sampled poses and the In-betweens that fill the frames between them.
- guide_retarget.png: the shipped CMU walk imported with Blender's BVH importer and retargeted
  onto a body with Retarget; side views over one stride.
- guide_character.png: the human metarig of Blender's bundled Rigify (an A-pose rest; a mannequin of
  cylinders on its bones), bound with Bind Character, and the same walk retargeted onto it; its
  rest pose, then side views over one stride.

Renders use Workbench. Seeds are fixed, so every run gives the same pictures. Prints the files written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blender_scene import (
    REPO,
    STRIP_HEIGHT,
    blender_output_to_stderr,
    render_shots,
    render_strip,
    save_strip,
    start_blender,
)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CLIP = REPO / "examples" / "cmu_02_01_walk.bvh"
RETARGET_FPS = 30
WALK_STEP = 6  # frames between the retarget picture's tiles: six tiles cover about one stride
POSE_SEED = 9  # the prior sample whose effector positions the targets are moved to
POSE_TEMPERATURE = 0.8
SAMPLE_SEED = 0  # Sample Poses' own default
SAMPLE_COUNT, SAMPLE_SPACING = 5, 10
INBETWEEN_SEED = 11
INBETWEEN_SPACING = 5  # keys on frames 1 and 6: four in-between frames
TARGET_RADIUS = 0.035  # metres
XRAY_ALPHA = 0.6  # body opacity in the posing picture
POSE_HEIGHT = 480  # pixels
BACKGROUND = (0.8, 0.8, 0.82)  # linear RGB: a light grey that reads on light and dark pages
# Sphere colours by side: the body's left blue, its right red, the middle yellow.
TARGET_COLOURS = {"left": (0.15, 0.35, 0.95, 1.0), "right": (0.9, 0.15, 0.1, 1.0), "middle": (0.95, 0.75, 0.1, 1.0)}


def _run(bpy, operator: str, **properties) -> None:
    """Run an operator as a button would; stop if it fails (Blender prints the operator's report)."""
    group, name = operator.split(".")
    result = getattr(getattr(bpy.ops, group), name)("EXEC_DEFAULT", **properties)
    if result != {"FINISHED"}:
        raise SystemExit(f"error: {operator} returned {result}")


def _new_scene(bpy):
    """An empty scene with the Workbench look all pictures share."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = scene.frame_current = 1
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "MATERIAL"
    shading.show_cavity = True
    scene.view_settings.view_transform = "Standard"  # colours as given, not tone-mapped
    scene.world = bpy.data.worlds.new("Guide Background")
    scene.world.color = BACKGROUND
    return scene


def _add_body(bpy):
    """Add Body with the open adult body at the origin; returns the rig (the active object)."""
    _run(bpy, "vposer.add_body", source="ADULT")
    return bpy.context.view_layer.objects.active


def guide_pose(bpy, out: Path) -> Path:
    """Add Body, Add Targets (Effectors), move the targets, Solve Pose. Three tiles: the targets
    moved away from the rest pose (front), then the solved pose from the front and the side."""
    scene = _new_scene(bpy)
    shading = scene.display.shading
    shading.show_xray, shading.xray_alpha = True, XRAY_ALPHA  # the pelvis and head targets sit inside the body
    rig = _add_body(bpy)
    _run(bpy, "vposer.add_targets", preset="EFFECTORS")
    targets = [obj for obj in scene.objects if obj.vposer_target.body == rig]
    goals = _natural_effectors(rig, [obj.vposer_target.joint for obj in targets])
    for obj, goal in zip(targets, goals):
        obj.location = goal
    bpy.context.view_layer.update()  # the targets' world matrices follow their new locations
    shown = [rig.vposer_body.mesh, *(_target_sphere(bpy, scene, obj) for obj in targets)]
    tiles = render_shots(bpy, scene, shown, [(1, "front")], POSE_HEIGHT)
    bpy.context.view_layer.objects.active = rig
    _run(bpy, "vposer.solve_pose")
    tiles += render_shots(bpy, scene, shown, [(1, "front"), (1, "side")], POSE_HEIGHT)
    return save_strip(tiles, out / "guide_pose.png")


def _natural_effectors(rig, joints: list[str]) -> np.ndarray:
    """World positions of `joints` in a pose the shipped prior decodes from a seeded latent, posed
    with core's own body model and carried into the scene by the rig's world matrix."""
    import torch

    from core.body_model import BodyModel
    from core.vposer import load_default_vposer

    model = BodyModel.open_default("adult")
    with torch.no_grad():
        pose = load_default_vposer().sample(1, seed=POSE_SEED, temperature=POSE_TEMPERATURE)
        points = model(body_pose=pose, return_vertices=False).joints[0].numpy()
    chosen = points[[model.joint_names.index(joint) for joint in joints]]
    matrix = np.array(rig.matrix_world)
    return chosen @ matrix[:3, :3].T + matrix[:3, 3]


def _target_sphere(bpy, scene, target):
    """A small UV-sphere mesh at a target empty (empties do not render), coloured by body side."""
    import bmesh

    mesh = bpy.data.meshes.new(f"{target.name} Sphere")
    sphere = bmesh.new()
    bmesh.ops.create_uvsphere(sphere, u_segments=24, v_segments=12, radius=TARGET_RADIUS)
    sphere.to_mesh(mesh)
    sphere.free()
    joint = target.vposer_target.joint
    side = next((side for side in ("left", "right") if joint.startswith(side)), "middle")
    material = bpy.data.materials.new(f"Target {side}")
    material.diffuse_color = TARGET_COLOURS[side]
    mesh.materials.append(material)
    for polygon in mesh.polygons:
        polygon.use_smooth = True
    obj = bpy.data.objects.new(mesh.name, mesh)
    obj.location = target.matrix_world.translation
    scene.collection.objects.link(obj)
    return obj


def guide_samples(bpy, out: Path) -> Path:
    """Sample Poses with a fixed seed, rendered at the keyed frames."""
    scene = _new_scene(bpy)
    rig = _add_body(bpy)
    _run(bpy, "vposer.sample_poses", count=SAMPLE_COUNT, spacing=SAMPLE_SPACING, seed=SAMPLE_SEED)
    path = out / "guide_samples.png"
    render_strip(bpy, scene, rig, 1 + SAMPLE_SPACING * np.arange(SAMPLE_COUNT), path)
    return path


def guide_inbetweens(bpy, out: Path) -> Path:
    """Two keyed poses (Sample Poses, count 2) and In-betweens between them; every frame rendered."""
    scene = _new_scene(bpy)
    rig = _add_body(bpy)
    _run(bpy, "vposer.sample_poses", count=2, spacing=INBETWEEN_SPACING, seed=INBETWEEN_SEED)
    scene.frame_set(1)
    _run(bpy, "vposer.inbetweens")
    path = out / "guide_inbetweens.png"
    render_strip(bpy, scene, rig, np.arange(1, INBETWEEN_SPACING + 2), path)
    return path


def guide_retarget(bpy, out: Path) -> Path:
    """The shipped CMU walk through Blender's BVH importer, retargeted onto a body with Retarget;
    six side views."""
    scene = _new_scene(bpy)
    scene.render.fps = RETARGET_FPS
    source = _import_walk(bpy)
    bpy.ops.object.select_all(action="DESELECT")
    rig = _add_body(bpy)
    source.select_set(True)  # the other selected armature is the source; the body stays active
    _run(bpy, "vposer.retarget", source="ARMATURE", preset="CMU")
    source.hide_render = True
    frames = 1 + WALK_STEP * np.arange(6)
    tiles = render_shots(bpy, scene, [rig.vposer_body.mesh], [(frame, "side") for frame in frames], STRIP_HEIGHT)
    return save_strip(tiles, out / "guide_retarget.png")


def _import_walk(bpy):
    """The shipped CMU walk through Blender's BVH importer; returns its armature (the active object)."""
    from core.mocap.skeletons import get_preset

    _run(bpy, "import_anim.bvh", filepath=str(CLIP), global_scale=get_preset("cmu").unit_scale,
         rotate_mode="QUATERNION", frame_start=1, use_fps_scale=True, update_scene_duration=True)
    return bpy.context.view_layer.objects.active


def guide_character(bpy, out: Path) -> Path:
    """Rigify's human metarig with a mannequin on its bones, Bind Character, then Retarget of the
    shipped walk; the rest pose (front) and five side views."""
    import addon_utils

    scene = _new_scene(bpy)
    scene.render.fps = RETARGET_FPS
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    rig = bpy.context.view_layer.objects.active
    mannequin = _mannequin(bpy, scene, rig)
    tiles = render_shots(bpy, scene, mannequin, [(1, "front")], STRIP_HEIGHT)
    bpy.ops.object.select_all(action="DESELECT")
    rig.select_set(True)
    bpy.context.view_layer.objects.active = rig
    _run(bpy, "vposer.bind_character")
    rig.vposer_character.body.vposer_body.mesh.hide_render = True
    source = _import_walk(bpy)
    rig.select_set(True)
    bpy.context.view_layer.objects.active = rig
    _run(bpy, "vposer.retarget", source="ARMATURE", preset="CMU")
    source.hide_render = True
    frames = 1 + WALK_STEP * np.arange(5)
    tiles += render_shots(bpy, scene, mannequin, [(frame, "side") for frame in frames], STRIP_HEIGHT)
    return save_strip(tiles, out / "guide_character.png")


MANNEQUIN_BONES = ("spine", "thigh", "shin", "foot", "toe", "upper_arm", "forearm", "hand", "shoulder")


def _mannequin(bpy, scene, rig) -> list:
    """A cylinder on each main bone (trunk, limbs), parented to it: a character mesh to render."""
    from mathutils import Matrix

    pieces = []
    bpy.context.view_layer.update()
    for bone in rig.data.bones:
        if not bone.name.startswith(MANNEQUIN_BONES):
            continue
        bpy.ops.mesh.primitive_cylinder_add(vertices=12, radius=0.045 if "spine" in bone.name else 0.03, depth=1.0)
        piece = bpy.context.view_layer.objects.active
        piece.parent, piece.parent_type, piece.parent_bone = rig, "BONE", bone.name
        bpy.context.view_layer.update()
        along = Matrix.Translation((0.0, bone.length / 2, 0.0)) @ Matrix.Rotation(-np.pi / 2, 4, "X")
        stretch = Matrix.Diagonal((1.0, 1.0, bone.length, 1.0))
        piece.matrix_world = rig.matrix_world @ bone.matrix_local @ along @ stretch
        pieces.append(piece)
    return pieces


JOBS = (guide_pose, guide_samples, guide_inbetweens, guide_retarget, guide_character)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--only", nargs="+", choices=[job.__name__ for job in JOBS], help="render only these pictures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with blender_output_to_stderr():
        bpy = start_blender()
        for job in JOBS:
            if args.only and job.__name__ not in args.only:
                continue
            written.append(job(bpy, args.out))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
