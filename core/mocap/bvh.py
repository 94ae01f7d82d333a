"""BVH reader and forward kinematics, without bpy.

Why our own reader: BVH is a tiny text format (a joint tree with OFFSET/CHANNELS, then one line of
numbers per frame), there is no well-kept pure-Python BVH library on PyPI, and Blender's importer
(`bpy.ops.import_anim.bvh`) needs bpy, which `core` must never import. The reader is ~200 lines of
numpy and gives clear errors (file and line) for malformed input.

Conventions (those of the Biovision format and of Blender's importer):

* Every joint's local frame is parallel to the world axes when all its rotation channels are zero
  ("world-aligned rest"); OFFSET is the joint's position in its parent's frame.
* Rotation channels are Euler angles in degrees. A joint whose channels read
  ``Zrotation Yrotation Xrotation`` has the local rotation ``R = Rz @ Ry @ Rx`` (the channels in the
  order listed, composed left to right, i.e. intrinsic rotations); any order is accepted.
* Position channels *replace* the joint's OFFSET (as Blender's importer does for the root, whose
  OFFSET is normally zero).
* Global rotation ``G_j = G_parent @ R_j``; global position ``p_j = p_parent + G_parent @ t_j`` with
  ``t_j`` the OFFSET (or the position channels).

Arrays are numpy (parsing); the kinematics return torch tensors (the rest of `core` is PyTorch) and
are vectorised over frames, so 100k frames of a 31-joint skeleton take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import VPoserError
from ..rotations import euler_to_matrix, matrix_to_euler

__all__ = [
    "BVHError",
    "BVHMotion",
    "read_bvh",
    "parse_bvh",
    "local_rotations",
    "forward_kinematics",
    "rest_positions",
    "end_site_positions",
    "format_bvh",
    "depth_first_order",
    "motion_channels",
    "write_bvh",
]

_POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
_ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")


class BVHError(VPoserError):
    """A malformed BVH file; the message names the file and the line."""

    def __init__(self, source: str, line: int | None, message: str):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


@dataclass
class BVHMotion:
    """A parsed BVH file.

    names:            joint names (J), in file order (a parent always comes before its children).
    parents:          (J,) int64, -1 for the root.
    offsets:          (J, 3) OFFSET of each joint in its parent's frame (file units).
    channels:         per joint, the channel names as listed (e.g. ("Zrotation", "Yrotation", "Xrotation")).
    channel_start:    (J,) column of each joint's first channel in a frame line.
    rotation_orders:  per joint, the axes of its rotation channels in the listed order, padded with the
                      missing axes (zero angles) to a permutation of "XYZ" (e.g. "ZYX").
    end_sites:        {joint index: (3,) End Site OFFSET in that joint's frame}.
    frame_time:       seconds per frame.
    positions:        (T, J, 3) local translation per frame: the position channels where a joint has
                      them, else its OFFSET.
    rotations:        (T, J, 3) Euler angles in degrees, in the joint's `rotation_orders` order (zeros
                      for missing channels).
    """

    source: str
    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[tuple[str, ...]]
    channel_start: np.ndarray
    rotation_orders: list[str]
    end_sites: dict[int, np.ndarray]
    frame_time: float
    positions: np.ndarray
    rotations: np.ndarray
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._index = {name: i for i, name in enumerate(self.names)}

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def index(self, name: str) -> int:
        """Joint index by name; KeyError listing the joints when absent."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{self.source}: no joint {name!r}; joints are {self.names}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._index


# ----------------------------------------------------------------------------------------------
# Parsing


def read_bvh(path: str | Path) -> BVHMotion:
    """Read a BVH file. Raises BVHError naming the file and line for malformed input."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise BVHError(str(path), None, "the file is empty")
    return parse_bvh(text, source=str(path))


def parse_bvh(text: str, source: str = "<string>") -> BVHMotion:
    """Parse BVH text (see read_bvh); `source` names it in error messages."""
    lines = text.splitlines()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[tuple[str, ...]] = []
    end_sites: dict[int, np.ndarray] = {}

    n = len(lines)
    i = 0

    def skip_blank(i: int) -> int:
        while i < n and not lines[i].strip():
            i += 1
        return i

    def floats(tokens: list[str], lineno: int, what: str) -> np.ndarray:
        try:
            return np.array([float(t) for t in tokens], dtype=np.float64)
        except ValueError:
            raise BVHError(source, lineno, f"bad number in {what}: {' '.join(tokens)!r}") from None

    i = skip_blank(i)
    if i >= n or lines[i].split()[0].upper() != "HIERARCHY":
        raise BVHError(source, i + 1 if i < n else None, "file does not start with HIERARCHY")
    i += 1

    # Stack of (joint index or -2 for an End Site) for the open braces.
    stack: list[int] = []
    pending: tuple[str, int] | None = None  # ("joint"/"end", line) awaiting its "{"
    current = -1  # joint whose body is open (innermost real joint)
    in_end_site = False
    end_offset: np.ndarray | None = None
    motion_line = None
    while i < n:
        raw = lines[i]
        tokens = raw.split()
        lineno = i + 1
        i += 1
        if not tokens:
            continue
        key = tokens[0].upper()
        if key in ("ROOT", "JOINT"):
            if key == "ROOT" and stack:
                raise BVHError(source, lineno, "ROOT inside another joint")
            if key == "ROOT" and names:
                raise BVHError(source, lineno, "more than one ROOT is not supported")
            if key == "JOINT" and not stack:
                raise BVHError(source, lineno, "JOINT outside of ROOT")
            if in_end_site:
                raise BVHError(source, lineno, "JOINT inside an End Site")
            if len(tokens) < 2:
                raise BVHError(source, lineno, f"{tokens[0]} without a name")
            names.append(" ".join(tokens[1:]))
            parents.append(current if key == "JOINT" else -1)
            offsets.append(np.zeros(3))
            channels.append(())
            pending = ("joint", lineno)
        elif key == "END":
            if not stack or in_end_site:
                raise BVHError(source, lineno, "End Site outside of a joint")
            pending = ("end", lineno)
        elif key == "{":
            if pending is None:
                raise BVHError(source, lineno, "unexpected '{'")
            if pending[0] == "joint":
                current = len(names) - 1
                stack.append(current)
            else:
                in_end_site = True
                end_offset = None
                stack.append(-2)
            pending = None
        elif key == "}":
            if not stack:
                raise BVHError(source, lineno, "unbalanced '}'")
            top = stack.pop()
            if top == -2:
                if end_offset is None:
                    raise BVHError(source, lineno, "End Site without OFFSET")
                end_sites[current] = end_offset
                in_end_site = False
            else:
                # back to the innermost joint still open
                current = next((s for s in reversed(stack) if s >= 0), -1)
        elif key == "OFFSET":
            if pending is not None or not stack:
                raise BVHError(source, lineno, "OFFSET outside of a joint body")
            if len(tokens) != 4:
                raise BVHError(source, lineno, f"OFFSET needs 3 numbers, got {len(tokens) - 1}")
            value = floats(tokens[1:], lineno, "OFFSET")
            if in_end_site:
                end_offset = value
            else:
                offsets[current] = value
        elif key == "CHANNELS":
            if pending is not None or not stack or in_end_site:
                raise BVHError(source, lineno, "CHANNELS outside of a joint body")
            try:
                count = int(tokens[1])
            except (IndexError, ValueError):
                raise BVHError(source, lineno, "CHANNELS needs a count") from None
            names_here = tuple(tokens[2:])
            if len(names_here) != count:
                raise BVHError(source, lineno, f"CHANNELS says {count} but lists {len(names_here)}")
            for c in names_here:
                if c not in _POSITION_CHANNELS and c not in _ROTATION_CHANNELS:
                    raise BVHError(source, lineno, f"unknown channel {c!r}")
            if len(set(names_here)) != len(names_here):
                raise BVHError(source, lineno, f"repeated channel in {names_here}")
            channels[current] = names_here
        elif key == "MOTION":
            if stack or pending is not None:
                raise BVHError(source, lineno, "MOTION before the hierarchy is closed")
            motion_line = i - 1
            break
        else:
            raise BVHError(source, lineno, f"unexpected {tokens[0]!r} in HIERARCHY")

    if motion_line is None:
        if stack or pending is not None:
            raise BVHError(source, n, "file ends inside the hierarchy (unclosed '{')")
        raise BVHError(source, n, "no MOTION section")
    if not names:
        raise BVHError(source, motion_line + 1, "no joints before MOTION")

    # MOTION header: "Frames: N" and "Frame Time: dt"
    i = skip_blank(motion_line + 1)
    if i >= n or not lines[i].strip().lower().startswith("frames:"):
        raise BVHError(source, min(i + 1, n), "expected 'Frames: N' after MOTION")
    try:
        num_frames = int(lines[i].split(":", 1)[1].strip())
    except ValueError:
        raise BVHError(source, i + 1, f"bad frame count: {lines[i].strip()!r}") from None
    if num_frames < 0:
        raise BVHError(source, i + 1, "negative frame count")
    i = skip_blank(i + 1)
    if i >= n or not lines[i].strip().lower().startswith("frame time:"):
        raise BVHError(source, min(i + 1, n), "expected 'Frame Time: dt' after 'Frames:'")
    try:
        frame_time = float(lines[i].split(":", 1)[1].strip())
    except ValueError:
        raise BVHError(source, i + 1, f"bad frame time: {lines[i].strip()!r}") from None
    if not frame_time > 0:
        raise BVHError(source, i + 1, f"frame time must be positive, got {frame_time}")
    first_data = i + 1

    num_channels = sum(len(c) for c in channels)
    data = _parse_frames(lines, first_data, num_frames, num_channels, source)

    # Layout: where each joint's channels live.
    J = len(names)
    channel_start = np.zeros(J, dtype=np.int64)
    rotation_orders: list[str] = []
    offsets_arr = np.stack(offsets)
    positions = np.broadcast_to(offsets_arr, (num_frames, J, 3)).copy()
    rotations = np.zeros((num_frames, J, 3))
    col = 0
    for j, chans in enumerate(channels):
        channel_start[j] = col
        rot_axes = ""
        rot_cols = []
        for k, c in enumerate(chans):
            if c in _POSITION_CHANNELS:
                positions[:, j, "XYZ".index(c[0])] = data[:, col + k]
            else:
                rot_axes += c[0]
                rot_cols.append(col + k)
        order = rot_axes + "".join(a for a in "XYZ" if a not in rot_axes)
        rotation_orders.append(order)
        if rot_cols:
            rotations[:, j, : len(rot_cols)] = data[:, rot_cols]
        col += len(chans)

    return BVHMotion(
        source=source,
        names=names,
        parents=np.asarray(parents, dtype=np.int64),
        offsets=offsets_arr,
        channels=channels,
        channel_start=channel_start,
        rotation_orders=rotation_orders,
        end_sites=end_sites,
        frame_time=frame_time,
        positions=positions,
        rotations=rotations,
    )


def _parse_frames(lines: list[str], first: int, num_frames: int, num_channels: int, source: str) -> np.ndarray:
    """(num_frames, num_channels) from the frame lines; fast path, then a per-line scan for errors."""
    body = lines[first:]
    # Drop trailing blank lines only.
    end = len(body)
    while end > 0 and not body[end - 1].strip():
        end -= 1
    body = body[:end]
    if num_channels == 0:
        return np.zeros((num_frames, 0))
    try:
        flat = np.array(" ".join(body).split(), dtype=np.float64)
    except ValueError:
        flat = None
    if flat is not None and flat.size == num_frames * num_channels and len(body) == num_frames:
        return flat.reshape(num_frames, num_channels)
    # Slow path: find the offending line.
    for k, line in enumerate(body):
        lineno = first + k + 1
        tokens = line.split()
        if k >= num_frames:
            raise BVHError(source, lineno, f"more frame lines than 'Frames: {num_frames}'")
        if len(tokens) != num_channels:
            raise BVHError(
                source, lineno, f"frame {k + 1} has {len(tokens)} values, the hierarchy has {num_channels} channels"
            )
        try:
            [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise BVHError(source, lineno, f"bad number {bad!r} in frame {k + 1}") from None
    raise BVHError(source, first + len(body), f"only {len(body)} frame lines, 'Frames:' says {num_frames}")


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# Kinematics


def _frames(motion: BVHMotion, frames) -> slice | np.ndarray:
    return slice(None) if frames is None else np.asarray(frames)


def local_rotations(motion: BVHMotion, frames=None, dtype=torch.float64) -> Tensor:
    """(T, J, 3, 3) local rotation matrices, R = R_ch1 @ R_ch2 @ R_ch3 in each joint's channel order.

    `frames` (optional index array) selects frames before the work is done.
    """
    angles = torch.as_tensor(np.deg2rad(motion.rotations[_frames(motion, frames)]), dtype=dtype)
    T, J = angles.shape[:2]
    out = torch.empty(T, J, 3, 3, dtype=dtype)
    # Group joints by order so each group is one batched call.
    by_order: dict[str, list[int]] = {}
    for j, order in enumerate(motion.rotation_orders):
        by_order.setdefault(order, []).append(j)
    for order, joints in by_order.items():
        idx = torch.as_tensor(joints)
        out[:, idx] = euler_to_matrix(angles[:, idx], order)
    return out


def forward_kinematics(motion: BVHMotion, frames=None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Global rotations (T, J, 3, 3) and global joint positions (T, J, 3), in file units and axes."""
    local = local_rotations(motion, frames, dtype)
    trans = torch.as_tensor(motion.positions[_frames(motion, frames)], dtype=dtype)
    return _chain(local, trans, motion.parents)


def _chain(local: Tensor, trans: Tensor, parents: np.ndarray) -> tuple[Tensor, Tensor]:
    T, J = local.shape[:2]
    rot = [None] * J
    pos = [None] * J
    for j in range(J):
        p = int(parents[j])
        if p < 0:
            rot[j] = local[:, j]
            pos[j] = trans[:, j]
        else:
            rot[j] = rot[p] @ local[:, j]
            pos[j] = pos[p] + (rot[p] @ trans[:, j].unsqueeze(-1)).squeeze(-1)
    return torch.stack(rot, 1), torch.stack(pos, 1)


def rest_positions(motion: BVHMotion, root_at_origin: bool = True) -> np.ndarray:
    """(J, 3) joint positions with every rotation zero (the skeleton's OFFSET pose).

    With `root_at_origin` the root sits at (0, 0, 0); otherwise at its OFFSET.
    """
    J = motion.num_joints
    pos = np.zeros((J, 3))
    for j in range(J):
        p = int(motion.parents[j])
        if p < 0:
            pos[j] = 0.0 if root_at_origin else motion.offsets[j]
        else:
            pos[j] = pos[p] + motion.offsets[j]
    return pos


def end_site_positions(motion: BVHMotion, global_rot: Tensor, global_pos: Tensor) -> tuple[list[int], Tensor]:
    """Global End Site positions (T, E, 3) from forward_kinematics' output, with their joint indices."""
    joints = sorted(motion.end_sites)
    if not joints:
        return [], global_pos[:, :0]
    idx = torch.as_tensor(joints)
    off = torch.as_tensor(np.stack([motion.end_sites[j] for j in joints]), dtype=global_pos.dtype)
    ends = global_pos[:, idx] + (global_rot[:, idx] @ off.unsqueeze(-1)).squeeze(-1)
    return joints, ends


# ----------------------------------------------------------------------------------------------
# Writing (small files: tests, exporting a converted clip)


def depth_first_order(parents) -> list[int]:
    """Joint indices in the order a BVH file lists them: depth first from the root, children in
    index order."""
    parents = [int(p) for p in parents]
    children: dict[int, list[int]] = {}
    for j, p in enumerate(parents):
        children.setdefault(p, []).append(j)
    order: list[int] = []
    stack = list(reversed(children.get(-1, [])))
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children.get(j, [])))
    return order


def format_bvh(
    names: list[str],
    parents,
    offsets,
    channels: list[tuple[str, ...]],
    frames,
    frame_time: float,
    end_sites: dict[int, tuple[float, float, float]] | None = None,
) -> str:
    """BVH text for a joint tree (parents before children) and a (T, C) array of channel values, its
    columns joint by joint in the order given. The file lists the joints depth first (children in
    the order given), as BVH requires, so a reader sees them in `depth_first_order(parents)`; the
    columns are written in that order too."""
    parents = [int(p) for p in parents]
    offsets = np.asarray(offsets, dtype=np.float64)
    frames = np.atleast_2d(np.asarray(frames, dtype=np.float64))
    end_sites = end_sites or {}
    children: dict[int, list[int]] = {}
    for j, p in enumerate(parents):
        children.setdefault(p, []).append(j)
    out = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        out.append(f"{pad}{'ROOT' if parents[j] < 0 else 'JOINT'} {names[j]}")
        out.append(f"{pad}{{")
        out.append(f"{pad}\tOFFSET " + " ".join(f"{v:.6f}" for v in offsets[j]))
        out.append(f"{pad}\tCHANNELS {len(channels[j])} " + " ".join(channels[j]))
        for c in children.get(j, []):
            emit(c, depth + 1)
        if j in end_sites:
            out.append(f"{pad}\tEnd Site")
            out.append(f"{pad}\t{{")
            out.append(f"{pad}\t\tOFFSET " + " ".join(f"{v:.6f}" for v in end_sites[j]))
            out.append(f"{pad}\t}}")
        out.append(f"{pad}}}")

    roots = children.get(-1, [])
    if len(roots) != 1:
        raise ValueError("a BVH skeleton needs exactly one root")
    emit(roots[0], 0)
    starts = np.cumsum([0] + [len(c) for c in channels])
    columns = [c for j in depth_first_order(parents) for c in range(starts[j], starts[j + 1])]
    frames = frames[:, columns] if frames.size else frames
    out += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time:.7f}"]
    out += [" ".join(f"{v:.6f}" for v in row) for row in frames]
    return "\n".join(out) + "\n"


def motion_channels(motion: BVHMotion, world_rotations, world_positions) -> np.ndarray:
    """(T, C) channel values that pose `motion`'s hierarchy with the given joint world rotations
    (T, J, 3, 3) and positions (T, J, 3) (file units and axes): the inverse of forward_kinematics.
    Rotation channels get each joint's local rotation as Euler angles in its channel order;
    position channels its position in the parent's frame (the root's: its world position). A joint
    with fewer than three rotation channels keeps only those angles."""
    G = torch.as_tensor(np.asarray(world_rotations), dtype=torch.float64)
    P = torch.as_tensor(np.asarray(world_positions), dtype=torch.float64)
    T, J = G.shape[:2]
    if J != motion.num_joints or P.shape != (T, J, 3):
        raise ValueError(f"{motion.source}: expected rotations (T, {motion.num_joints}, 3, 3) and positions "
                         f"(T, {motion.num_joints}, 3), got {tuple(G.shape)} and {tuple(P.shape)}")
    parents = motion.parents.tolist()
    out = np.zeros((T, sum(len(c) for c in motion.channels)))
    for j, channels in enumerate(motion.channels):
        if not channels:
            continue
        p = parents[j]
        local = G[:, j] if p < 0 else G[:, p].transpose(-1, -2) @ G[:, j]
        offset = P[:, j] if p < 0 else (G[:, p].transpose(-1, -2) @ (P[:, j] - P[:, p]).unsqueeze(-1)).squeeze(-1)
        degrees = np.rad2deg(matrix_to_euler(local, motion.rotation_orders[j]).numpy())
        col, rot = int(motion.channel_start[j]), 0
        for c in channels:
            if c in _POSITION_CHANNELS:
                out[:, col] = offset[:, "XYZ".index(c[0])].numpy()
            else:
                out[:, col] = degrees[:, rot]
                rot += 1
            col += 1
    return out


def write_bvh(path: str | Path, motion: BVHMotion, frames: np.ndarray, frame_time: float) -> None:
    """Write `motion`'s hierarchy (names, OFFSETs, channels, End Sites) with new channel values (T, C)."""
    text = format_bvh(motion.names, motion.parents, motion.offsets, motion.channels, frames, frame_time,
                      {j: tuple(v) for j, v in motion.end_sites.items()})
    Path(path).write_text(text, encoding="utf-8")
