"""Build the Vicon Plug-in Gait full-body marker layout on the open adult body.

Each marker is placed by an anatomical rule: an anchor point inside the body (a joint, or a point
part-way between two joints, plus a small shift in metres) and a direction; a ray from the anchor
along that direction meets the skin of the rest mesh (T-pose, model space: X to the body's left,
Y up, Z forward), and the marker is that surface point (triangle + barycentric coordinates) lifted
OFFSET metres along the triangle's normal, as a marker on its 14 mm ball sits off the skin. Rules
are written for the left side and the midline; right markers use the mirrored rule (x -> -x), so
the layout is left/right symmetric. Plug-in Gait's deliberate asymmetries (RBAK alone, RUPA/RTHI/
RTIB at other heights than their left partners) only help a labelling system tell the sides apart;
fitting does not need them, so only RBAK is kept (on the right scapula, without a partner).

In the rest T-pose the palms face down and elbows bend forward, so the lateral epicondyle and
the dorsal forearm and hand face up (+Y), the thumb side of the wrist faces forward (+Z).

    python scripts/make_marker_layout.py            # writes core/data/markers_plugin_gait_open.json
    python scripts/make_marker_layout.py --plot     # also docs/images/markers_plugin_gait.png

A layout for another marker set starts from one trial (a C3D take) that shares at least six
markers with a known layout (--base, default the Plug-in Gait one): those give a rough fit of the
body on spread frames (shape, poses, and their own places calibrated to the subject), then every
marker of the trial is put at its nearest body surface point, carried to the rest body and
averaged over the frames (core.markers.markers_from_poses). Check the result, rename what needs
it, and calibrate it on the subject's takes as any layout (scripts/retarget.py):

    python scripts/make_marker_layout.py --trial TRIAL.c3d --out my_markers.json [--up y] [--units mm]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.body_model import BodyModel  # noqa: E402

OFFSET = 0.01  # metres off the skin: the centre of a 14 mm marker on its base
OUTPUT = REPO / "core" / "data" / "markers_plugin_gait_open.json"
FIGURE = REPO / "docs" / "images" / "markers_plugin_gait.png"
FRONT_HEAD = math.radians(35)  # head markers sit this far round from straight ahead (or straight back)


@dataclass(frozen=True)
class Rule:
    """Anchor = joint + fraction * (toward - joint) + shift; the marker is where a ray from the
    anchor along `direction` leaves the skin. `level_with` replaces the anchor's height with
    another marker's (the heel marker level with the toe marker, both off the skin)."""

    joint: str
    direction: tuple[float, float, float]
    toward: str | None = None
    fraction: float = 0.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    level_with: str | None = None


FRONT = (math.sin(FRONT_HEAD), 0.0, math.cos(FRONT_HEAD))
BACK = (math.sin(FRONT_HEAD), 0.0, -math.cos(FRONT_HEAD))

# Left side and midline, in Plug-in Gait order; "L..." rules are mirrored into "R...".
RULES: dict[str, Rule] = {
    "LFHD": Rule("head", FRONT, shift=(0, 0.08, 0)),  # over the left temple
    "LBHD": Rule("head", BACK, shift=(0, 0.08, 0)),  # back of the head, level with the front markers
    "C7": Rule("neck", (0, 0, -1)),  # spinous process of the 7th cervical vertebra
    "T10": Rule("spine2", (0, 0, -1), "spine3", 0.7),  # 10th thoracic spinous process, level with STRN
    "CLAV": Rule("left_collar", (0, 0, 1), "right_collar", 0.5, (0, 0.01, 0)),  # jugular notch
    "STRN": Rule("spine2", (0, 0, 1), "spine3", 0.7),  # xiphoid process of the sternum
    "RBAK": Rule("spine3", (0, 0, -1), "neck", 0.25, (-0.08, 0, 0)),  # middle of the right scapula
    "LSHO": Rule("left_shoulder", (0, 1, 0), shift=(-0.01, 0, 0)),  # acromio-clavicular joint
    "LUPA": Rule("left_shoulder", (0, 1, -0.3), "left_elbow", 0.5),  # lateral upper arm, half-way
    "LELB": Rule("left_elbow", (0, 1, 0)),  # lateral epicondyle, on the elbow's flexion axis
    "LFRM": Rule("left_elbow", (0, 1, -0.3), "left_wrist", 0.5),  # dorsal forearm, half-way
    "LWRA": Rule("left_wrist", (0, 0, 1)),  # wrist bar, thumb side (radial styloid)
    "LWRB": Rule("left_wrist", (0, 0, -1)),  # wrist bar, little-finger side (ulnar styloid)
    "LFIN": Rule("left_wrist", (0, 1, 0), "left_index1", 0.8),  # back of the hand below the 2nd knuckle
    "LASI": Rule("left_hip", (0.15, 0, 1), shift=(0, 0.06, 0)),  # anterior superior iliac spine
    "LPSI": Rule("pelvis", (0, 0, -1), shift=(0.045, 0.07, 0)),  # posterior superior iliac spine
    "LTHI": Rule("left_hip", (1, 0, 0), "left_knee", 0.6),  # lateral thigh, lower third
    "LKNE": Rule("left_knee", (1, 0, 0)),  # lateral femoral epicondyle, on the knee's flexion axis
    "LTIB": Rule("left_knee", (1, 0, 0), "left_ankle", 0.6),  # lateral shank, lower third
    "LANK": Rule("left_ankle", (1, 0, 0)),  # lateral malleolus
    "LTOE": Rule("left_foot", (0, 1, 0), shift=(-0.01, 0, -0.01)),  # dorsum over the 2nd metatarsal head
    "LHEE": Rule("left_ankle", (0, 0, -1), level_with="LTOE"),  # calcaneus, level with the toe marker
}


def mirrored(rule: Rule) -> Rule:
    """The same rule on the other side of the body (x -> -x, left joints -> right joints)."""
    flip = np.array([-1.0, 1.0, 1.0])

    def side(joint: str | None) -> str | None:
        return None if joint is None else joint.replace("left_", "right_")

    level_with = None if rule.level_with is None else "R" + rule.level_with[1:]
    return Rule(side(rule.joint), tuple(flip * rule.direction), side(rule.toward), rule.fraction,
                tuple(flip * rule.shift), level_with)


def all_rules() -> dict[str, Rule]:
    """Left, midline and mirrored right rules, in Plug-in Gait order (left before right)."""
    rules: dict[str, Rule] = {}
    for name, rule in RULES.items():
        rules[name] = rule
        if name.startswith("L"):
            rules["R" + name[1:]] = mirrored(rule)
    return rules


def cast(origin: np.ndarray, direction: np.ndarray, corners: np.ndarray) -> tuple[int, np.ndarray]:
    """First triangle hit by the ray origin + t * direction (t > 0): its index and barycentrics
    (Moller-Trumbore, vectorised over all triangles)."""
    edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    p = np.cross(direction, edge2)
    det = np.einsum("ij,ij->i", edge1, p)
    usable = np.abs(det) > 1e-12
    inverse = np.where(usable, 1.0 / np.where(usable, det, 1.0), 0.0)
    s = origin - corners[:, 0]
    u = np.einsum("ij,ij->i", s, p) * inverse
    q = np.cross(s, edge1)
    v = (q @ direction) * inverse
    t = np.einsum("ij,ij->i", edge2, q) * inverse
    hit = usable & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
    if not hit.any():
        raise RuntimeError(f"the ray from {origin} along {direction} misses the mesh")
    face = int(np.flatnonzero(hit)[np.argmin(t[hit])])
    return face, np.array([1.0 - u[face] - v[face], u[face], v[face]])


def build_layout(model: BodyModel) -> dict[str, dict]:
    """name -> {"triangle", "barycentric", "offset"} for every rule, on the rest mesh."""
    vertices = model.v_template.detach().double().numpy()
    corners = vertices[model.faces.numpy()]
    joints = model.rest_joints().detach().double().numpy().reshape(-1, 3)
    index = {name: i for i, name in enumerate(model.joint_names)}
    centres: dict[str, np.ndarray] = {}
    layout: dict[str, dict] = {}
    for name, rule in all_rules().items():
        start = joints[index[rule.joint]]
        end = joints[index[rule.toward]] if rule.toward else start
        anchor = start + rule.fraction * (end - start) + np.asarray(rule.shift)
        if rule.level_with:
            anchor[1] = centres[rule.level_with][1]
        direction = np.asarray(rule.direction, dtype=np.float64)
        face, weights = cast(anchor, direction / np.linalg.norm(direction), corners)
        normal = np.cross(corners[face, 1] - corners[face, 0], corners[face, 2] - corners[face, 0])
        if normal @ direction <= 0:
            raise RuntimeError(f"{name}: the ray leaves the skin through an inward-facing triangle {face}")
        centres[name] = weights @ corners[face] + OFFSET * normal / np.linalg.norm(normal)
        layout[name] = {"triangle": face, "barycentric": [round(float(w), 6) for w in weights], "offset": OFFSET}
    return layout


def plot(model: BodyModel, layout: dict[str, dict], out: Path) -> None:
    """The markers on the rest body from the front, the back and the left, labelled where seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.keypoints import KeypointSet
    from plot_body import draw_mesh, finish

    markers = KeypointSet.from_dict(model, layout, source="layout")
    with torch.no_grad():
        rest = torch.eye(3, dtype=model.dtype).expand(1, model.num_joints, 3, 3)
        points = markers.evaluate(rest)[0].numpy()
    vertices = model.v_template.detach().double().numpy()
    # Camera frames: rows are the screen right, the screen up and the direction towards the camera.
    cameras = {
        "front": np.eye(3),
        "back": np.diag([-1.0, 1.0, -1.0]),
        "left side": np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]),
        "top (front down)": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    }
    fig, axes = plt.subplot_mosaic([[0, 1, 2], [3, 3, 3]], figsize=(14, 11),
                                   gridspec_kw={"width_ratios": [1.9, 1.9, 0.7], "height_ratios": [2.2, 1]})
    for ax, (title, camera) in zip(axes.values(), cameras.items()):
        seen = vertices @ camera.T
        draw_mesh(ax, seen, model.faces.numpy(), "front")
        for name, (x, y, depth) in zip(markers.names, points @ camera.T):
            if _hidden(np.array([x, y, depth]), seen[model.faces.numpy()]):
                continue
            ax.scatter(x, y, s=14, color="tab:red", zorder=3)
            ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color="darkred")
        finish(ax, title)
    fig.suptitle(f"Plug-in Gait markers on the open adult body ({len(layout)} markers, "
                 f"{OFFSET * 1000:.0f} mm off the skin)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _hidden(point: np.ndarray, triangles: np.ndarray) -> bool:
    """Whether skin lies in front of a screen-space point (x, y, depth): a triangle covers it in x, y
    with a greater depth (nearer the camera) there."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1, v2 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2], point[:2] - a[:, :2]
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    u = (v2[:, 0] * v1[:, 1] - v2[:, 1] * v1[:, 0]) / det
    v = (v0[:, 0] * v2[:, 1] - v0[:, 1] * v2[:, 0]) / det
    inside = ok & (u >= 0) & (v >= 0) & (u + v <= 1)
    depth = (1 - u - v) * a[:, 2] + u * b[:, 2] + v * c[:, 2]
    return bool((inside & (depth > point[2] + 0.002)).any())


def _format(document: dict) -> str:
    """JSON with one marker per line: readable, and a rebuild shows as a small diff."""
    lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in document["markers"].items()]
    head = json.dumps({key: value for key, value in document.items() if key != "markers"}, indent=1)[:-2]
    return head + ',\n "markers": {\n' + ",\n".join(lines) + "\n }\n}\n"


def layout_from_trial(args: argparse.Namespace) -> dict:
    """A layout document for every marker of a C3D trial, after a rough fit on the markers the
    base layout knows (module docstring)."""
    from core.markers import markers_from_poses
    from core.mocap.c3d import read_c3d, to_model_space
    from core.retarget import Retarget, RetargetOptions, marker_targets
    from core.vposer import load_default_vposer

    model = BodyModel.open_default("adult")
    clip = read_c3d(args.trial, units=args.units)
    positions = to_model_space(clip.positions, args.up)
    spread = np.unique(np.linspace(0, clip.num_frames - 1, min(args.frames, clip.num_frames)).round().astype(int))
    targets = marker_targets(model, args.base, clip.labels, positions[spread], clip.frame_rate, str(args.trial))
    run = Retarget(model, targets, load_default_vposer().eval(), RetargetOptions(shape_frames=len(spread)))
    for _ in run:
        pass
    result = run.result()
    rows = spread[targets.source_frames]
    rotations = torch.as_tensor(result.poses).view(len(rows), -1, 3)
    from core.rotations import axis_angle_to_matrix

    new = markers_from_poses(model, clip.labels, positions[rows], axis_angle_to_matrix(rotations), result.betas,
                             result.transl)
    markers = {**new, **(result.calibration or {}).get("markers", {})}  # known ones: their calibrated places
    print(f"rough fit on {len(rows)} frames: {result.mpjpe_mm:.1f} mm over the {len(targets.keypoints)} markers "
          f"{Path(args.base).name} knows; {len(new) - len(targets.keypoints)} new marker(s) placed", file=sys.stderr)
    return {
        "description": f"markers of {Path(args.trial).name} placed on the open adult body from a rough fit "
                       f"(scripts/make_marker_layout.py --trial); calibrate on the subject's takes",
        "markers": {label: markers[label] for label in clip.labels if label in markers},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--plot", action="store_true", help=f"also draw {FIGURE.relative_to(REPO)}")
    parser.add_argument("--trial", type=Path, help="a C3D take: start a layout for its marker set from it")
    parser.add_argument("--base", type=Path, default=OUTPUT, help="--trial: the layout that gives the rough fit")
    parser.add_argument("--up", default="z", choices=("z", "y"), help="--trial: the lab's up axis")
    parser.add_argument("--units", choices=("mm", "cm", "m"), help="--trial: override POINT:UNITS")
    parser.add_argument("--frames", type=int, default=24, help="--trial: spread frames of the rough fit")
    args = parser.parse_args(argv)
    if args.trial:
        if args.out == OUTPUT:
            parser.error("--trial needs --out (the shipped layout is not overwritten)")
        try:
            document = layout_from_trial(args)
        except ValueError as error:  # C3DError, RetargetError, KeypointError: they name the file and the problem
            raise SystemExit(f"error: {error}") from None
        args.out.write_text(_format(document))
        print(f"wrote {len(document['markers'])} markers to {args.out}")
        return 0
    model = BodyModel.open_default("adult", dtype=torch.float64)
    layout = build_layout(model)
    document = {
        "description": (
            "Vicon Plug-in Gait full-body markers on the open adult body (core/data/openbody_adult.npz), "
            f"{OFFSET} m off the skin; built by scripts/make_marker_layout.py (rule per marker in its RULES)."
        ),
        "markers": layout,
    }
    args.out.write_text(_format(document))
    print(f"wrote {len(layout)} markers to {args.out}")
    if args.plot:
        sys.path.insert(0, str(REPO / "scripts"))
        plot(model, layout, FIGURE)
        print(f"wrote {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
