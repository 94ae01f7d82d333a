"""scripts/prepare_mocap.py on a training root: the folder/preset table, people and the
person-level split, per-folder counts, and the 30 fps DAZ folder whose rest frame was cut."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from mocap_testing import T_POSE, daz_like_text
from test_mocap_transfer import cmu_like_text

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_mocap.py"
WALK = [{"LeftArm": (20 + k, 0, 0), "RightUpLeg": (0, 0, 3 * k)} for k in range(8)]
# DAZ motion: the left arm raised step by step from the T-pose.
DAZ_MOTION = [T_POSE | {"lShldr": (90 + 5 * k, 0, 0), "lShin": (0, 4 * k, 0)} for k in range(1, 9)]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("prepare_mocap_root", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _at_30_fps(text: str) -> str:
    assert "Frame Time: 0.0083333" in text
    return text.replace("Frame Time: 0.0083333", "Frame Time: 0.0333333")


def _tree(root: Path) -> Path:
    """A small training root in the layout of the real one."""
    folders = {name: root / name for name in ("cmu_asfamc_bvh", "cmu_asfamc_bvh30", "hdm05_asfamc_bvh30",
                                              "cmu_daz_bvh", "cmu_daz_bvh30", "cmu_asf")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["cmu_asfamc_bvh"] / "01_01.bvh").write_text(cmu_like_text(WALK))
    (folders["cmu_asfamc_bvh"] / "13_02.bvh").write_text(cmu_like_text(WALK[::-1]))
    (folders["cmu_asfamc_bvh30"] / "02_05.bvh").write_text(_at_30_fps(cmu_like_text(WALK[:4])))
    (folders["hdm05_asfamc_bvh30"] / "HDM_bd_squat1Reps_001_120.bvh").write_text(_at_30_fps(cmu_like_text(WALK[:3])))
    daz = daz_like_text([T_POSE] + DAZ_MOTION)  # 120 fps, T-pose first
    (folders["cmu_daz_bvh"] / "14_07.bvh").write_text(daz)
    other_rest = T_POSE | {"abdomen": (0, 2, 0)}  # another person's T-pose, the back less bent
    (folders["cmu_daz_bvh"] / "papagina_martial_03.bvh").write_text(daz_like_text([other_rest] + DAZ_MOTION))
    # The same motion at 30 fps with the T-pose cut: 120 fps frames 4 and 8 (motion steps 4 and 8).
    (folders["cmu_daz_bvh30"] / "14_21.bvh").write_text(_at_30_fps(daz_like_text([DAZ_MOTION[3], DAZ_MOTION[7]])))
    (folders["cmu_daz_bvh30"] / "05_01.bvh").write_text(_at_30_fps(daz_like_text(DAZ_MOTION[:3])))
    (folders["cmu_asf"] / "01.asf").write_text("not a bvh")
    return root


def test_plan_gives_each_folder_its_preset_and_each_clip_its_person(script, tmp_path):
    root = _tree(tmp_path / "train")
    clips = {c.path.name: c for c in script.plan_training_set(root, val_people=["02", "135"])}
    assert sorted(clips) == ["01_01.bvh", "02_05.bvh", "05_01.bvh", "13_02.bvh", "14_07.bvh", "14_21.bvh",
                             "HDM_bd_squat1Reps_001_120.bvh", "papagina_martial_03.bvh"]
    assert {n: c.folder.preset for n, c in clips.items()} == {
        "01_01.bvh": "cmu", "13_02.bvh": "cmu", "02_05.bvh": "cmu", "HDM_bd_squat1Reps_001_120.bvh": "cmu",
        "14_07.bvh": "cmu_daz", "papagina_martial_03.bvh": "cmu_daz", "14_21.bvh": "cmu_daz", "05_01.bvh": "cmu_daz"}
    assert clips["HDM_bd_squat1Reps_001_120.bvh"].person == "HDM05-bd"
    assert clips["papagina_martial_03.bvh"].person == "135" and clips["papagina_martial_03.bvh"].split == "val"
    assert clips["02_05.bvh"].split == "val" and clips["01_01.bvh"].split == "train"
    # The cut rest frame comes from the same person's clip where there is one, else the folder's first.
    assert clips["14_21.bvh"].rest_clip == root / "cmu_daz_bvh" / "14_07.bvh"
    assert clips["05_01.bvh"].rest_clip == root / "cmu_daz_bvh" / "14_07.bvh"
    assert clips["14_07.bvh"].rest_clip is None
    assert (clips["01_01.bvh"].frames, clips["01_01.bvh"].fps) == (8, pytest.approx(120.0, rel=1e-4))
    assert (clips["02_05.bvh"].frames, clips["02_05.bvh"].fps) == (4, pytest.approx(30.0, rel=1e-4))


def test_split_keeps_a_person_under_several_subject_numbers_together(script, tmp_path):
    root = _tree(tmp_path / "train")
    groups = script.person_groups([["01", "13"], ["13", "14"]])  # overlapping groups merge
    assert groups == {"01": "01+13+14", "13": "01+13+14", "14": "01+13+14"}
    clips = {c.path.name: c for c in script.plan_training_set(root, val_people=["14"], same_person=groups)}
    assert {n for n, c in clips.items() if c.split == "val"} == {"01_01.bvh", "13_02.bvh", "14_07.bvh", "14_21.bvh"}
    assert clips["01_01.bvh"].person == "01+13+14"


def test_hdm05_can_be_left_out_and_counts_are_per_folder(script, tmp_path):
    root = _tree(tmp_path / "train")
    clips = script.plan_training_set(root, val_people=["02"], include_hdm05=False)
    assert all(c.folder.dataset == "CMU" for c in clips) and len(clips) == 7
    table = script.folder_counts(clips)
    assert list(table)[-1] == "total"
    assert table["cmu_asfamc_bvh"]["clips"] == 2 and table["cmu_asfamc_bvh"]["frames"] == 16
    assert table["cmu_asfamc_bvh30"]["val"]["clips"] == 1 and table["cmu_asfamc_bvh30"]["val"]["frames"] == 4
    assert table["cmu_asfamc_bvh30"]["minutes"] == pytest.approx(4 / 30 / 60, rel=1e-4)
    assert table["cmu_daz_bvh"]["people"] == {"14", "135"}
    assert table["total"]["clips"] == 7 and table["total"]["frames"] == 16 + 4 + 9 + 9 + 2 + 3
    assert table["total"]["train"]["people"] == {"01", "13", "14", "135", "05"} and table["total"]["val"]["people"] == {"02"}
    assert "hdm05_asfamc_bvh30" not in table


def test_an_unknown_folder_of_bvh_files_is_refused_naming_the_known_ones(script, tmp_path):
    root = _tree(tmp_path / "train")
    (root / "mixamo_bvh").mkdir()
    (root / "mixamo_bvh" / "a.bvh").write_text(cmu_like_text(WALK))
    with pytest.raises(ValueError, match=r"no skeleton preset known for folder\(s\) mixamo_bvh; the known folders are "
                                         r"cmu_asfamc_bvh, cmu_asfamc_bvh30, hdm05_asfamc_bvh30"):
        script.plan_training_set(root)


def test_training_root_end_to_end_converts_the_cut_daz_folder_with_the_borrowed_rest(script, tmp_path, capsys):
    from core.synthetic_models import write_model

    body = write_model(tmp_path / "body.npz", "smplh", num_vertices=120, num_faces=200, num_shape=4)
    root = _tree(tmp_path / "train")
    out = tmp_path / "out"
    assert script.main([str(root), str(out), "--body", str(body), "--val-subjects", "02", "--min-change", "0"]) == 0
    printed = capsys.readouterr().out
    assert "cmu_daz_bvh30 (preset cmu_daz, rest from cmu_daz_bvh)" in printed and "frames kept" in printed
    assert sorted(p.name for p in (out / "val").iterdir()) == ["02_05.npz"]
    assert "HDM_bd_squat1Reps_001_120_mirror.npz" in {p.name for p in (out / "train").iterdir()}
    cut = np.load(out / "train" / "14_21.npz")
    whole = np.load(out / "train" / "14_07.npz")
    assert cut["source_frames"].tolist() == [0, 1] and whole["source_frames"].tolist() == [4, 8]
    assert str(cut["subject"]) == "14" and str(np.load(out / "train" / "papagina_martial_03.npz")["subject"]) == "135"
    # Same motion, same rest (14_07's T-pose): the same poses as the clip that kept its rest frame.
    np.testing.assert_allclose(cut["poses"], whole["poses"], atol=1e-9)
    # Another person's rest (papagina's back bent less) gives other poses for the same motion.
    assert not np.allclose(np.load(out / "train" / "papagina_martial_03.npz")["poses"], whole["poses"], atol=1e-4)
    # The same command again (2 workers) skips every clip and still counts their kept frames.
    capsys.readouterr()
    args = [str(root), str(out), "--body", str(body), "--val-subjects", "02", "--min-change", "0", "--workers", "2"]
    assert script.main(args) == 0
    printed = capsys.readouterr().out
    assert "0 written, 8 already done, 0 failed" in printed
    kept = {line.split()[0]: int(line.split()[2]) for line in printed.split("mirrors not counted):\n")[1].splitlines()[1:]}
    # 8 frames at 120 fps -> 2 at 30 (01_01, 13_02); the 30 fps clips keep theirs (--min-change 0)
    assert kept == {"cmu_asfamc_bvh": 4, "cmu_asfamc_bvh30": 4, "hdm05_asfamc_bvh30": 3, "cmu_daz_bvh": 4,
                    "cmu_daz_bvh30": 5, "total": 20}
    assert script.main([str(root), str(out / "plan"), "--plan"]) == 0
    assert not (out / "plan").exists()


def test_rounded_frame_times_lose_no_frame():
    from core.mocap.convert import subsample_indices

    # 'Frame Time: 0.0333333' / '0.0083333' as written in the files: 30.00003 and 120.00048 fps.
    assert subsample_indices(3, 1 / 0.0333333, 30.0).tolist() == [0, 1, 2]
    assert subsample_indices(9, 1 / 0.0083333, 30.0).tolist() == [0, 4, 8]
    assert subsample_indices(10, 1 / 0.0083333, 30.0).tolist() == [0, 4, 8]
    assert subsample_indices(8, 100.0, 30.0).tolist() == [0, 3, 7]
    assert subsample_indices(4, 24.0, 30.0).tolist() == [0, 1, 2, 3]


def test_batch_settings_hash_follows_the_split_and_the_rest_clips(script, tmp_path):
    from core.batch import settings_hash

    root = _tree(tmp_path / "train")
    target = (np.zeros((2, 3)), np.array([-1, 0]), ("pelvis", "spine"))

    def digest(clips):
        jobs = [script.ClipJob(c.path.name, c.path, c.folder.preset, c.person, c.split, c.rest_clip) for c in clips]
        settings = script.batch_settings(jobs, target, 30.0, True, 0.01, True)
        return settings, settings_hash(settings)

    clips = script.plan_training_set(root, val_people=["02"])
    settings, base = digest(clips)
    cut = settings["files"][str((root / "cmu_daz_bvh30" / "14_21.bvh").absolute())]
    assert settings["rest_clips"][cut["rest"]] == str((root / "cmu_daz_bvh" / "14_07.bvh").absolute())
    assert settings["presets"][cut["preset"]] == "cmu_daz" and (cut["person"], cut["split"]) == ("14", "train")
    assert digest(clips)[1] == base  # same plan, same hash: a rerun resumes
    assert digest(script.plan_training_set(root, val_people=["01"]))[1] != base  # another split
    # the rest clip's content counts: another T-pose in 14_07 (the same file list) redoes the clips
    (root / "cmu_daz_bvh" / "14_07.bvh").write_text(daz_like_text([T_POSE | {"abdomen": (0, 2, 0)}] + DAZ_MOTION))
    assert digest(script.plan_training_set(root, val_people=["02"]))[1] != base
