"""C3D markers as animated empties, in real Blender: keys, gaps, axes, undo, bad files."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from curves_testing import action_curves as _curves
from curves_testing import key_co as _keys

c3d = pytest.importorskip("c3d")

LABELS = ["LFHD", "RFHD", "C7", "RBAK"]
FRAMES = 8
RATE = 60.0
FIRST = 10
START = 5


@pytest.fixture
def lab_points():
    """(T, M, 3) millimetres in a Z-up lab; RFHD unseen on frames 2-4 (negative residual), C7 on
    frame 0 (written as zeros, as some exporters do), RBAK never."""
    generator = np.random.default_rng(11)
    points = generator.uniform(-1500, 1500, size=(FRAMES, len(LABELS), 3)).round(1)
    points[:, :, 2] = np.abs(points[:, :, 2]) + 100
    invalid = np.zeros((FRAMES, len(LABELS)), bool)
    invalid[2:5, 1] = True
    invalid[:, 3] = True
    points[0, 2] = 0.0
    return points, invalid


@pytest.fixture
def c3d_file(tmp_path, lab_points):
    points, invalid = lab_points
    writer = c3d.Writer(point_rate=RATE, point_units="mm")
    writer.set_point_labels(LABELS)
    writer.set_start_frame(FIRST)
    for frame, invalid_row in zip(points, invalid):
        samples = np.zeros((len(LABELS), 5), np.float32)
        samples[:, :3] = frame
        samples[:, 3] = np.where(invalid_row, -1.0, 0.5)
        writer.add_frames([(samples, np.zeros((0, 0)))])
    path = tmp_path / "trial_01.c3d"
    with open(path, "wb") as handle, pytest.warns(UserWarning):  # no analog channels
        writer.write(handle)
    return path


@pytest.fixture
def seen(lab_points):
    points, invalid = lab_points
    return ~invalid & ~(points == 0).all(axis=-1)


def test_import_creates_keyed_empties_in_a_new_collection(addon, empty_scene, c3d_file, lab_points, seen):
    points, _ = lab_points
    empty_scene.frame_current = START

    assert bpy.ops.vposer.import_c3d(filepath=str(c3d_file)) == {"FINISHED"}

    collection = bpy.data.collections["trial_01"]
    assert collection.name in empty_scene.collection.children
    assert [obj.name for obj in collection.objects] == LABELS
    assert empty_scene.render.fps / empty_scene.render.fps_base == pytest.approx(RATE)
    for marker, label in enumerate(LABELS):
        empty = bpy.data.objects[label]
        assert empty.type == "EMPTY" and empty.empty_display_type == "SPHERE" and empty["vposer_marker"] == label
        curves = _curves(empty)
        if label == "RBAK":  # never seen: no location keys, visibility 0 throughout
            assert set(curves) == {('["vposer_visible"]', 0)} and tuple(empty.location) == (0, 0, 0)
            assert _keys(curves['["vposer_visible"]', 0]).tolist() == [[START, 0.0]]
            continue
        assert set(curves) == {("location", 0), ("location", 1), ("location", 2), ('["vposer_visible"]', 0)}
        expected_frames = START + np.flatnonzero(seen[:, marker])
        for axis in range(3):
            keys = _keys(curves["location", axis])
            np.testing.assert_array_equal(keys[:, 0], expected_frames)  # keys only where seen
            np.testing.assert_allclose(keys[:, 1], points[seen[:, marker], marker, axis] / 1000, atol=1e-6)
    for frame in range(FRAMES):  # Z-up lab = Blender world, in metres
        empty_scene.frame_set(START + frame)
        for marker, label in enumerate(LABELS):
            if seen[frame, marker]:
                world = np.array(bpy.data.objects[label].matrix_world.translation)
                np.testing.assert_allclose(world, points[frame, marker] / 1000, atol=1e-6)


def test_gaps_hold_the_last_seen_position_and_are_flagged(addon, empty_scene, c3d_file, lab_points, seen):
    points, _ = lab_points
    empty_scene.frame_current = START
    bpy.ops.vposer.import_c3d(filepath=str(c3d_file))
    for marker, label in enumerate(LABELS[:3]):
        empty = bpy.data.objects[label]
        visible = _curves(empty)['["vposer_visible"]', 0]
        last_seen = None
        for frame in range(FRAMES):
            empty_scene.frame_set(START + frame)
            assert visible.evaluate(START + frame) == float(seen[frame, marker]), (label, frame)
            assert empty["vposer_visible"] == int(seen[frame, marker]), (label, frame)
            if seen[frame, marker]:
                last_seen = points[frame, marker] / 1000
            expected = last_seen if last_seen is not None else points[np.argmax(seen[:, marker]), marker] / 1000
            np.testing.assert_allclose(np.array(empty.matrix_world.translation), expected, atol=1e-6)
    gap = _keys(_curves(bpy.data.objects["RFHD"])["location", 0])[:, 0]
    assert list(gap) == [START, START + 1, START + 5, START + 6, START + 7]
    assert len(_keys(_curves(bpy.data.objects["RFHD"])['["vposer_visible"]', 0])) == 3  # 1, 0, 1: a key per change


def test_y_up_file_is_stood_up_and_file_start_frame_kept(addon, empty_scene, c3d_file, lab_points):
    points, _ = lab_points
    empty_scene.render.fps = 24
    bpy.ops.vposer.import_c3d(filepath=str(c3d_file), up_axis="Y", use_file_start=True, set_scene_fps=False)
    assert empty_scene.render.fps == 24
    empty = bpy.data.objects["LFHD"]
    assert _keys(_curves(empty)["location", 0])[0, 0] == FIRST
    empty_scene.frame_set(FIRST + 3)
    x, y, z = points[3, 0] / 1000
    np.testing.assert_allclose(np.array(empty.matrix_world.translation), [x, -z, y], atol=1e-6)  # lab Y -> world Z


def test_existing_objects_are_left_alone(addon, empty_scene, c3d_file):
    mine = bpy.data.objects.new("LFHD", None)
    empty_scene.collection.objects.link(mine)
    mine.location = (1.0, 2.0, 3.0)
    mine.keyframe_insert("location", frame=1)
    my_action = mine.animation_data.action

    bpy.ops.vposer.import_c3d(filepath=str(c3d_file))

    assert mine.name == "LFHD" and mine.animation_data.action == my_action
    assert tuple(mine.location) == (1.0, 2.0, 3.0)
    imported = [obj for obj in bpy.data.collections["trial_01"].objects if obj["vposer_marker"] == "LFHD"]
    assert len(imported) == 1 and imported[0] != mine  # Blender named it LFHD.001


def test_undo_removes_the_import(addon, empty_scene, c3d_file):
    bpy.ops.ed.undo_push(message="empty")
    assert bpy.ops.vposer.import_c3d("EXEC_DEFAULT", True, filepath=str(c3d_file)) == {"FINISHED"}
    assert len(bpy.data.objects) == len(bpy.data.actions) == len(LABELS)
    bpy.ops.ed.undo()
    assert len(bpy.data.objects) == 0 and len(bpy.data.collections) == 0
    assert sum(action.users for action in bpy.data.actions) == 0


@pytest.mark.parametrize("content", [b"", b"this is not a c3d file\n" * 50], ids=["empty", "text"])
def test_bad_file_reports_the_file_and_creates_nothing(addon, empty_scene, tmp_path, content):
    path = tmp_path / "broken_take.c3d"
    path.write_bytes(content)
    fps = empty_scene.render.fps
    with pytest.raises(RuntimeError, match=r"broken_take\.c3d: not a C3D file"):  # bpy.ops raises on an ERROR report
        bpy.ops.vposer.import_c3d(filepath=str(path))
    assert len(bpy.data.objects) == 0 and len(bpy.data.collections) == 0 and len(bpy.data.actions) == 0
    assert empty_scene.render.fps == fps


def test_scene_range_is_extended_to_the_clip_never_shortened(addon, empty_scene, c3d_file):
    empty_scene.frame_start, empty_scene.frame_end = 1, 3
    bpy.ops.vposer.import_c3d(filepath=str(c3d_file), use_file_start=True)
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, FIRST + FRAMES - 1)

    empty_scene.frame_start, empty_scene.frame_end = 1, 500
    bpy.ops.vposer.import_c3d(filepath=str(c3d_file), use_file_start=True)
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, 500)

    empty_scene.frame_start, empty_scene.frame_end = 40, 50
    bpy.ops.vposer.import_c3d(filepath=str(c3d_file), use_file_start=True, update_scene_duration=False)
    assert (empty_scene.frame_start, empty_scene.frame_end) == (40, 50)


def test_cmu_like_analog_header_imports_the_points_with_a_warning(addon, empty_scene, tmp_path, lab_points):
    from tests.core.c3d_testing import write_cmu_like

    points, _ = lab_points
    path = write_cmu_like(tmp_path / "01_01.c3d", LABELS, points, channels=3)
    empty_scene.frame_current = 1

    assert bpy.ops.vposer.import_c3d(filepath=str(path)) == {"FINISHED"}

    empty_scene.frame_set(1 + 4)
    np.testing.assert_allclose(np.array(bpy.data.objects["C7"].matrix_world.translation), points[4, 2] / 1000,
                               atol=1e-6)
    assert empty_scene.frame_end >= FRAMES
