"""BVH reader: hierarchy, channel orders, forward kinematics, errors for malformed files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core.mocap.bvh import (
    BVHError,
    forward_kinematics,
    end_site_positions,
    format_bvh,
    local_rotations,
    parse_bvh,
    read_bvh,
    rest_positions,
)

# A 3-joint chain, each joint with a different Euler order; the root also has positions
# (listed after its rotations, to check the layout is read per channel name).
CHAIN = """\
HIERARCHY
ROOT Root
{
  OFFSET 0 0 0
  CHANNELS 6 Zrotation Xrotation Yrotation Xposition Yposition Zposition
  JOINT Upper
  {
    OFFSET 1.0 2.0 0.5
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Lower
    {
      OFFSET 0 -3.0 1.0
      CHANNELS 3 Yrotation Zrotation Xrotation
      End Site
      {
        OFFSET 0.5 0 0
      }
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.0333333
0 0 0 0 0 0 0 0 0 0 0 0
90 0 0 10 20 30 0 0 0 0 0 0
12.5 -40 33 1 2 3 -70 15 80 25 -35 110
"""


def test_hierarchy_and_channels():
    m = parse_bvh(CHAIN, "chain.bvh")
    assert m.names == ["Root", "Upper", "Lower"]
    assert m.parents.tolist() == [-1, 0, 1]
    np.testing.assert_allclose(m.offsets, [[0, 0, 0], [1, 2, 0.5], [0, -3, 1]])
    assert m.rotation_orders == ["ZXY", "XYZ", "YZX"]
    assert m.channel_start.tolist() == [0, 6, 9]
    assert m.num_channels == 12
    assert m.num_frames == 3
    assert m.fps == pytest.approx(30.0, rel=1e-5)
    np.testing.assert_allclose(m.end_sites[2], [0.5, 0, 0])
    # positions: root from its channels, others from OFFSET
    np.testing.assert_allclose(m.positions[2, 0], [1, 2, 3])
    np.testing.assert_allclose(m.positions[2, 1], [1, 2, 0.5])
    np.testing.assert_allclose(m.rotations[2, 0], [12.5, -40, 33])  # Z, X, Y in channel order


def test_local_rotations_match_scipy_intrinsic():
    m = parse_bvh(CHAIN)
    local = local_rotations(m).numpy()
    # BVH: R = R_ch1 @ R_ch2 @ R_ch3, i.e. intrinsic rotations in channel order (upper-case in scipy).
    for j, order in enumerate(["ZXY", "XYZ", "YZX"]):
        expected = Rotation.from_euler(order, m.rotations[2, j], degrees=True).as_matrix()
        np.testing.assert_allclose(local[2, j], expected, atol=1e-12)
    np.testing.assert_allclose(local[0], np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-12)


def test_forward_kinematics_by_hand():
    m = parse_bvh(CHAIN)
    rot, pos = forward_kinematics(m)
    rot, pos = rot.numpy(), pos.numpy()
    # frame 0: zero rotations -> the OFFSET pose
    np.testing.assert_allclose(pos[0], [[0, 0, 0], [1, 2, 0.5], [1, -1, 1.5]], atol=1e-12)
    np.testing.assert_allclose(pos[0], rest_positions(m), atol=1e-12)
    # frame 1: root at (10, 20, 30) turned 90 deg about Z: (x, y, z) -> (-y, x, z)
    np.testing.assert_allclose(pos[1, 0], [10, 20, 30], atol=1e-12)
    np.testing.assert_allclose(pos[1, 1], [10 - 2, 20 + 1, 30 + 0.5], atol=1e-12)
    np.testing.assert_allclose(pos[1, 2], [8 + 3, 21 + 0, 30.5 + 1], atol=1e-12)
    # frame 2: general angles against an independent numpy chain
    orders = ["ZXY", "XYZ", "YZX"]
    R = [Rotation.from_euler(o, m.rotations[2, j], degrees=True).as_matrix() for j, o in enumerate(orders)]
    g0, g1 = R[0], R[0] @ R[1]
    p0 = np.array([1.0, 2, 3])
    p1 = p0 + g0 @ [1, 2, 0.5]
    p2 = p1 + g1 @ [0, -3, 1]
    np.testing.assert_allclose(pos[2], [p0, p1, p2], atol=1e-12)
    np.testing.assert_allclose(rot[2, 2], g1 @ R[2], atol=1e-12)
    joints, ends = end_site_positions(m, torch.as_tensor(rot), torch.as_tensor(pos))
    assert joints == [2]
    np.testing.assert_allclose(ends[2, 0].numpy(), p2 + g1 @ R[2] @ [0.5, 0, 0], atol=1e-12)


def test_frame_subset_and_read_file(tmp_path):
    path = tmp_path / "chain.bvh"
    path.write_text(CHAIN)
    m = read_bvh(path)
    rot_all, pos_all = forward_kinematics(m)
    rot, pos = forward_kinematics(m, frames=[2, 0])
    torch.testing.assert_close(pos, pos_all[[2, 0]])
    torch.testing.assert_close(rot, rot_all[[2, 0]])


def test_format_round_trip():
    m = parse_bvh(CHAIN)
    frames = np.concatenate([np.concatenate([m.rotations[:, 0], m.positions[:, 0]], 1),
                             m.rotations[:, 1], m.rotations[:, 2]], 1)
    text = format_bvh(m.names, m.parents, m.offsets, m.channels, frames, m.frame_time, m.end_sites)
    m2 = parse_bvh(text)
    assert m2.names == m.names and m2.rotation_orders == m.rotation_orders
    np.testing.assert_allclose(m2.rotations, m.rotations)
    np.testing.assert_allclose(m2.positions, m.positions)


def test_partial_rotation_channels():
    text = (
        CHAIN.replace("CHANNELS 3 Yrotation Zrotation Xrotation", "CHANNELS 1 Zrotation")
        .replace("-70 15 80 25 -35 110", "-70 15 80 25")
        .replace("90 0 0 10 20 30 0 0 0 0 0 0", "90 0 0 10 20 30 0 0 0 0")
        .replace("0 0 0 0 0 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 0 0")
    )
    m = parse_bvh(text)
    assert m.rotation_orders[2] == "ZXY"
    expected = Rotation.from_euler("z", 25, degrees=True).as_matrix()
    np.testing.assert_allclose(local_rotations(m)[2, 2].numpy(), expected, atol=1e-12)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    "broken, needle, message",
    [
        (CHAIN.replace("10 20 30 0 0 0 0 0 0", "10 20 30 0 0 0 0 0"), "90 0 0 10 20 30", "has 11 values"),
        (CHAIN.replace("-35 110", "-35 1l0"), "-35 1l0", "bad number '1l0'"),
        (CHAIN.replace("OFFSET 1.0 2.0 0.5", "OFFSET 1.0 two 0.5"), "OFFSET 1.0 two", "bad number in OFFSET"),
        (CHAIN.replace("OFFSET 1.0 2.0 0.5", "OFFSET 1.0 2.0"), "OFFSET 1.0 2.0", "OFFSET needs 3 numbers"),
        (CHAIN.replace("CHANNELS 3 Xrotation", "CHANNELS 4 Xrotation"), "CHANNELS 4", "CHANNELS says 4"),
        (CHAIN.replace("Frames: 3", "Frames: x"), "Frames: x", "bad frame count"),
        (CHAIN.replace("Frames: 3", "Frames: 4"), "12.5 -40", "only 3 frame lines"),
        (CHAIN.replace("Frames: 3", "Frames: 2"), "12.5 -40", "more frame lines"),
        (CHAIN.replace("Wrotation", "").replace("Xrotation Yrotation Zrotation", "Xrotation Yrotation Wrotation"),
         "Wrotation", "unknown channel"),
    ],
)
def test_malformed_files_name_the_line(broken, needle, message):
    with pytest.raises(BVHError) as info:
        parse_bvh(broken, "bad.bvh")
    line = _line_of(broken, needle)
    assert f"bad.bvh:{line}:" in str(info.value)
    assert message in str(info.value)
    assert info.value.line == line


def test_missing_motion_and_hierarchy(tmp_path):
    no_motion = CHAIN[: CHAIN.index("MOTION")]
    with pytest.raises(BVHError, match="no MOTION section"):
        parse_bvh(no_motion, "a.bvh")
    with pytest.raises(BVHError, match="unclosed"):
        parse_bvh(no_motion.rstrip()[:-1], "a.bvh")
    with pytest.raises(BVHError, match="HIERARCHY"):
        parse_bvh("MOTION\nFrames: 0\nFrame Time: 0.1\n", "a.bvh")
    path = tmp_path / "empty_motion.bvh"
    path.write_text(CHAIN.replace("MOTION", "MOVEMENT"))
    with pytest.raises(BVHError) as info:
        read_bvh(path)
    assert str(path) in str(info.value) and "MOVEMENT" in str(info.value)


def test_long_clip_is_vectorised():
    """FK runs over all frames at once (batched), here 4k frames of random angles."""
    rng = np.random.default_rng(0)
    frames = rng.uniform(-90, 90, (1000, 12))
    header = CHAIN[: CHAIN.index("MOTION")]
    body = "\n".join(" ".join(f"{v:.3f}" for v in row) for row in frames)
    m = parse_bvh(header + f"MOTION\nFrames: 1000\nFrame Time: 0.01\n{body}\n")
    np.testing.assert_allclose(m.rotations[:, 1], np.round(frames[:, 6:9], 3))
    m.rotations = np.repeat(m.rotations, 4, axis=0)
    m.positions = np.repeat(m.positions, 4, axis=0)
    rot, pos = forward_kinematics(m)
    assert pos.shape == (4_000, 3, 3) and torch.isfinite(pos).all()
    expected = Rotation.from_euler("XYZ", m.rotations[-1, 1], degrees=True).as_matrix()
    np.testing.assert_allclose(local_rotations(m, frames=[3_999])[0, 1].numpy(), expected, atol=1e-12)
