"""C3D marker files (written here with c3d.Writer) and the Plug-in Gait layout on the open body."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from core.mocap.c3d import C3DError, C3DWarning, lab_to_model_rotation, read_c3d, to_model_space
from core.mocap.c3d import write_c3d as write_trajectories

c3d = pytest.importorskip("c3d")

from c3d_testing import write_cmu_like  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "core" / "data" / "markers_plugin_gait_open.json"
PLUG_IN_GAIT = (
    "LFHD RFHD LBHD RBHD C7 T10 CLAV STRN RBAK "
    "LSHO LUPA LELB LFRM LWRA LWRB LFIN RSHO RUPA RELB RFRM RWRA RWRB RFIN "
    "LASI RASI LPSI RPSI LTHI LKNE LTIB LANK LHEE LTOE RTHI RKNE RTIB RANK RHEE RTOE"
).split()


def write_c3d(path: Path, labels, points_mm: np.ndarray, invalid=None, rate=120.0, units="mm", first=1) -> Path:
    """points_mm (T, M, 3) in file units; invalid (T, M) marks samples with a negative residual."""
    writer = c3d.Writer(point_rate=rate, point_units=units)
    writer.set_point_labels(labels)
    writer.set_start_frame(first)
    invalid = np.zeros(points_mm.shape[:2], bool) if invalid is None else invalid
    for frame, invalid_row in zip(points_mm, invalid):
        points = np.zeros((len(labels), 5), np.float32)
        points[:, :3] = frame
        points[:, 3] = np.where(invalid_row, -1.0, 0.5)
        writer.add_frames([(points, np.zeros((0, 0)))])
    with open(path, "wb") as handle, pytest.warns(UserWarning):  # the writer warns: no analog channels
        writer.write(handle)
    return path


@pytest.fixture
def trajectories():
    generator = np.random.default_rng(3)
    return generator.uniform(-2000, 2000, size=(7, 4, 3)).round(2)


def test_read_gives_metres_labels_rate_and_first_frame(tmp_path, trajectories):
    invalid = np.zeros((7, 4), bool)
    invalid[2, 1] = invalid[5, 3] = True
    path = write_c3d(tmp_path / "walk.c3d", ["LFHD ", "RFHD", "C7", "CLAV"], trajectories, invalid, 120.0, first=25)

    clip = read_c3d(path)

    assert clip.labels == ("LFHD", "RFHD", "C7", "CLAV")
    assert clip.frame_rate == 120.0 and clip.first_frame == 25
    assert clip.positions.shape == (7, 4, 3) and clip.positions.dtype == np.float64
    assert np.isnan(clip.positions[invalid]).all()
    np.testing.assert_allclose(clip.positions[~invalid], trajectories[~invalid] / 1000, atol=1e-7)
    assert (clip.visible == ~invalid).all()


@pytest.mark.parametrize("units, scale", [("cm", 0.01), ("m", 1.0), ("mm  ", 0.001)])
def test_units_scale_to_metres(tmp_path, trajectories, units, scale):
    path = write_c3d(tmp_path / "units.c3d", ["A", "B", "C", "D"], trajectories, units=units)
    np.testing.assert_allclose(read_c3d(path).positions, trajectories * scale, rtol=1e-6)


def test_unknown_units_are_an_error_unless_overridden(tmp_path, trajectories):
    path = write_c3d(tmp_path / "inches.c3d", ["A", "B", "C", "D"], trajectories, units="in")
    with pytest.raises(C3DError, match=r"inches\.c3d: POINT:UNITS is 'in', expected one of"):
        read_c3d(path)
    np.testing.assert_allclose(read_c3d(path, units="cm").positions, trajectories / 100, rtol=1e-6)
    with pytest.raises(C3DError, match="units override 'ft'"):
        read_c3d(path, units="ft")


def test_zero_samples_are_missing_by_default(tmp_path, trajectories):
    trajectories[3, 2] = 0.0
    path = write_c3d(tmp_path / "zeros.c3d", ["A", "B", "C", "D"], trajectories)
    assert np.isnan(read_c3d(path).positions[3, 2]).all()
    assert np.isnan(read_c3d(path).positions).sum() == 3
    np.testing.assert_array_equal(read_c3d(path, zero_is_missing=False).positions[3, 2], 0.0)


def test_labels_are_cleaned_and_unique(tmp_path):
    labels = ["Anna:LFHD", "Anna:LFHD", "", "Anna:LFHD_2", "*5"]
    path = write_c3d(tmp_path / "labels.c3d", labels, np.ones((2, 5, 3)))
    assert read_c3d(path).labels == ("LFHD", "LFHD_3", "M3", "LFHD_2", "*5")
    assert read_c3d(path, strip_subject=False).labels[:2] == ("Anna:LFHD", "Anna:LFHD_3")
    two_subjects = write_c3d(tmp_path / "two.c3d", ["Anna:LFHD", "Ben:LFHD"], np.ones((2, 2, 3)))
    assert read_c3d(two_subjects).labels == ("Anna:LFHD", "Ben:LFHD")


def test_z_up_lab_maps_to_model_y_up_without_mirroring():
    rotation = lab_to_model_rotation("z")
    np.testing.assert_allclose(rotation @ [0, 0, 1], [0, 1, 0])  # lab up -> model up
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3))
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(lab_to_model_rotation("Y"), np.eye(3))
    points = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    moved = to_model_space(points, "z")
    np.testing.assert_allclose(moved[0], [1.0, 3.0, -2.0])
    assert np.isnan(moved[1]).all()
    with pytest.raises(ValueError, match="unknown lab up axis 'x'"):
        lab_to_model_rotation("x")


def test_bad_files_name_the_file_and_what_was_expected(tmp_path, trajectories):
    good = write_c3d(tmp_path / "good.c3d", ["A", "B", "C", "D"], trajectories).read_bytes()
    cases = {
        "missing.c3d": None,
        "empty.c3d": b"",
        "text.c3d": b"not a c3d file\n" * 100,
        "truncated.c3d": good[: len(good) - 512],
        "cut_parameters.c3d": good[:600],
    }
    expected = {
        "missing.c3d": "cannot open",
        "empty.c3d": "not a C3D file .*second byte is 0x50",
        "text.c3d": "not a C3D file",
        "truncated.c3d": "truncated, the header promises 7 frames",
        "cut_parameters.c3d": "corrupt or unsupported C3D file",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(C3DError, match=rf"{name}: {expected[name]}"):
            read_c3d(path)


@pytest.mark.parametrize("channels", [0, 3])
def test_inconsistent_analog_header_is_ignored_with_one_warning(tmp_path, trajectories, channels):
    """CMU's header says 1 analog sample per frame against 600 / 120 in its parameters; the points
    are intact (with analog channels stored, 5 samples per frame lie between them)."""
    path = write_cmu_like(tmp_path / "01_01.c3d", ["A", "B", "C", "D"], trajectories, channels)
    with open(path, "rb") as handle, pytest.raises(AssertionError, match="inconsistent analog rate"):
        c3d.Reader(handle)  # what the package alone does with such a file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip = read_c3d(path)

    ours = [w for w in caught if issubclass(w.category, C3DWarning)]
    assert len(ours) == 1
    assert "01_01.c3d: inconsistent analog rate! 1 header != 600.0 analog-fps / 120.0 point-fps" in str(ours[0].message)
    assert clip.notes and "analog section is ignored" in clip.notes[0]
    np.testing.assert_allclose(clip.positions, trajectories / 1000, atol=1e-7)


def test_consistent_file_reads_without_warning(tmp_path, trajectories):
    path = write_cmu_like(tmp_path / "fine.c3d", ["A", "B", "C", "D"], trajectories, 3, header_per_frame=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", C3DWarning)
        clip = read_c3d(path)
    assert clip.notes == ()
    np.testing.assert_allclose(clip.positions, trajectories / 1000, atol=1e-7)


def test_inconsistent_point_section_is_still_refused(tmp_path, trajectories):
    path = write_c3d(tmp_path / "bad_points.c3d", ["A", "B", "C", "D"], trajectories)
    data = bytearray(path.read_bytes())
    data[2:4] = struct.pack("<H", 9)  # the header's point count, against POINT:USED = 4
    path.write_bytes(bytes(data))
    with pytest.raises(C3DError, match=r"bad_points\.c3d: the point section is inconsistent "
                                       r"\(inconsistent point count! 9 header != 4 POINT:USED\)"):
        read_c3d(path)


def test_other_writers_conventions_metres_y_up_gaps_residuals(tmp_path):
    """Metres (POINT:UNITS "m"), a Y-up lab, gaps as zeros and as negative residuals: in model
    space (Y up) the Y-up lab's points come back as written, gaps NaN."""
    generator = np.random.default_rng(5)
    points = generator.uniform(-1.0, 1.0, size=(6, 3, 3))
    points[:, :, 1] = np.abs(points[:, :, 1]) + 0.1  # up is Y, above the floor
    invalid = np.zeros((6, 3), bool)
    invalid[1:3, 0] = True
    points[4, 2] = 0.0
    path = write_c3d(tmp_path / "optitrack.c3d", ["A", "B", "C"], points, invalid, rate=100.0, units="m")
    clip = read_c3d(path)
    model = to_model_space(clip.positions, "y")
    missing = invalid.copy()
    missing[4, 2] = True
    assert (np.isnan(model).any(-1) == missing).all()
    np.testing.assert_allclose(model[~missing], points[~missing], atol=1e-6)
    assert clip.frame_rate == 100.0


def test_written_trajectories_read_back_with_their_gaps(tmp_path, trajectories):
    metres = trajectories / 1000
    metres[2, 1] = np.nan
    path = write_trajectories(tmp_path / "out.c3d", ["A", "B", "C", "D"], metres, 60.0, units="cm", first_frame=3)
    clip = read_c3d(path)
    assert clip.labels == ("A", "B", "C", "D") and clip.frame_rate == 60.0 and clip.first_frame == 3
    np.testing.assert_allclose(clip.positions, metres, atol=1e-6)  # NaN where NaN


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "c3d", None)  # import c3d -> ImportError
    with pytest.raises(C3DError, match="pip install c3d"):
        read_c3d(tmp_path / "any.c3d")


# --------------------------------------------------------------------------- the marker layout


@pytest.fixture(scope="module")
def adult():
    from core.body_model import BodyModel

    return BodyModel.open_default("adult", dtype=torch.float64)


@pytest.fixture(scope="module")
def layout_points(adult):
    from core.keypoints import KeypointSet

    markers = KeypointSet.from_json(adult, LAYOUT)
    rest = torch.eye(3, dtype=torch.float64).expand(1, adult.num_joints, 3, 3)
    with torch.no_grad():
        return dict(zip(markers.names, markers.evaluate(rest)[0].numpy()))


def _distance_to_mesh(point: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> float:
    """Distance from a point to the nearest triangle near it, sampled on a fine barycentric grid."""
    near = np.flatnonzero((np.linalg.norm(vertices[faces] - point, axis=-1) < 0.06).any(axis=1))
    steps = np.linspace(0, 1, 41)
    u, v = np.meshgrid(steps, steps)
    keep = u + v <= 1
    weights = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], axis=1)  # (S, 3)
    samples = np.einsum("sc,fcd->fsd", weights, vertices[faces[near]])
    return float(np.linalg.norm(samples - point, axis=-1).min())


def _winding_number(point: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> float:
    """Generalised winding number of a closed-ish mesh about a point: ~1 inside, ~0 outside."""
    a, b, c = (vertices[faces[:, k]] - point for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    numerator = np.einsum("ij,ij->i", a, np.cross(b, c))
    denominator = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
        + np.einsum("ij,ij->i", c, a) * lb
    return float(np.arctan2(numerator, denominator).sum() * 2 / (4 * np.pi))


def test_layout_has_the_plug_in_gait_markers_off_the_skin(adult, layout_points):
    assert sorted(layout_points) == sorted(PLUG_IN_GAIT)
    vertices = adult.v_template.numpy()
    faces = adult.faces.numpy()
    offsets = {entry["offset"] for entry in json.loads(LAYOUT.read_text())["markers"].values()}
    assert offsets == {0.01}
    for name, point in layout_points.items():
        distance = _distance_to_mesh(point, vertices, faces)
        assert 0.009 < distance < 0.0115, f"{name} is {distance * 1000:.1f} mm from the skin"
        assert _winding_number(point, vertices, faces) < 0.5, f"{name} is inside the body"


def test_layout_is_left_right_symmetric(layout_points):
    mirror = np.array([-1.0, 1.0, 1.0])
    pairs = [name for name in layout_points if name.startswith("L")]
    assert len(pairs) == 17  # with RBAK alone and C7, T10, CLAV, STRN on the midline: 39
    for left in pairs:
        right = "R" + left[1:]
        np.testing.assert_allclose(layout_points[left] * mirror, layout_points[right], atol=0.003, err_msg=left)
        assert layout_points[left][0] > 0  # the body's left is +X in model space
    for name in ("C7", "T10", "CLAV", "STRN"):
        assert abs(layout_points[name][0]) < 0.005, name


def test_layout_file_is_what_the_script_builds(adult):
    spec = importlib.util.spec_from_file_location("make_marker_layout", ROOT / "scripts" / "make_marker_layout.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules[spec.name]
    built = script.build_layout(adult)
    shipped = json.loads(LAYOUT.read_text())["markers"]
    assert list(built) == list(shipped)
    for name, entry in built.items():
        assert entry["triangle"] == shipped[name]["triangle"], name
        np.testing.assert_allclose(entry["barycentric"], shipped[name]["barycentric"], atol=1e-6)
