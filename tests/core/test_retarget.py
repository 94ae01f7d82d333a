"""core.retarget: a BVH clip written from known body poses and a known shape is recovered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core.body_model import BodyModel
from core.ik import IKWeights
from core.keypoints import EFFECTORS, KeypointSet
from core.mocap.bvh import format_bvh, parse_bvh
from core.mocap.skeletons import SMPL_BODY_JOINT_NAMES, SMPL_BODY_PARENTS, SkeletonPreset, get_preset
from core.retarget import ClipTargets, Retarget, RetargetError, RetargetOptions, bvh_targets, retarget
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle

FRAMES = 12


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel.open_default("adult", dtype=torch.float64)


def _depth_first() -> list[int]:
    order: list[int] = []

    def visit(joint: int) -> None:
        order.append(joint)
        for child in range(22):
            if SMPL_BODY_PARENTS[child] == joint:
                visit(child)

    visit(0)
    return order


def smpl_clip(body: BodyModel, betas: torch.Tensor, seed: int = 0) -> tuple[str, torch.Tensor, torch.Tensor]:
    """BVH text of an SMPL-named skeleton with the shaped body's bones, posed by random body
    rotations; and those rotations (T, 22, 3, 3) and root translations (T, 3)."""
    generator = torch.Generator().manual_seed(seed)
    axis_angles = 0.35 * torch.randn(FRAMES, 22, 3, generator=generator, dtype=torch.float64)
    axis_angles[:, 0] = torch.tensor([0.2, 2.0, -0.1], dtype=torch.float64)  # turned to face sideways
    rotations = axis_angle_to_matrix(axis_angles)
    transl = torch.randn(FRAMES, 3, generator=generator, dtype=torch.float64)
    rest = body.rest_joints(betas.unsqueeze(0))[0, :22].numpy()
    offsets = rest.copy()
    offsets[1:] -= rest[list(SMPL_BODY_PARENTS[1:])]
    order = _depth_first()
    euler = Rotation.from_matrix(rotations.reshape(-1, 3, 3).numpy()).as_euler("XYZ", degrees=True).reshape(FRAMES, 22, 3)
    root_position = rest[0] + transl.numpy()  # the body's pelvis joint, as the BVH root
    columns = [root_position] + [euler[:, joint] for joint in order]
    position = ("Xposition", "Yposition", "Zposition")
    rotation = ("Xrotation", "Yrotation", "Zrotation")
    text = format_bvh(
        [SMPL_BODY_JOINT_NAMES[joint] for joint in order],
        [order.index(SMPL_BODY_PARENTS[joint]) if joint else -1 for joint in order],
        np.where(np.arange(22)[:, None] == 0, 0.0, offsets)[order],
        [position + rotation if joint == 0 else rotation for joint in order],
        np.concatenate(columns, axis=1),
        1 / 30,
    )
    return text, rotations, transl


def test_known_poses_and_shape_are_recovered(body):
    betas = torch.zeros(body.num_betas, dtype=torch.float64)
    betas[:4] = torch.tensor([1.5, -1.0, 0.8, 0.5])
    text, rotations, transl = smpl_clip(body, betas)
    targets = bvh_targets(parse_bvh(text, "known.bvh"), "smpl_like", body)
    assert targets.keypoints.names == tuple(SMPL_BODY_JOINT_NAMES)
    # The start (rotation transfer) already holds the poses: perturb it so the IK has work to do.
    targets.init.rotations[:, 1:22] = targets.init.rotations[:, 1:22] @ axis_angle_to_matrix(
        torch.full((FRAMES, 21, 3), 0.05, dtype=torch.float64))
    # Random rotations bend knees and elbows backwards: no joint limits, or they would be corrected.
    options = RetargetOptions(max_iterations=20, weights=IKWeights(joint_limits=0.0))
    result = retarget(body, targets, options=options)

    assert result.poses.shape == (FRAMES, 3 * body.num_joints)
    assert result.mpjpe_mm < 1.0
    # The source's joints are the body's own: calibration finds small offsets only (what the shape prior keeps
    # the fitted shape from matching: the true betas are large).
    assert max(abs(v) for local in result.offsets.values() for v in local) < 6e-3
    with torch.no_grad():
        truth = body.forward_rotations(rotations, betas.expand(FRAMES, -1), None, transl, return_vertices=False).joints
    fitted = body(betas=result.betas.expand(FRAMES, -1), global_orient=result.poses[:, :3],
                  body_pose=result.poses[:, 3:66], transl=result.transl, return_vertices=False).joints
    assert (fitted[:, :22] - truth).norm(dim=-1).max() < 5e-3
    solved = axis_angle_to_matrix(result.poses.view(FRAMES, -1, 3)[:, :22])
    # Positions fix every rotation but twists about single bones and the leaves (feet, wrists,
    # head); those stay near the 5-degree-off start instead of drifting.
    angle = matrix_to_axis_angle(solved.transpose(-1, -2) @ rotations).norm(dim=-1)
    assert angle.max() < np.radians(8)


def test_fitting_the_shape_beats_the_default_shape(body):
    betas = torch.zeros(body.num_betas, dtype=torch.float64)
    betas[0] = 2.5
    text, _, _ = smpl_clip(body, betas, seed=1)
    targets = bvh_targets(parse_bvh(text, "tall.bvh"), "smpl_like", body)
    fitted = retarget(body, targets)
    fixed = retarget(body, targets, options=RetargetOptions(fit_shape=False))
    assert fitted.mpjpe_mm < 0.5 * fixed.mpjpe_mm
    assert fixed.betas.abs().max() == 0


def test_steps_report_progress_and_refuse_an_unfinished_result(body):
    text, _, _ = smpl_clip(body, torch.zeros(body.num_betas, dtype=torch.float64), seed=2)
    targets = bvh_targets(parse_bvh(text, "steps.bvh"), "smpl_like", body)
    run = Retarget(body, targets, options=RetargetOptions(batch_size=5, fit_shape=False))
    steps = iter(run)
    assert next(steps) == (5, FRAMES)
    with pytest.raises(RetargetError, match="after 5 of 12 frames"):
        run.result()
    assert list(steps) == [(10, FRAMES), (12, FRAMES)]
    assert torch.isfinite(run.result().errors).all()


def test_markers_without_start_poses_need_the_prior(body):
    targets = ClipTargets(KeypointSet.from_joints(body, EFFECTORS), torch.zeros(3, 6, 3, dtype=torch.float64), 30.0)
    with pytest.raises(RetargetError, match="needs the prior"):
        Retarget(body, targets)


def test_cmu_landmarks_leave_out_the_trunk():
    landmarks = get_preset("cmu").landmark_joints()
    assert "left_wrist" in landmarks and "head" in landmarks
    assert not {"pelvis", "spine1", "spine2", "spine3", "neck", "left_collar"} & set(landmarks)
    preset = SkeletonPreset.from_dict(get_preset("cmu").to_dict())
    assert preset.landmark_joints() == landmarks
    with pytest.raises(ValueError, match="unmapped"):
        SkeletonPreset("x", {"pelvis": "a"}, landmarks=("head",))


def test_markers_from_a_known_pose_are_fitted_and_gaps_masked(tmp_path):
    from core.retarget import MIN_MARKERS, marker_targets
    from core.vposer import load_default_vposer

    body32 = BodyModel.open_default("adult")
    prior = load_default_vposer()
    layout = Path(__file__).resolve().parents[2] / "core" / "data" / "markers_plugin_gait_open.json"
    keypoints = KeypointSet.from_json(body32, layout)
    rotations = torch.eye(3).expand(4, body32.num_joints, 3, 3).clone()
    with torch.no_grad():
        latent = 0.7 * torch.randn(4, prior.latent_dim, generator=torch.Generator().manual_seed(7))
        rotations[:, 1:22] = prior.decode_matrix(latent)
        positions = keypoints.evaluate(rotations, None, torch.tensor([[0.3, 0.9, -2.0]]).expand(4, 3)).numpy()
    labels = ["NOT_IN_LAYOUT", *keypoints.names]
    positions = np.concatenate([np.zeros((4, 1, 3)), positions], axis=1)
    positions[1, 5:9] = np.nan  # occluded markers on frame 1
    positions[3, 1 + MIN_MARKERS:] = np.nan
    positions[3, 1:1 + MIN_MARKERS] = np.nan  # frame 3 shows no layout marker at all
    targets = marker_targets(body32, layout, labels, positions, 100.0, source="trial.c3d")
    assert targets.keypoints.names == keypoints.names and list(targets.source_frames) == [0, 1, 2]
    result = retarget(body32, targets, prior)
    assert np.isnan(result.errors[1, 4:8].numpy()).all() and np.isfinite(result.errors[0].numpy()).all()
    assert result.mpjpe_mm < 10
    with pytest.raises(RetargetError, match="only 2 of its markers are in the layout"):
        marker_targets(body32, layout, ["LFHD", "RFHD", "XYZ"], positions[:, :3], 100.0)


# --------------------------------------------------------------------------------------------
# Mappings that cannot work, or fit too badly to be right

WALK = Path(__file__).resolve().parents[2] / "examples" / "cmu_02_01_walk.bvh"


def test_a_preset_without_both_hips_is_refused(body):
    motion = parse_bvh(WALK.read_text(), source="walk.bvh")
    cmu = get_preset("cmu").to_dict()
    cmu["joints"].pop("right_hip")
    cmu["directions"].pop("right_hip")
    cmu["landmarks"].remove("right_hip")
    with pytest.raises(RetargetError, match=r"walk\.bvh: preset 'cmu' maps no right_hip; the body is placed at the "
                                            r"midpoint of the source's hips, so a skeleton preset must map both"):
        bvh_targets(motion, cmu, body)


def _swapped(preset: str, first: str, second: str) -> dict:
    """The preset with the source joints of two body joints exchanged (a mapping mistake)."""
    data = get_preset(preset).to_dict()
    joints = data["joints"]
    joints[first], joints[second] = joints[second], joints[first]
    return data


@pytest.mark.parametrize("mistake, worst", [(("left_shoulder", "right_shoulder"), "left_wrist"),
                                           (("left_elbow", "right_elbow"), "right_wrist")])
def test_a_mismapped_skeleton_is_reported_with_its_worst_joints_and_the_likely_cause(body, mistake, worst):
    motion = parse_bvh(WALK.read_text(), source="walk.bvh")
    frames = np.arange(0, motion.num_frames, 6)
    right = retarget(body, bvh_targets(motion, "cmu", body, frames))
    assert right.mpjpe_mm < 5 and right.fit_warning() is None

    wrong = retarget(body, bvh_targets(motion, _swapped("cmu", *mistake), body, frames))

    per_joint = wrong.per_keypoint_mm()
    ranked = sorted(per_joint, key=per_joint.get, reverse=True)
    assert ranked[0] == worst and per_joint[worst] > 60  # a twisted body, whatever the mean says
    warning = wrong.fit_warning()
    assert warning.startswith(f"poor fit (mean error {wrong.mpjpe_mm:.0f} mm, worst {ranked[0]} "
                              f"{per_joint[ranked[0]]:.0f} mm, {ranked[1]} {per_joint[ranked[1]]:.0f} mm, {ranked[2]} ")
    assert "set the preset's 'rest_frame'" in warning and "check the 'joints' entries of the worst joints" in warning


def _result(errors_mm: list[float], skeleton: bool = True):
    from core.retarget import RetargetResult

    errors = torch.tensor([errors_mm, errors_mm], dtype=torch.float64) / 1000  # two frames, the same errors
    names = tuple(f"joint{k}" for k in range(len(errors_mm)))
    return RetargetResult(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(1), errors, torch.zeros(2), names,
                          30.0, 0.0, skeleton=skeleton)


def test_the_fit_warning_thresholds():
    """Mean above 30 mm, or one keypoint above 60 mm over the clip: hand-picked errors either side."""
    assert _result([29.0, 29.0, 31.0]).fit_warning() is None  # mean 29.67 mm
    assert _result([10.0, 59.0, 20.0]).fit_warning() is None
    assert _result([30.0, 30.0, 31.0]).fit_warning().startswith(
        "poor fit (mean error 30 mm, worst joint2 31 mm, joint0 30 mm, joint1 30 mm;")
    assert _result([10.0, 61.0, 20.0]).fit_warning().startswith("poor fit (mean error 30 mm, worst joint1 61 mm,")
    markers = _result([40.0, 40.0], skeleton=False).fit_warning()
    assert "marker layout does not match the trial" in markers and "rest_frame" not in markers


def test_a_hand_model_is_refused_as_a_retarget_target(tmp_path):
    from core.body_model import DATA_DIR
    from core.retarget import marker_targets
    from core.synthetic_models import write_model

    hand = BodyModel.from_file(write_model(tmp_path / "mano.npz", "mano"))
    motion = parse_bvh(WALK.read_text(), source="walk.bvh")
    message = r"mocap is retargeted onto a body model \(SMPL, SMPL-H, SMPL-X or the open body\), and a mano hand"
    with pytest.raises(RetargetError, match=rf"walk\.bvh: {message}"):
        bvh_targets(motion, "cmu", hand)
    with pytest.raises(RetargetError, match=rf"trial: {message}"):
        marker_targets(hand, DATA_DIR / "markers_plugin_gait_open.json", ["LASI"], np.zeros((2, 1, 3)), 100.0, "trial")
