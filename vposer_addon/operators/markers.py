"""Import C3D marker trajectories as animated empties.

Placement: Blender's world is Z-up in metres, like most mocap labs, so a Z-up file lands as it is
(world = lab frame); a Y-up file is turned +90 degrees about X, the same turn that stands a body
up (bridge.Y_UP_TO_Z_UP). Nothing else is changed: no mirroring, no re-centring.

One empty per marker (a small sphere, named after the label, the label also kept in the custom
property "vposer_marker" since Blender renames clashing names), all in a new collection named
after the file. Each empty gets its own slotted action, written whole with foreach_set.

Gaps: location is keyed only where the marker was seen, so every key is measured data. The last
key before a gap holds (CONSTANT) until the marker reappears, rather than gliding along an invented
straight line. The integer custom property "vposer_visible" is keyed (CONSTANT, a key per change)
1 where the marker was seen and 0 where not: whatever reads the empties later (a retarget or a
fit) evaluates it per frame to mask gaps out.

Scene: as Blender's BVH importer with Update Scene FPS and Update Scene Duration (the add-on's
panel turns both on for BVH), the scene's frame rate becomes the file's and its frame range is
extended to cover the clip (never shortened: other animation in the scene keeps its frames).
A file whose analog section is inconsistent (CMU's own takes) is read with a warning.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import bpy
import numpy as np
from bpy_extras.io_utils import ImportHelper

from .. import bridge
from ..reporting import reports_errors

VISIBLE = "vposer_visible"
LABEL = "vposer_marker"


class VPOSER_OT_import_c3d(bpy.types.Operator, ImportHelper):
    """Import a C3D file's markers as animated empties in a new collection (keyed only where seen)"""

    bl_idname = "vposer.import_c3d"
    bl_label = "Import C3D Markers"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".c3d"
    filter_glob: bpy.props.StringProperty(default="*.c3d", options={"HIDDEN"})
    up_axis: bpy.props.EnumProperty(
        name="Lab Up Axis",
        description="The lab frame's up axis (the file does not say reliably)",
        items=[
            ("Z", "Z Up", "Most labs (Vicon, Qualisys, Motion Analysis): placed as it is"),
            ("Y", "Y Up", "Some set-ups (e.g. OptiTrack): turned +90 degrees about X to stand up in Blender"),
        ],
        default="Z",
    )
    units: bpy.props.EnumProperty(
        name="Units",
        description="Length unit of the file's points",
        items=[
            ("FILE", "From File", "Read POINT:UNITS (mm, cm or m)"),
            ("mm", "Millimetres", ""),
            ("cm", "Centimetres", ""),
            ("m", "Metres", ""),
        ],
        default="FILE",
    )
    use_file_start: bpy.props.BoolProperty(
        name="Start at File's Frame",
        description="Put the file's first sample on its own frame number instead of the current frame",
        default=False,
    )
    set_scene_fps: bpy.props.BoolProperty(
        name="Set Scene Frame Rate",
        description="Set the scene's frame rate to the file's, so the markers move at their recorded speed",
        default=True,
    )
    update_scene_duration: bpy.props.BoolProperty(
        name="Update Scene Duration",
        description="Extend the scene's frame range to cover the clip (never shortens it), as the BVH importer does",
        default=True,
    )
    marker_size: bpy.props.FloatProperty(
        name="Marker Size", description="Radius of the sphere empties", default=0.015, min=0.001,
        soft_max=0.1, subtype="DISTANCE", unit="LENGTH",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if importlib.util.find_spec("c3d") is None:
            cls.poll_message_set("The 'c3d' package is missing from Blender's Python (pip install c3d)")
            return False
        if context.scene is None:
            cls.poll_message_set("No scene to import into")
            return False
        return True

    @reports_errors("Cannot import markers")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ...core.mocap.c3d import C3DWarning, lab_to_model_rotation, read_c3d

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", C3DWarning)  # reported below, once, as the operator's warning
            clip = read_c3d(self.filepath, units=None if self.units == "FILE" else self.units)
        to_world = np.array(bridge.Y_UP_TO_Z_UP.to_3x3()) @ lab_to_model_rotation(self.up_axis)
        positions = clip.positions @ to_world.T
        start = clip.first_frame if self.use_file_start else context.scene.frame_current
        frames = start + np.arange(clip.num_frames, dtype=np.float64)

        collection = bpy.data.collections.new(Path(self.filepath).stem)
        context.scene.collection.children.link(collection)
        window_manager = context.window_manager
        window_manager.progress_begin(0, clip.num_markers)
        try:
            for marker, label in enumerate(clip.labels):
                self._add_marker(collection, label, frames, positions[:, marker])
                window_manager.progress_update(marker + 1)
        except BaseException:
            _remove_collection(collection)  # a failed run leaves the scene as it was
            raise
        finally:
            window_manager.progress_end()
        if self.set_scene_fps:
            bridge.set_scene_frame_rate(context.scene, clip.frame_rate)
        if self.update_scene_duration:
            cover_frames(context.scene, int(frames[0]), int(frames[-1]))
        for note in clip.notes:
            self.report({"WARNING"}, f"{Path(self.filepath).name}: {note}")

        never_seen = [label for label, seen in zip(clip.labels, clip.visible.any(axis=0)) if not seen]
        unseen = f"; never seen: {', '.join(never_seen)}" if never_seen else ""
        self.report(
            {"INFO"},
            f"Imported {clip.num_markers} markers x {clip.num_frames} frames ({clip.frame_rate:g} fps) "
            f"from {Path(self.filepath).name} into collection '{collection.name}', "
            f"frames {int(frames[0])}-{int(frames[-1])}{unseen}",
        )
        return {"FINISHED"}

    def _add_marker(self, collection: bpy.types.Collection, label: str, frames: np.ndarray, points: np.ndarray) -> None:
        """A sphere empty keyed at the frames where the marker was seen, with its visibility curve."""
        empty = bpy.data.objects.new(label, None)
        empty.empty_display_type = "SPHERE"
        empty.empty_display_size = self.marker_size
        collection.objects.link(empty)
        empty[LABEL] = label
        seen = ~np.isnan(points).any(axis=1)
        empty[VISIBLE] = int(seen[0])
        _, channelbag = bridge.new_action(empty, f"{collection.name}_{label}")
        if seen.any():  # a marker never seen stays at the origin with only its visibility keyed
            keyed = frames[seen]
            gap_follows = np.append(np.diff(keyed) > 1.5, False)
            for axis in range(3):
                bridge.write_curve(channelbag, "location", axis, label, keyed, points[seen, axis], hold=gap_follows)
        changes = np.flatnonzero(np.diff(seen.astype(np.int8))) + 1
        switches = np.concatenate([[0], changes])
        bridge.write_curve(
            channelbag, f'["{VISIBLE}"]', 0, label, frames[switches], seen[switches].astype(np.float64),
            hold=np.ones(len(switches), dtype=bool),
        )


def cover_frames(scene: bpy.types.Scene, first: int, last: int) -> None:
    """Extend the scene's frame range to [first, last], never shortening it."""
    if scene.frame_start > first:
        scene.frame_start = max(0, first)
    if scene.frame_end < last:
        scene.frame_end = last


def _remove_collection(collection: bpy.types.Collection) -> None:
    """Delete a half-built import: its empties, their actions, and the collection."""
    for obj in list(collection.objects):
        action = obj.animation_data.action if obj.animation_data else None
        bpy.data.objects.remove(obj)
        if action is not None:
            bpy.data.actions.remove(action)
    bpy.data.collections.remove(collection)


CLASSES: tuple[type, ...] = (VPOSER_OT_import_c3d,)
