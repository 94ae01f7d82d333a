"""Generate poses from the prior: Sample Poses keys random body poses as a new action; In-betweens
fills the frames between two poses of the body's action by walking the prior's latent space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bpy
import numpy as np

from ...core.model_files import SMPL_BODY_JOINTS
from .. import bridge
from ..prior import load_prior
from ..properties import active_body
from ..reporting import reports_errors
from .io import poll_body

if TYPE_CHECKING:
    import torch

    from ...core.vposer import VPoser

# The pelvis and the 21 joints the prior poses (core.keypoints.NUM_BODY_JOINTS), from a core module
# without torch: polls run on every redraw and must work without it.
BODY_JOINTS = len(SMPL_BODY_JOINTS)


def _poll_prior_body(cls: type[bpy.types.Operator], context: bpy.types.Context, need_action: bool) -> bool:
    """poll_body plus what the prior needs: a full body skeleton (not a hand model) in Object or
    Pose Mode, and, to fill in between poses, an action to fill."""
    if not poll_body(cls, context, posing=True):
        return False
    rig = active_body(context)
    if len(rig.vposer_body.joints) < BODY_JOINTS:
        cls.poll_message_set(f"{rig.name} is not a full body: the pose prior poses the 21 body joints")
        return False
    if need_action and not (rig.animation_data and rig.animation_data.action and rig.animation_data.action_slot):
        cls.poll_message_set(f"{rig.name} has no action: key a pose on each side of the frames to fill")
        return False
    return True


def _prior_for(context: bpy.types.Context, rig: bpy.types.Object) -> VPoser:
    """The prior on the body model's device and dtype; called before anything changes, so what it
    raises (the body model file, the prior) is reported by reports_errors and the run cancelled."""
    return load_prior(context, like=rig.vposer_body.body_model())


class VPOSER_OT_sample_poses(bpy.types.Operator):
    """Key random body poses drawn from the pose prior onto the active body, as a new action"""

    bl_idname = "vposer.sample_poses"
    bl_label = "Sample Poses"
    bl_options = {"REGISTER", "UNDO"}

    count: bpy.props.IntProperty(name="Count", description="How many poses to key", default=10, min=1, soft_max=200)
    spacing: bpy.props.IntProperty(
        name="Spacing", description="Frames from one pose to the next", default=10, min=1, soft_max=100
    )
    seed: bpy.props.IntProperty(
        name="Seed", description="Random seed: the same seed gives the same poses", default=0, min=0
    )
    temperature: bpy.props.FloatProperty(
        name="Temperature",
        description="Spread of the draws: below 1 tamer poses, 0 only the prior's mean pose",
        default=1.0,
        min=0.0,
        soft_max=2.0,
    )
    keep_root: bpy.props.BoolProperty(
        name="Keep Root",
        description="Keep the current root orientation and location in every pose "
        "(off: the model's upright rest orientation and placement)",
        default=True,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_prior_body(cls, context, need_action=False)

    @reports_errors("Cannot sample poses for {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ...core.rotations import axis_angle_to_quaternion

        rig = active_body(context)
        prior = _prior_for(context, rig)
        joint_names = rig.vposer_body.joint_names()
        current, location = bridge.get_pose(rig, joint_names)
        samples = prior.sample(self.count, seed=self.seed, temperature=self.temperature).cpu().double()
        # Hands, face and the rest keep their current rotations in every pose.
        quaternions = np.repeat(current[None], self.count, axis=0)
        quaternions[:, 1:BODY_JOINTS] = axis_angle_to_quaternion(samples.unflatten(-1, (-1, 3))).numpy()
        translations = np.repeat(location[None], self.count, axis=0)
        if not self.keep_root:
            quaternions[:, 0] = (1.0, 0.0, 0.0, 0.0)
            translations[:] = 0.0

        previous = bridge.keep_current_action(rig)
        start = context.scene.frame_current
        action = bridge.write_action(
            rig, joint_names, quaternions, translations, start, f"{rig.name} Samples", frame_step=self.spacing
        )
        kept = f"; the previous action '{previous.name}' is kept with a fake user" if previous else ""
        self.report(
            {"INFO"},
            f"Keyed {self.count} sampled poses (seed {self.seed}) on frames {start}-"
            f"{start + (self.count - 1) * self.spacing} as action '{action.name}'{kept}",
        )
        return {"FINISHED"}


class VPOSER_OT_inbetweens(bpy.types.Operator):
    """Fill the frames between two poses of the active body's action with poses that follow the
    pose prior's latent space from one to the other"""

    bl_idname = "vposer.inbetweens"
    bl_label = "In-betweens"
    bl_options = {"REGISTER", "UNDO"}

    use_frames: bpy.props.BoolProperty(
        name="Between Frames",
        description="Fill between Frame A and Frame B (off: between the keyed poses around the current frame, "
        "the last one at or before it and the first one after it)",
        default=False,
    )
    frame_a: bpy.props.IntProperty(name="Frame A", description="The first pose's frame", default=1)
    frame_b: bpy.props.IntProperty(name="Frame B", description="The second pose's frame", default=11)
    replace_existing: bpy.props.BoolProperty(
        name="Replace Existing Keys",
        description="Delete the body's keys between the two frames and fill over them (off: refuse when there are any)",
        default=False,
    )
    # The span a run around the current frame resolved, kept on the operator (not remembered for the
    # next run: SKIP_SAVE) so that a redo (the Adjust Last Operation panel, F9) fills the same span
    # with the stored settings, even where the keys around the current frame have changed since.
    filled_span: bpy.props.IntVectorProperty(size=2, default=(0, 0), options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_prior_body(cls, context, need_action=True)

    @reports_errors("Cannot fill in between poses of {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        rig = active_body(context)
        joint_names = rig.vposer_body.joint_names()[:BODY_JOINTS]  # hands and face keep their curves
        span = self._span(context, rig, joint_names)
        if span is None:
            return {"CANCELLED"}
        start, end = span
        keyed = bridge.keyed_frames(rig, joint_names)
        in_the_way = keyed[(keyed > start) & (keyed < end)]
        if in_the_way.size and not self.replace_existing:
            shown = ", ".join(f"{frame:g}" for frame in in_the_way[:6]) + (", ..." if in_the_way.size > 6 else "")
            self.report(
                {"ERROR"},
                f"{rig.name} already has keys between frames {start} and {end} (on frames {shown}): "
                "turn on Replace Existing Keys to overwrite them",
            )
            return {"CANCELLED"}
        prior = _prior_for(context, rig)

        ends = bridge.read_action(rig, joint_names, np.array([start, end]))
        quaternions, translations = _inbetween_poses(prior, *ends, steps=end - start + 1)
        bridge.delete_keys_between(rig, joint_names, start, end)
        bridge.insert_keys(rig, joint_names, quaternions, translations, np.arange(start, end + 1))
        replaced = f", replacing its keys on {in_the_way.size} frames" if in_the_way.size else ""
        self.report({"INFO"}, f"Keyed {rig.name} on frames {start + 1}-{end - 1} between its poses at "
                              f"{start} and {end}{replaced}")
        return {"FINISHED"}

    def _span(
        self, context: bpy.types.Context, rig: bpy.types.Object, joint_names: list[str]
    ) -> tuple[int, int] | None:
        """Frames A and B (the options', the span an earlier run of this operator resolved, or the
        body's keys around the current frame), or None once the operator has reported why there is
        nothing to fill."""
        keyed = np.rint(bridge.keyed_frames(rig, joint_names))
        if not keyed.size:
            self.report({"ERROR"}, f"{rig.name} has no keyed body pose: key a pose on each side of the frames to fill")
            return None
        if self.use_frames:
            return self._chosen_span(rig, keyed)
        if self.filled_span[1] - self.filled_span[0] >= 2:  # a redo: the span the first run filled
            return self.filled_span[0], self.filled_span[1]
        current = context.scene.frame_current
        before, after = keyed[keyed <= current], keyed[keyed > current]
        if not (before.size and after.size):
            self.report(
                {"ERROR"},
                f"{rig.name} needs a keyed pose at or before frame {current} and one after it "
                "(or turn on Between Frames and set Frame A and Frame B)",
            )
            return None
        start, end = int(before[-1]), int(after[0])
        if end - start < 2:
            self.report({"ERROR"}, f"No frames to fill around frame {current}: {rig.name}'s keys on frames "
                                   f"{start} and {end} are next to each other")
            return None
        self.filled_span = (start, end)
        return start, end

    def _chosen_span(self, rig: bpy.types.Object, keyed: np.ndarray) -> tuple[int, int] | None:
        """Frame A and Frame B, if they leave frames to fill and lie within the body's keyed poses
        (beyond its last key an action only holds that pose: the fill would key copies of it)."""
        start, end = self.frame_a, self.frame_b
        if end - start < 2:
            self.report({"ERROR"}, f"No frames to fill between frame {start} and frame {end}: "
                                   "Frame B must come at least 2 frames after Frame A")
            return None
        first, last = int(keyed[0]), int(keyed[-1])
        if start < first or end > last:
            self.report(
                {"ERROR"},
                f"Frames {start}-{end} reach outside {rig.name}'s keyed poses (frames {first}-{last}): "
                f"beyond its keys the action only repeats the nearest pose. Choose Frame A and Frame B "
                f"from {first} to {last}",
            )
            return None
        return start, end


def _inbetween_poses(
    prior: VPoser, quaternions: np.ndarray, translations: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """`steps` evenly spaced poses from the first to the second of two poses ((2, 22, 4) root and
    body quaternions, (2, 3) root locations), both ends included.

    The 21 body joints follow the prior's latent interpolation between the two poses' encodings
    (the encoder means). The decoder does not reproduce a pose exactly (a few degrees per joint),
    so each joint's residual rotation at the two ends is slerped along the path: it starts and ends
    exactly on the keyed poses instead of jumping at the keys. The root's rotation is slerped and
    its location interpolated linearly. Signs continue from the first pose's quaternions, so new
    linear keys join the existing ones the short way round.
    """
    import torch

    from ...core.rotations import matrix_to_quaternion, quaternion_to_matrix

    quaternions = quaternions / np.linalg.norm(quaternions, axis=-1, keepdims=True)  # curves may be hand-edited
    keyed = quaternion_to_matrix(torch.from_numpy(quaternions))
    fractions = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    parameter = next(prior.parameters())
    with torch.no_grad():
        latents = prior.encode_matrix(keyed[:, 1:].to(parameter))
        decoded = prior.decode_matrix(prior.interpolate(latents[0], latents[1], steps)).cpu().double()
    residuals = decoded[[0, -1]].transpose(-1, -2) @ keyed[:, 1:]
    body = decoded @ _slerp(residuals[0], residuals[1], fractions)
    root = _slerp(keyed[0, 0], keyed[1, 0], fractions)
    path = matrix_to_quaternion(torch.cat([root[:, None], body], dim=1)).numpy()
    path[0] = quaternions[0]  # the same rotation; its keyed sign anchors the others'
    locations = np.outer(1 - fractions.numpy(), translations[0]) + np.outer(fractions.numpy(), translations[1])
    return bridge.continuous_quaternions(path), locations


def _slerp(start: torch.Tensor, end: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from start to end along the shortest arc, one set per fraction:
    start exp(f log(start^T end)), (F,) -> (F, ..., 3, 3)."""
    from ...core.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    relative = matrix_to_axis_angle(start.transpose(-1, -2) @ end)
    return start @ axis_angle_to_matrix(fractions.view(-1, *[1] * relative.dim()) * relative)


CLASSES: tuple[type, ...] = (VPOSER_OT_sample_poses, VPOSER_OT_inbetweens)
