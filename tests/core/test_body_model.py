"""The LBS body model: an independent numpy reference, the `smplx` package, options and bad inputs.

Everything runs on made-up models in the official layouts (core.synthetic_models) or on tiny
models built here, so no licensed file is needed. `smplx` is only a test reference.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import DATA_DIR, OPEN_BODY_VARIANTS, BodyModel
from core.model_files import BodyModelError, ModelArrays, ModelKind, load_model_arrays
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import make_model_arrays, write_model

F64 = torch.float64


# --------------------------------------------------------------------------- helpers
def _randn(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=generator, dtype=F64)


def _rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """One axis-angle 3-vector -> 3x3 matrix, the textbook way."""
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = axis_angle / angle
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def reference_lbs(
    arrays: ModelArrays, betas: np.ndarray, pose: np.ndarray, transl: np.ndarray, use_posedirs: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Plain per-joint / per-vertex loops in float64: (vertices (V, 3), joints (J, 3)) for one body."""
    num_joints = len(arrays.parents)
    num_verts = arrays.v_template.shape[0]
    v_shaped = arrays.v_template.copy()
    for k, beta in enumerate(betas):
        v_shaped += beta * arrays.shapedirs[:, :, k]
    rest = arrays.J_regressor @ v_shaped
    rotations = [_rodrigues(pose[j]) for j in range(num_joints)]
    # Pose correctives: sum over the (R_j - I) entries of the non-root joints.
    features = np.concatenate([(rotations[j] - np.eye(3)).ravel() for j in range(1, num_joints)])
    v_posed = v_shaped.copy()
    if use_posedirs and arrays.posedirs is not None:
        for v in range(num_verts):
            for p, feature in enumerate(features):
                v_posed[v] += arrays.posedirs[v, :, p] * feature
    # Forward kinematics by walking the parents.
    world = []
    for j in range(num_joints):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        parent = arrays.parents[j]
        local[:3, 3] = rest[j] - (rest[parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    skinning = []
    for j in range(num_joints):
        transform = world[j].copy()
        transform[:3, 3] -= world[j][:3, :3] @ rest[j]
        skinning.append(transform)
    vertices = np.zeros((num_verts, 3))
    for v in range(num_verts):
        blended = sum(arrays.weights[v, j] * skinning[j] for j in range(num_joints))
        vertices[v] = blended[:3, :3] @ v_posed[v] + blended[:3, 3] + transl
    joints = np.array([world[j][:3, 3] + transl for j in range(num_joints)])
    return vertices, joints


def tiny_arrays(seed: int = 0, num_verts: int = 40, num_shape: int = 3) -> ModelArrays:
    """A hand-made 6-joint tree (a branch at joint 1), 40 vertices, shape and pose correctives."""
    rng = np.random.default_rng(seed)
    parents = np.array([-1, 0, 1, 1, 2, 0])
    joints = np.array([[0, 0, 0], [0, 0.3, 0], [0.2, 0.5, 0], [-0.2, 0.5, 0.1], [0.4, 0.6, 0], [0, -0.3, 0.05]])
    owner = rng.integers(0, 6, num_verts)
    v_template = joints[owner] + rng.normal(0, 0.05, (num_verts, 3))
    weights = rng.uniform(0, 1, (num_verts, 6)) * (rng.uniform(0, 1, (num_verts, 6)) < 0.5)
    weights[np.arange(num_verts), owner] += 1.0
    weights /= weights.sum(1, keepdims=True)
    J_regressor = rng.uniform(0, 1, (6, num_verts)) * (rng.uniform(0, 1, (6, num_verts)) < 0.2)
    J_regressor[np.arange(6), np.arange(6)] += 0.5
    J_regressor /= J_regressor.sum(1, keepdims=True)
    kind = ModelKind("tiny", (("global_orient", 1), ("body_pose", 5)), tuple(f"j{i}" for i in range(6)))
    return ModelArrays(
        path="tiny", kind=kind, v_template=v_template, faces=np.zeros((0, 3), dtype=np.int64),
        J_regressor=J_regressor, weights=weights, parents=parents,
        shapedirs=rng.normal(0, 0.05, (num_verts, 3, num_shape)), exprdirs=np.zeros((num_verts, 3, 0)),
        posedirs=rng.normal(0, 0.05, (num_verts, 3, 9 * 5)), hand_components={}, hand_means={},
        joint_names=kind.joint_names,
    )


def small_file(tmp_path: Path, kind: str = "smpl", name: str | None = None, **changes) -> Path:
    """A small valid model file of `kind` with some arrays replaced (None removes a key)."""
    arrays = make_model_arrays(kind, num_vertices=60, num_faces=30, seed=3)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    path = tmp_path / (name or f"{kind}.npz")
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- independent reference
def test_tiny_model_matches_reference_loops():
    arrays = tiny_arrays()
    model = BodyModel(arrays, dtype=F64)
    g = torch.Generator().manual_seed(1)
    betas, pose, transl = _randn(g, 2, 3), _randn(g, 2, 6, 3, scale=0.7), _randn(g, 2, 3)
    out = model(betas=betas, global_orient=pose[:, 0], body_pose=pose[:, 1:].flatten(1), transl=transl)
    for b in range(2):
        vertices, joints = reference_lbs(arrays, betas[b].numpy(), pose[b].numpy(), transl[b].numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), vertices, atol=1e-12)
        np.testing.assert_allclose(out.joints[b].numpy(), joints, atol=1e-12)
        assert not np.allclose(vertices, reference_lbs(arrays, betas[b].numpy(), pose[b].numpy(),
                                                       transl[b].numpy(), use_posedirs=False)[0])


def test_small_mano_file_matches_reference_loops(tmp_path):
    """The same check through a file (16-joint hand tree, 40 vertices, no hand PCA)."""
    arrays = make_model_arrays("mano", num_vertices=40, num_faces=10, seed=5)
    del arrays["hands_components"], arrays["hands_mean"]
    np.savez(tmp_path / "hand.npz", **arrays)
    model = BodyModel.from_file(tmp_path / "hand.npz", dtype=F64)
    g = torch.Generator().manual_seed(2)
    betas, pose, transl = _randn(g, 1, 10), _randn(g, 1, 16, 3, scale=0.5), _randn(g, 1, 3)
    out = model(betas=betas, global_orient=pose[:, 0], hand_pose=pose[:, 1:].flatten(1), transl=transl)
    vertices, joints = reference_lbs(load_model_arrays(tmp_path / "hand.npz"), betas[0].numpy(),
                                     pose[0].numpy(), transl[0].numpy())
    np.testing.assert_allclose(out.vertices[0].numpy(), vertices, atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), joints, atol=1e-12)


def chain_model() -> BodyModel:
    """Joint 0 at the origin, joint 1 at (1, 0, 0); vertices at x = 0, 1, 2 (root, root, child) and
    x = 2 half-and-half."""
    v_template = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 0, 0]])
    weights = np.array([[1.0, 0], [1, 0], [0, 1], [0.5, 0.5]])
    J_regressor = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    kind = ModelKind("chain", (("global_orient", 1), ("body_pose", 1)), ("root", "child"))
    arrays = ModelArrays(
        path="chain", kind=kind, v_template=v_template, faces=np.zeros((0, 3), dtype=np.int64),
        J_regressor=J_regressor, weights=weights, parents=np.array([-1, 0]),
        shapedirs=np.zeros((4, 3, 0)), exprdirs=np.zeros((4, 3, 0)), posedirs=None,
        hand_components={}, hand_means={}, joint_names=kind.joint_names,
    )
    return BodyModel(arrays, dtype=F64)


def test_two_joint_chain_by_hand():
    model = chain_model()
    quarter = torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=F64)
    # Child turned 90 degrees about +Z: (2, 0, 0) swings about (1, 0, 0) to (1, 1, 0).
    out = model(body_pose=quarter, transl=torch.tensor([[0.0, 0.0, 0.5]], dtype=F64))
    expected = [[0, 0, 0.5], [1, 0, 0.5], [1, 1, 0.5], [1.5, 0.5, 0.5]]  # last: mean of (2,0,0) and (1,1,0)
    np.testing.assert_allclose(out.vertices[0].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), [[0, 0, 0.5], [1, 0, 0.5]], atol=1e-12)
    # Root also turned 90 degrees: joint 1 goes to (0, 1, 0), the child tip faces -X: (-1, 1, 0).
    out = model(global_orient=quarter, body_pose=quarter)
    np.testing.assert_allclose(out.vertices[0, 2].numpy(), [-1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(out.joints[0, 1].numpy(), [0, 1, 0], atol=1e-12)
    rz180 = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(out.joint_rotations[0, 1].numpy(), rz180, atol=1e-12)


# --------------------------------------------------------------------------- against the smplx package
try:
    import smplx
    from smplx.utils import Struct
except ImportError:  # a test-only reference; the other tests still run without it
    smplx = None
needs_smplx = pytest.mark.skipif(smplx is None, reason="the smplx package (test reference) is not installed")

# name -> (kind, write_model options, file name)
SYNTHETIC = {
    "smpl": ("smpl", {}, "model.npz"),
    "smplh": ("smplh", {}, "model.npz"),
    "smplx_v11": ("smplx", {"num_shape": 300}, "SMPLX_NEUTRAL.npz"),
    "smplx_v10": ("smplx", {"num_shape": 10}, "SMPLX_NEUTRAL.npz"),
    "mano": ("mano", {}, "MANO_RIGHT.npz"),
}


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            kind, options, filename = SYNTHETIC[name]
            folder = tmp_path_factory.mktemp(name)
            cache[name] = write_model(folder / filename, kind, num_faces=64, seed=11, **options)
        return cache[name]

    return get


def reference_model(kind: str, path: Path, num_betas: int, num_expression: int, use_pca: bool,
                    num_pca_comps: int, flat_hand_mean: bool):
    hands = dict(use_pca=use_pca, num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean)
    if kind == "smplx":
        return smplx.SMPLX(model_path=str(path), ext="npz", num_betas=num_betas,
                           num_expression_coeffs=num_expression, dtype=F64, **hands)
    data = Struct(**dict(np.load(path)))
    if kind == "smpl":
        return smplx.SMPL(model_path=str(path), data_struct=data, num_betas=num_betas, dtype=F64)
    if kind == "smplh":
        return smplx.SMPLH(model_path=str(path), data_struct=data, num_betas=num_betas, dtype=F64, **hands)
    return smplx.MANO(model_path=str(path), data_struct=data, is_rhand=True, num_betas=num_betas, dtype=F64, **hands)


def random_inputs(model: BodyModel, batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"transl": _randn(g, batch, 3)}
    if model.num_betas:
        inputs["betas"] = _randn(g, batch, model.num_betas)
    if model.num_expression:
        inputs["expression"] = _randn(g, batch, model.num_expression)
    for part, count in model.kind.pose_parts:
        pca = model.use_pca and hasattr(model, f"{part}_components")
        inputs[part] = _randn(g, batch, model.num_pca_comps if pca else 3 * count, scale=0.8 if pca else 0.4)
    return inputs


SMPLX_CASES = [
    # (synthetic file, num_betas, num_expression, use_pca, num_pca_comps, flat_hand_mean)
    ("smpl", 10, 0, False, 6, False),
    ("smplh", 10, 0, False, 6, False),
    ("smplh", 10, 0, False, 6, True),
    ("smplh", 10, 0, True, 6, False),
    ("smplh", 8, 0, True, 12, True),
    ("smplx_v11", 300, 100, False, 6, False),
    ("smplx_v11", 16, 50, True, 9, True),
    ("smplx_v10", 10, 10, False, 6, True),
    ("smplx_v10", 10, 10, True, 6, False),
    ("mano", 10, 0, False, 6, False),
    ("mano", 10, 0, True, 8, True),
]


@needs_smplx
@pytest.mark.parametrize("name,num_betas,num_expression,use_pca,num_pca_comps,flat_hand_mean", SMPLX_CASES)
def test_matches_smplx_package(synthetic_file, name, num_betas, num_expression, use_pca, num_pca_comps,
                               flat_hand_mean):
    kind = SYNTHETIC[name][0]
    path = synthetic_file(name)
    options = dict(use_pca=use_pca, num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean)
    ours = BodyModel.from_file(path, num_betas=num_betas, dtype=F64, **options,
                               **({"num_expression": num_expression} if kind == "smplx" else {}))
    theirs = reference_model(kind, path, num_betas, num_expression, **options)
    assert ours.num_betas == theirs.num_betas
    inputs = random_inputs(ours, batch=2, seed=len(name) + num_pca_comps)
    mine = ours(**inputs)
    with torch.no_grad():
        ref = theirs(**inputs)
    joints = ours.num_joints
    assert mine.vertices.shape == ref.vertices.shape
    assert (mine.vertices - ref.vertices).abs().max() < 1e-5
    assert (mine.joints - ref.joints[:, :joints]).abs().max() < 1e-5
    # And at rest with only a translation (hand means still apply unless flat).
    rest = ours(transl=inputs["transl"])
    with torch.no_grad():
        ref_rest = theirs(transl=inputs["transl"], **{k: torch.zeros_like(v) for k, v in inputs.items()
                                                      if k != "transl"})
    assert (rest.vertices - ref_rest.vertices).abs().max() < 1e-5


def _open_body_path(variant: str) -> Path:
    path = DATA_DIR / OPEN_BODY_VARIANTS[variant]
    if not path.is_file():
        pytest.skip(f"the open body file core/data/{path.name} has not been built yet (scripts/build_openbody.py)")
    return path


@needs_smplx
@pytest.mark.parametrize("variant", sorted(OPEN_BODY_VARIANTS))
def test_open_body_matches_smplx_smplh(tmp_path, variant):
    path = _open_body_path(variant)
    ours = BodyModel.open_default(variant, num_betas=10, dtype=F64)
    assert ours.kind.num_joints == 52
    data = dict(np.load(path))
    num_verts = data["v_template"].shape[0]
    for side in "lr":  # smplx.SMPLH always reads hand PCA arrays and pose correctives
        data.setdefault(f"hands_components{side}", np.zeros((45, 45)))
        data.setdefault(f"hands_mean{side}", np.zeros(45))
    data.setdefault("posedirs", np.zeros((num_verts, 3, 9 * 51)))
    np.savez(tmp_path / "openbody_for_smplx.npz", **data)
    theirs = smplx.SMPLH(model_path=str(tmp_path / "openbody_for_smplx.npz"),
                         data_struct=Struct(**dict(np.load(tmp_path / "openbody_for_smplx.npz"))),
                         num_betas=10, use_pca=False, flat_hand_mean=True, dtype=F64)
    inputs = random_inputs(ours, batch=2, seed=7)
    mine = ours(**inputs)
    with torch.no_grad():
        ref = theirs(**inputs)
    assert (mine.vertices - ref.vertices).abs().max() < 1e-5
    assert (mine.joints - ref.joints[:, :52]).abs().max() < 1e-5


def test_open_default_rejects_unknown_variant():
    with pytest.raises(BodyModelError, match="unknown open body variant 'kids'"):
        BodyModel.open_default("kids")


# --------------------------------------------------------------------------- options and paths
def test_pose_correctives_switch(tmp_path):
    with_dirs = small_file(tmp_path, "smpl", name="with.npz")
    without = small_file(tmp_path, "smpl", name="without.npz", posedirs=None)
    on = BodyModel.from_file(with_dirs, dtype=F64)
    off = BodyModel.from_file(with_dirs, use_pose_correctives=False, dtype=F64)
    removed = BodyModel.from_file(without, dtype=F64)
    assert on.use_pose_correctives and not off.use_pose_correctives and not removed.use_pose_correctives
    inputs = random_inputs(on, batch=3, seed=4)
    assert torch.equal(off(**inputs).vertices, removed(**inputs).vertices)
    assert (on(**inputs).vertices - off(**inputs).vertices).abs().max() > 1e-4
    # Correctives vanish at rest; joints never depend on them.
    at_rest = {k: v for k, v in inputs.items() if k in ("betas", "transl")}
    torch.testing.assert_close(on(**at_rest).vertices, off(**at_rest).vertices, rtol=0, atol=1e-14)
    torch.testing.assert_close(on(**inputs).joints, off(**inputs).joints, rtol=0, atol=1e-14)
    zeros = small_file(tmp_path, "smpl", name="zeros.npz", posedirs=np.zeros((60, 3, 207)))
    assert not BodyModel.from_file(zeros).use_pose_correctives


def test_hand_pca_equals_axis_angle_from_components(tmp_path):
    path = small_file(tmp_path, "smplh")
    data = np.load(path)
    pca = BodyModel.from_file(path, use_pca=True, num_pca_comps=5, dtype=F64)
    flat = BodyModel.from_file(path, use_pca=False, flat_hand_mean=True, dtype=F64)
    g = torch.Generator().manual_seed(9)
    left, right, body = _randn(g, 2, 5), _randn(g, 2, 5), _randn(g, 2, 63, scale=0.3)
    # By hand: axis-angle = coefficients @ first components + the file's mean.
    left_aa = left.numpy() @ data["hands_componentsl"][:5].astype(np.float64) + data["hands_meanl"]
    right_aa = right.numpy() @ data["hands_componentsr"][:5].astype(np.float64) + data["hands_meanr"]
    a = pca(body_pose=body, left_hand_pose=left, right_hand_pose=right)
    b = flat(body_pose=body, left_hand_pose=torch.from_numpy(left_aa), right_hand_pose=torch.from_numpy(right_aa))
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=1e-12)
    full = pca.full_pose(pca._check_params({"left_hand_pose": left, "right_hand_pose": right}), 2)
    np.testing.assert_allclose(full[:, 66:111].numpy(), left_aa, atol=1e-12)
    np.testing.assert_allclose(full[:, 111:].numpy(), right_aa, atol=1e-12)


@pytest.mark.parametrize("kind", ["smpl", "smplh", "smplx", "mano"])
def test_joints_only_and_vertex_subset_match_full_path(tmp_path, kind):
    model = BodyModel.from_file(small_file(tmp_path, kind), dtype=F64)
    inputs = random_inputs(model, batch=3, seed=12)
    full = model(**inputs)
    joints_only = model(**inputs, return_vertices=False)
    assert joints_only.vertices is None
    torch.testing.assert_close(joints_only.joints, full.joints, rtol=0, atol=1e-12)
    torch.testing.assert_close(joints_only.joint_rotations, full.joint_rotations, rtol=0, atol=0)
    ids = torch.tensor([0, 7, 7, 31, 59])
    subset = model(**inputs, vertex_ids=ids)
    torch.testing.assert_close(subset.vertices, full.vertices[:, ids], rtol=0, atol=1e-12)
    torch.testing.assert_close(subset.joints, full.joints, rtol=0, atol=1e-12)
    # Without betas the shape term is skipped; it must equal explicit zeros.
    no_betas = {k: v for k, v in inputs.items() if k not in ("betas", "expression")}
    zero_betas = dict(no_betas, betas=torch.zeros(3, model.num_betas, dtype=F64))
    torch.testing.assert_close(model(**no_betas).vertices, model(**zero_betas).vertices, rtol=0, atol=1e-14)


def test_float32_close_to_float64(synthetic_file):
    path = synthetic_file("smpl")
    m64 = BodyModel.from_file(path, dtype=F64)
    m32 = BodyModel.from_file(path, dtype=torch.float32)
    inputs = random_inputs(m64, batch=2, seed=3)
    a = m64(**inputs)
    b = m32(**{k: v.float() for k, v in inputs.items()})
    assert b.vertices.dtype == torch.float32 and b.joints.dtype == torch.float32
    assert (b.vertices.double() - a.vertices).abs().max() < 2e-5
    assert (b.joints.double() - a.joints).abs().max() < 2e-5
    # float64 inputs are cast to the model's dtype.
    assert m32(**inputs).vertices.dtype == torch.float32


def test_betas_and_transl_broadcast_from_batch_one(tmp_path):
    model = BodyModel.from_file(small_file(tmp_path, "smpl"), dtype=F64)
    g = torch.Generator().manual_seed(5)
    betas, transl, body = _randn(g, 1, 10), _randn(g, 1, 3), _randn(g, 4, 69, scale=0.4)
    a = model(betas=betas, transl=transl, body_pose=body)
    b = model(betas=betas.expand(4, -1), transl=transl.expand(4, -1), body_pose=body)
    assert a.vertices.shape == (4, 60, 3)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=0)
    torch.testing.assert_close(a.joints, b.joints, rtol=0, atol=0)
    # Pose parts given as (B, joints, 3) are accepted; a lone betas batch sets B.
    torch.testing.assert_close(model(body_pose=body.view(4, 23, 3)).vertices, model(body_pose=body).vertices)
    assert model(betas=_randn(g, 3, 10)).vertices.shape[0] == 3


def test_forward_rotations_equals_axis_angle_forward(tmp_path):
    model = BodyModel.from_file(small_file(tmp_path, "smpl"), dtype=F64)
    inputs = random_inputs(model, batch=2, seed=21)
    pose = torch.cat([inputs["global_orient"], inputs["body_pose"]], dim=1).view(2, 24, 3)
    a = model(**inputs)
    b = model.forward_rotations(axis_angle_to_matrix(pose), betas=inputs["betas"], transl=inputs["transl"])
    torch.testing.assert_close(b.vertices, a.vertices, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.joints, a.joints, rtol=0, atol=1e-12)
    rest = model.rest_joints(inputs["betas"])
    torch.testing.assert_close(rest, model(betas=inputs["betas"], return_vertices=False).joints, rtol=0, atol=1e-12)
    # shaped_vertices skips skinning; skinning at rest agrees up to the float32 weights' row sums (~1e-7).
    shaped = model.shaped_vertices(inputs["betas"])
    torch.testing.assert_close(shaped, model(betas=inputs["betas"]).vertices, rtol=0, atol=1e-6)


def test_gradients_finite_at_zero_pose(tmp_path):
    model = BodyModel.from_file(small_file(tmp_path, "smplx"), dtype=torch.float32)
    params = {name: torch.zeros(2, 3 * count, requires_grad=True) for name, count in model.kind.pose_parts}
    betas = torch.zeros(2, model.num_betas, requires_grad=True)
    out = model(betas=betas, **params)
    (out.vertices.square().sum() + out.joints.square().sum()).backward()
    for name, tensor in [("betas", betas), *params.items()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
    assert params["body_pose"].grad.abs().sum() > 0


# --------------------------------------------------------------------------- bad model files
J_SMPL, V_SMALL = 24, 60


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"weights": None}, ["missing key(s) weights", "v_template"]),
        ({"v_template": np.zeros((V_SMALL, 2))}, ["'v_template'", "(60, 2)", "expected (*, 3)"]),
        ({"weights": np.full((V_SMALL, J_SMPL - 1), 0.1)}, ["'weights'", "(60, 23)", "expected (60, 24)"]),
        ({"J_regressor": np.zeros((J_SMPL + 1, V_SMALL))}, ["'J_regressor'", "(25, 60)", "expected (24, 60)"]),
        ({"shapedirs": np.zeros((V_SMALL - 1, 3, 10))}, ["'shapedirs'", "(59, 3, 10)", "expected (60, 3, *)"]),
        ({"posedirs": np.zeros((V_SMALL, 3, 10))}, ["'posedirs'", "(60, 3, 10)", "expected (60, 3, 207)"]),
        ({"f": np.array([[0, 1, 60]])}, ["'f'", "outside 0..59"]),
        ({"f": np.zeros((4, 3))}, ["'f'", "integers"]),
        ({"kintree_table": np.zeros((3, J_SMPL), dtype=np.int64)}, ["'kintree_table'", "expected (2, J)"]),
        ({"v_template": np.full((V_SMALL, 3), "a")}, ["'v_template'", "expected numbers"]),
        ({"model_type": np.array("smplz")}, ["'model_type' is 'smplz'", "smplx"]),
        ({"model_type": np.array("mano")}, ["a mano model has 16 joints", "24"]),
        ({"joint_names": np.array(["a", "b"])}, ["'joint_names' has 2 names for 24 joints"]),
        ({"hands_componentsl": np.zeros((6, 44))}, None),  # ignored: an SMPL file has no hands
    ],
)
def test_bad_array_shapes(tmp_path, changes, expected):
    path = small_file(tmp_path, "smpl", **changes)
    if expected is None:
        BodyModel.from_file(path)
        return
    with pytest.raises(BodyModelError) as info:
        BodyModel.from_file(path)
    message = str(info.value)
    assert str(path) in message
    for piece in expected:
        assert piece in message


def test_kintree_parent_after_child(tmp_path):
    kintree = make_model_arrays("smpl", num_vertices=V_SMALL, num_faces=30)["kintree_table"].copy()
    kintree[0, 4] = 10  # the left knee hangs from a later joint
    with pytest.raises(BodyModelError, match=r"kintree_table' gives joint\(s\) \[4\] a parent that is not an earlier"):
        BodyModel.from_file(small_file(tmp_path, kintree_table=kintree))
    kintree = make_model_arrays("smpl", num_vertices=V_SMALL, num_faces=30)["kintree_table"].copy()
    kintree[1] = kintree[1][::-1]
    with pytest.raises(BodyModelError, match="row 1 must list joints 0..J-1 in order"):
        BodyModel.from_file(small_file(tmp_path, kintree_table=kintree))


def test_unknown_joint_count(tmp_path):
    kintree = np.stack([np.arange(-1, 9), np.arange(10)])
    with pytest.raises(BodyModelError) as info:
        BodyModel.from_file(small_file(tmp_path, kintree_table=kintree))
    assert "10 joints in 'kintree_table' matches no known model" in str(info.value)
    assert "SMPL 24, SMPL-H 52, SMPL-X 55, MANO 16" in str(info.value)


def test_pkl_path_says_how_to_convert(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"not read at all")
    with pytest.raises(BodyModelError) as info:
        BodyModel.from_file(path)
    assert "SMPL_NEUTRAL.pkl" in str(info.value)
    assert "scripts/convert_model_pkl.py" in str(info.value) and ".npz" in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(BodyModelError, match="no such model file"):
        BodyModel.from_file(tmp_path / "absent.npz")
    text = tmp_path / "text.npz"
    text.write_text("this is not a zip archive at all")
    with pytest.raises(BodyModelError, match="text.npz: not a readable .npz file"):
        BodyModel.from_file(text)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(small_file(tmp_path, "smpl").read_bytes()[:2000])
    with pytest.raises(BodyModelError, match="truncated.npz: not a readable .npz file"):
        BodyModel.from_file(truncated)
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(BodyModelError, match="single.npz: holds a single .npy array"):
        BodyModel.from_file(single)


def test_object_arrays_are_refused(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(3), "text"
    with pytest.raises(BodyModelError, match="key 'weights' is stored as Python objects"):
        BodyModel.from_file(small_file(tmp_path, weights=ragged))
    # An object array under a key the model never reads is left alone (never unpickled).
    assert BodyModel.from_file(small_file(tmp_path, name="extra.npz", bs_style=ragged)).num_joints == 24


@pytest.mark.parametrize("key", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights"])
def test_non_finite_arrays_in_file(tmp_path, key):
    array = make_model_arrays("smpl", num_vertices=V_SMALL, num_faces=30, seed=3)[key].copy()
    array.flat[7] = np.inf if key == "weights" else np.nan
    with pytest.raises(BodyModelError, match=f"key '{key}' contains NaN or infinite values"):
        BodyModel.from_file(small_file(tmp_path, **{key: array}))


def test_bad_hand_pca_arrays(tmp_path):
    with pytest.raises(BodyModelError, match=r"'hands_componentsl' has shape \(6, 44\), expected \(\*, 45\)"):
        BodyModel.from_file(small_file(tmp_path, "smplh", hands_componentsl=np.zeros((6, 44))))
    with pytest.raises(BodyModelError, match=r"'hands_meanr' has shape \(44,\), expected \(45\)"):
        BodyModel.from_file(small_file(tmp_path, "smplh", hands_meanr=np.zeros(44)))


def test_construction_options(tmp_path):
    smpl = small_file(tmp_path, "smpl")
    with pytest.raises(BodyModelError, match="num_betas=11, but the file has 10 components"):
        BodyModel.from_file(smpl, num_betas=11)
    with pytest.raises(BodyModelError, match="num_expression=5, but the file has 0 components"):
        BodyModel.from_file(smpl, num_expression=5)
    with pytest.raises(BodyModelError, match="num_betas=-1"):
        BodyModel.from_file(smpl, num_betas=-1)
    with pytest.raises(BodyModelError, match="use_pca=True but the file has no hand PCA components"):
        BodyModel.from_file(smpl, use_pca=True)
    no_pca = small_file(tmp_path, "smplh", name="nopca.npz", hands_componentsl=None, hands_componentsr=None)
    with pytest.raises(BodyModelError, match="nopca.npz: use_pca=True but the file has no hand PCA"):
        BodyModel.from_file(no_pca, use_pca=True)
    with pytest.raises(BodyModelError, match="num_pca_comps must be in 1..45, got 46"):
        BodyModel.from_file(small_file(tmp_path, "smplh"), use_pca=True, num_pca_comps=46)
    short = small_file(tmp_path, "smplh", name="short.npz")
    arrays = dict(np.load(short))
    arrays["hands_componentsl"] = arrays["hands_componentsl"][:6]
    np.savez(short, **arrays)
    with pytest.raises(BodyModelError, match="short.npz: num_pca_comps=12, but the file has 6 hand components"):
        BodyModel.from_file(short, use_pca=True, num_pca_comps=12)
    with pytest.raises(BodyModelError, match="dtype must be torch.float32 or torch.float64"):
        BodyModel.from_file(smpl, dtype=torch.float16)
    assert BodyModel.from_file(smpl, num_betas=0)(betas=torch.zeros(1, 0)).vertices.shape == (1, 60, 3)


# --------------------------------------------------------------------------- bad forward() arguments
@pytest.fixture(scope="module")
def smplh_model(tmp_path_factory):
    path = small_file(tmp_path_factory.mktemp("smplh"), "smplh")
    return BodyModel.from_file(path)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"jaw_pose": torch.zeros(1, 3)}, "'jaw_pose' is not a parameter of a smplh model"),
        ({"expression": torch.zeros(1, 10)}, "'expression' has shape (1, 10), expected (batch, 0)"),
        ({"hand_pose": torch.zeros(1, 45)}, "'hand_pose' is not a parameter of a smplh model"),
        ({"body_pose": torch.zeros(1, 60)}, "'body_pose' has shape (1, 60), expected (batch, 63)"),
        ({"body_pose": torch.zeros(63)}, "'body_pose' has shape (63,), expected (batch, 63)"),
        ({"left_hand_pose": torch.zeros(1, 6)}, "'left_hand_pose' has shape (1, 6), expected (batch, 45)"),
        ({"betas": torch.zeros(1, 16)}, "'betas' has shape (1, 16), expected (batch, 10)"),
        ({"transl": torch.zeros(2, 2)}, "'transl' has shape (2, 2), expected (batch, 3)"),
        ({"global_orient": torch.tensor([[0.0, float("nan"), 0.0]])}, "'global_orient' contains NaN or infinite"),
        ({"betas": torch.full((1, 10), float("inf"))}, "'betas' contains NaN or infinite"),
        ({"transl": np.array([[0.0, 0.0, np.nan]])}, "'transl' contains NaN or infinite"),
        ({"body_pose": torch.zeros(2, 63), "global_orient": torch.zeros(3, 3)},
         "batch sizes disagree (global_orient=3, body_pose=2)"),
        ({"body_pose": torch.zeros(1, 63), "global_orient": torch.zeros(3, 3)},
         "pose parameters must all have batch 3"),
        ({"body_pose": torch.zeros(3, 63), "transl": torch.zeros(2, 3)}, "batch sizes disagree"),
    ],
)
def test_bad_forward_arguments(smplh_model, kwargs, expected):
    with pytest.raises(BodyModelError) as info:
        smplh_model(**kwargs)
    assert expected in str(info.value)


def test_bad_arguments_other_paths(smplh_model, tmp_path):
    with pytest.raises(BodyModelError, match="vertex_ids must lie in 0..59"):
        smplh_model(vertex_ids=torch.tensor([0, 60]))
    with pytest.raises(BodyModelError, match="'betas' contains NaN"):
        smplh_model.rest_joints(torch.full((1, 10), float("nan")))
    with pytest.raises(BodyModelError, match="'body_pose' is not a parameter of a mano model"):
        BodyModel.from_file(small_file(tmp_path, "mano"))(body_pose=torch.zeros(1, 63))
    pca = BodyModel.from_file(small_file(tmp_path, "smplh"), use_pca=True, num_pca_comps=6)
    with pytest.raises(BodyModelError, match=r"'right_hand_pose' has shape \(1, 45\), expected \(batch, 6\)"):
        pca(right_hand_pose=torch.zeros(1, 45))


# --------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_matches_cpu(synthetic_file):
    path = synthetic_file("smplx_v10")
    cpu = BodyModel.from_file(path, dtype=F64)
    gpu = BodyModel.from_file(path, dtype=F64).to("cuda")
    assert gpu.device.type == "cuda"
    inputs = random_inputs(cpu, batch=4, seed=8)
    a = cpu(**inputs)
    b = gpu(**{k: v.cuda() for k, v in inputs.items()})
    torch.testing.assert_close(b.vertices.cpu(), a.vertices, rtol=0, atol=1e-10)
    torch.testing.assert_close(b.joints.cpu(), a.joints, rtol=0, atol=1e-10)
    c = gpu(**{k: v.cuda() for k, v in inputs.items()}, return_vertices=False)
    torch.testing.assert_close(c.joints.cpu(), a.joints, rtol=0, atol=1e-10)


@cuda
def test_cuda_device_mismatch_is_reported(tmp_path):
    model = BodyModel.from_file(small_file(tmp_path, "smpl")).to("cuda")
    with pytest.raises(BodyModelError, match="'body_pose' is on cpu, but the model is on cuda"):
        model(body_pose=torch.zeros(1, 69))


def test_small_and_large_batches_pose_alike_and_body_joints_alone():
    """Forward kinematics jumps pointers for small batches and goes depth by depth for large ones;
    both give the same joints, and posing only the 22 body joints gives those joints unchanged."""
    body = BodyModel.open_default(dtype=torch.float64)
    rotations = axis_angle_to_matrix(0.5 * torch.randn(2, body.num_joints, 3, dtype=torch.float64,
                                                       generator=torch.Generator().manual_seed(8)))
    small = body.forward_rotations(rotations, return_vertices=False)
    large = body.forward_rotations(rotations.repeat(100, 1, 1, 1), return_vertices=False)
    torch.testing.assert_close(large.joints[:2], small.joints, atol=1e-12, rtol=0)
    torch.testing.assert_close(large.joint_rotations[:2], small.joint_rotations, atol=1e-12, rtol=0)
    for batch in (rotations, rotations.repeat(100, 1, 1, 1)):
        prefix = body.forward_rotations(batch[:, :22], return_vertices=False)
        torch.testing.assert_close(prefix.joints[:2], small.joints[:, :22], atol=1e-12, rtol=0)
