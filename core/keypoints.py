"""What an IK target attaches to: a joint, a mesh vertex, or a point on the surface.

A surface point is a triangle, barycentric coordinates and an offset along the triangle's normal,
because mocap markers sit a few millimetres to centimetres off the skin. A `KeypointSet` is bound to
one body model and evaluates all its points in one vectorised call: from the joints alone when it has
only joints (the mesh is never touched), else skinning just the vertices it needs. It also carries the
chain rule from joint and vertex derivatives to point derivatives, which the IK's Jacobian needs.

Marker layout files are JSON:

    {"description": "optional text",
     "markers": {
         "LFHD":   {"triangle": 1234, "barycentric": [0.2, 0.3, 0.5], "offset": 0.01},
         "C7":     {"vertex": 3470},
         "pelvis": {"joint": "pelvis"},
         "LKNE_joint": {"joint": "left_knee", "local": [0.0, 0.02, 0.0]}}}

`offset` is in metres along the triangle's normal (outward for counter-clockwise winding, as SMPL
meshes are), default 0; barycentric coordinates are non-negative and sum to 1. `local` puts a joint
keypoint at a fixed offset (metres, model axes at rest) from the joint, carried by the joint's parent
segment: where another skeleton places the same joint (see core.retarget's calibration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .body_model import BodyModel
from .errors import VPoserError
from .model_files import SMPL_BODY_JOINTS
from .rotations import skew

EFFECTORS = ("pelvis", "head", "left_wrist", "right_wrist", "left_ankle", "right_ankle")
NUM_BODY_JOINTS = len(SMPL_BODY_JOINTS)  # the pelvis and the 21 joints VPoser poses


class KeypointError(VPoserError):
    """A keypoint definition does not fit the body model; the message names the source and entry."""


@dataclass(frozen=True)
class Keypoint:
    """One attachment: kind "joint" (index = joint, optionally `local`: an offset in its parent's
    frame), "vertex" (index = vertex) or "surface" (index = triangle, with barycentric coordinates
    and an offset in metres along its normal)."""

    name: str
    kind: str
    index: int
    barycentric: tuple[float, float, float] = (1.0, 0.0, 0.0)
    offset: float = 0.0
    local: tuple[float, float, float] = (0.0, 0.0, 0.0)


class KeypointSet:
    """Named keypoints on one body model, evaluated together.

    Points come back in the order given, (B, K, 3). `vertex_ids` are the only vertices that need
    skinning (None when every keypoint is a joint).
    """

    def __init__(self, model: BodyModel, keypoints: Sequence[Keypoint], source: str = "keypoints") -> None:
        if not keypoints:
            raise KeypointError(f"{source}: no keypoints")
        names = [point.name for point in keypoints]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise KeypointError(f"{source}: duplicate keypoint names {duplicates}")
        self.model = model
        self.keypoints = tuple(keypoints)
        self.names = tuple(names)
        faces = model.faces.cpu().numpy()
        joints, vertices, surfaces = [], [], []
        for point in keypoints:
            _check_keypoint(point, model, faces, source)
            {"joint": joints, "vertex": vertices, "surface": surfaces}[point.kind].append(point)
        corners = [faces[point.index] for point in surfaces]
        needed = sorted({point.index for point in vertices} | {int(v) for tri in corners for v in tri})
        slot = {vertex: i for i, vertex in enumerate(needed)}
        long = {"dtype": torch.long, "device": model.device}
        real = {"dtype": model.dtype, "device": model.device}
        self.joint_ids = torch.tensor([point.index for point in joints], **long)
        self._joint_parents = model.parents[self.joint_ids].clamp_min(0)
        self._joint_locals = torch.tensor([point.local for point in joints], **real).view(-1, 3)
        self.has_locals = bool(self._joint_locals.abs().sum() > 0)
        self.vertex_ids = torch.tensor(needed, **long) if needed else None
        self._vertex_slots = torch.tensor([slot[point.index] for point in vertices], **long)
        self._corner_slots = torch.tensor([[slot[int(v)] for v in tri] for tri in corners], **long).view(-1, 3)
        # Every vertex or surface keypoint as a blend of 3 corner vertices (a vertex keypoint: its vertex
        # thrice, only the first with a non-zero map), in the order `points` gives them after the joints.
        self._point_corner_slots = torch.cat([self._vertex_slots.unsqueeze(1).expand(-1, 3), self._corner_slots])
        self.corner_ids = None if self.vertex_ids is None else self.vertex_ids[self._point_corner_slots]
        self._barycentric = torch.tensor([point.barycentric for point in surfaces], **real).view(-1, 3)
        self._offsets = torch.tensor([point.offset for point in surfaces], **real)
        grouped = joints + vertices + surfaces
        position = {point.name: i for i, point in enumerate(grouped)}
        self._order = torch.tensor([position[name] for name in self.names], **long)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"KeypointSet({len(self)} keypoints: {', '.join(self.names[:6])}{', ...' if len(self) > 6 else ''})"

    @property
    def only_joints(self) -> bool:
        return self.vertex_ids is None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_joints(cls, model: BodyModel, names: Sequence[str]) -> KeypointSet:
        """Keypoints at the named joints of the model."""
        return cls.from_dict(model, {name: {"joint": name} for name in names}, source="joint list")

    @classmethod
    def named(cls, model: BodyModel, name: str | Path) -> KeypointSet:
        """'body22' (the 22 body joints), 'effectors' (pelvis, head, wrists, ankles), or a JSON layout file."""
        if name == "body22":
            return cls.from_joints(model, model.joint_names[:NUM_BODY_JOINTS])
        if name == "effectors":
            return cls.from_joints(model, EFFECTORS)
        if str(name).endswith(".json"):
            return cls.from_json(model, name)
        raise KeypointError(f"unknown keypoint set {name!r}; expected 'body22', 'effectors' or a .json layout")

    @classmethod
    def from_json(cls, model: BodyModel, path: str | Path) -> KeypointSet:
        """A marker layout file (schema in the module docstring)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise KeypointError(f"{path}: cannot read the marker layout ({error})") from error
        if not isinstance(data, dict) or not isinstance(data.get("markers"), dict):
            raise KeypointError(f"{path}: expected a JSON object with a 'markers' object mapping names to entries")
        return cls.from_dict(model, data["markers"], source=str(path))

    @classmethod
    def from_dict(cls, model: BodyModel, markers: Mapping[str, Mapping], source: str = "<dict>") -> KeypointSet:
        """name -> {"joint": name} | {"vertex": i} | {"triangle": f, "barycentric": [a, b, c], "offset": m}."""
        return cls(model, [_parse_entry(model, name, entry, source) for name, entry in markers.items()], source)

    def to_dict(self) -> dict[str, dict]:
        """The layout as `from_dict` reads it (write it with json.dump({"markers": ...}))."""
        out: dict[str, dict] = {}
        for point in self.keypoints:
            if point.kind == "joint":
                out[point.name] = {"joint": self.model.joint_names[point.index]}
                if any(point.local):
                    out[point.name]["local"] = list(point.local)
            elif point.kind == "vertex":
                out[point.name] = {"vertex": point.index}
            else:
                out[point.name] = {"triangle": point.index, "barycentric": list(point.barycentric),
                                   "offset": point.offset}
        return out

    # ----------------------------------------------------------------- evaluation
    def evaluate(
        self,
        rotations: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
        expression: Tensor | None = None,
    ) -> Tensor:
        """Points (B, K, 3) for local joint rotations (B, J, 3, 3): one body forward, joints-only if possible."""
        output = self.model.forward_rotations(
            rotations, betas, expression, transl, return_vertices=False, vertex_ids=self.vertex_ids
        )
        return self.points(output.joints, output.vertices, output.joint_rotations)

    def joint_points(self, joints: Tensor, joint_rotations: Tensor | None) -> Tensor:
        """(B, Kj, 3) the joint keypoints: the joints, moved by their `local` offsets if any."""
        points = joints[:, self.joint_ids]
        if self.has_locals:
            carried = joint_rotations[:, self._joint_parents] @ self._joint_locals.unsqueeze(-1)
            points = points + carried.squeeze(-1)
        return points

    def points(self, joints: Tensor, vertices: Tensor | None, joint_rotations: Tensor | None = None) -> Tensor:
        """Points (B, K, 3) from posed joints (B, J, 3) and their world rotations (B, J, 3, 3) (needed
        for `local` offsets) and the posed `vertex_ids` vertices (B, V', 3)."""
        parts = [self.joint_points(joints, joint_rotations)]
        if vertices is not None:
            parts.append(vertices[:, self._vertex_slots])
            if len(self._offsets):
                corners = vertices[:, self._corner_slots]  # (B, S, 3 corners, 3)
                on_triangle = (self._barycentric.unsqueeze(-1) * corners).sum(-2)
                normal, _ = _unit_normal(corners)
                parts.append(on_triangle + self._offsets.unsqueeze(-1) * normal)
        return torch.cat(parts, dim=1)[:, self._order]

    def corner_vertices(self, vertices: Tensor) -> Tensor:
        """(B, Kv, 3 corners, 3): the posed `corner_ids` from the posed `vertex_ids` vertices (B, V', 3)."""
        return vertices[:, self._point_corner_slots]

    def corner_maps(self, vertices: Tensor) -> Tensor:
        """(B, Kv, 3 corners, 3, 3): d point / d corner vertex for each vertex or surface keypoint (see
        `corner_ids`), at the posed `vertex_ids` vertices (B, V', 3). To first order a keypoint moves as
        sum_a maps_a d v_a: a vertex keypoint as its vertex; a surface point on its triangle as
        sum_a b_a v_a + o c / |c| with c = (v1 - v0) x (v2 - v0), so map_a = b_a I + o (I - n n^T) / |c| d c / d v_a."""
        batch, eye = vertices.shape[0], torch.eye(3, dtype=vertices.dtype, device=vertices.device)
        point_maps = torch.zeros(batch, len(self._vertex_slots), 3, 3, 3, dtype=vertices.dtype, device=vertices.device)
        point_maps[:, :, 0] = eye
        if len(self._offsets):
            corners = vertices[:, self._corner_slots]  # (B, S, 3 corners, 3)
            normal, length = _unit_normal(corners)
            edge1, edge2 = skew(corners[:, :, 1] - corners[:, :, 0]), skew(corners[:, :, 2] - corners[:, :, 0])
            d_cross = torch.stack([edge2 - edge1, -edge2, edge1], dim=2)  # d c / d v_a, (B, S, 3, 3, 3)
            project = (eye - normal.unsqueeze(-1) * normal.unsqueeze(-2)) / length[..., None, None]
            surface = (self._barycentric[..., None, None] * eye
                       + self._offsets[:, None, None, None] * (project.unsqueeze(2) @ d_cross))
            point_maps = torch.cat([point_maps, surface], dim=1)
        return point_maps

    def points_jacobian(self, d_joints: Tensor, d_corner_points: Tensor | None) -> Tensor:
        """d points (B, K, 3, N) in keypoint order from d joint keypoints (B, len(joint_ids), 3, N) and
        d vertex and surface keypoints (B, Kv, 3, N) (see `corner_ids`), both w.r.t. the same N unknowns."""
        parts = [d_joints] if d_corner_points is None else [d_joints, d_corner_points]
        return torch.cat(parts, dim=1)[:, self._order]


def sample_surface(model: BodyModel, count: int, offset: float = 0.0, seed: int = 0) -> KeypointSet:
    """`count` surface points spread over the rest mesh (farthest-point sampling of triangle centres),
    each `offset` metres off the skin: a stand-in marker layout for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    vertices = model.v_template.detach().cpu().double().numpy()
    faces = model.faces.cpu().numpy()
    corners = vertices[faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    usable = np.flatnonzero(area > 1e-8)
    if len(usable) < count:
        raise KeypointError(f"the mesh has only {len(usable)} usable triangles, {count} requested")
    centres = corners[usable].mean(1)
    chosen = [int(rng.integers(len(usable)))]
    distance = np.linalg.norm(centres - centres[chosen[0]], axis=1)
    for _ in range(count - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(centres - centres[chosen[-1]], axis=1))
    weights = rng.dirichlet(np.full(3, 4.0), count)  # away from the edges
    points = [
        Keypoint(f"m{i:03d}", "surface", int(usable[face]), tuple(float(w) for w in weights[i]), offset)
        for i, face in enumerate(chosen)
    ]
    return KeypointSet(model, points, source=f"sample_surface({count})")


# --------------------------------------------------------------------------------------------


def _unit_normal(corners: Tensor) -> tuple[Tensor, Tensor]:
    """Unit normals (..., 3) of triangles (..., 3 corners, 3) and the cross products' lengths (...)."""
    cross = torch.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :], dim=-1)
    length = cross.norm(dim=-1)
    return cross / length.unsqueeze(-1), length


def _parse_entry(model: BodyModel, name: str, entry: Mapping, source: str) -> Keypoint:
    where = f"{source}: marker {name!r}"
    if not isinstance(entry, Mapping):
        raise KeypointError(f"{where}: expected an object, got {entry!r}")
    keys = set(entry)
    if keys in ({"joint"}, {"joint", "local"}):
        joint = entry["joint"]
        if joint not in model.joint_names:
            raise KeypointError(f"{where}: unknown joint {joint!r} for a {model.kind.name} model")
        raw = entry.get("local", [0.0, 0.0, 0.0])
        try:
            local = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            local = np.zeros(0)
        if local.shape != (3,) or not np.isfinite(local).all():
            raise KeypointError(f"{where}: 'local' must be 3 numbers (metres), got {raw!r}")
        return Keypoint(name, "joint", model.joint_names.index(joint), local=tuple(float(v) for v in local))
    if keys == {"vertex"}:
        return Keypoint(name, "vertex", _integer(entry["vertex"], f"{where}: 'vertex'"))
    if "triangle" in keys and keys <= {"triangle", "barycentric", "offset"}:
        triangle = _integer(entry["triangle"], f"{where}: 'triangle'")
        raw = entry.get("barycentric", [1 / 3, 1 / 3, 1 / 3])
        try:
            weights = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            weights = np.zeros(0)
        if weights.shape != (3,) or not np.isfinite(weights).all() or (weights < -1e-6).any() \
                or abs(weights.sum() - 1) > 1e-3:
            raise KeypointError(f"{where}: 'barycentric' must be 3 non-negative numbers summing to 1, got {raw!r}")
        offset = entry.get("offset", 0.0)
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
            raise KeypointError(f"{where}: 'offset' must be a number of metres, got {offset!r}")
        weights = np.clip(weights, 0, None) / np.clip(weights, 0, None).sum()
        return Keypoint(name, "surface", triangle, tuple(float(w) for w in weights), float(offset))
    raise KeypointError(
        f"{where}: expected {{'joint': name}}, {{'vertex': index}} or "
        f"{{'triangle': index, 'barycentric': [a, b, c], 'offset': metres}}, got keys {sorted(keys)}"
    )


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise KeypointError(f"{where} must be an integer index, got {value!r}")
    return int(value)


def _check_keypoint(point: Keypoint, model: BodyModel, faces: np.ndarray, source: str) -> None:
    where = f"{source}: keypoint {point.name!r}"
    limits = {"joint": model.num_joints, "vertex": model.num_vertices, "surface": len(faces)}
    if point.kind not in limits:
        raise KeypointError(f"{where}: kind must be 'joint', 'vertex' or 'surface', got {point.kind!r}")
    if not 0 <= point.index < limits[point.kind]:
        what = {"joint": "joint", "vertex": "vertex", "surface": "triangle"}[point.kind]
        raise KeypointError(f"{where}: {what} index {point.index} is outside 0..{limits[point.kind] - 1}")
    if point.kind == "joint" and any(point.local) and int(model.parents[point.index]) < 0:
        raise KeypointError(f"{where}: the root joint has no parent segment to carry a 'local' offset")
    if point.kind == "surface":
        corners = model.v_template[torch.as_tensor(faces[point.index].astype(np.int64), device=model.device)]
        if _unit_normal(corners.double())[1] < 1e-12:
            raise KeypointError(f"{where}: triangle {point.index} is degenerate (zero area), it has no normal")
