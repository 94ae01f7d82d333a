"""scripts/convert_model_pkl.py: official-style .pkl -> .npz without running pickled code.

The test pickles are built here. Stand-in classes are registered under the names the official
files use (`chumpy.ch.Ch`, `scipy.sparse._csc.csc_matrix`, ...) only while pickling, so the
pickles hold those globals exactly as the real files do.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.synthetic_models import make_model_arrays

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "convert_model_pkl.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("convert_model_pkl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = _load_script()


class FakeCh:
    """Pickles like a plain chumpy.ch.Ch: NEWOBJ of the class, then its __dict__ with the value in 'x'."""

    def __init__(self, value: np.ndarray) -> None:
        self.x = value
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False


class FakeChOp:
    """A chumpy expression (e.g. chumpy.ch_ops.add): its terms, no stored value."""

    def __init__(self, a: FakeCh, b: FakeCh) -> None:
        self.a, self.b = a, b
        self._dirty_vars = set()


class FakeSparse:
    """Pickles like an old scipy sparse matrix: NEWOBJ, then a dict of data/indices/indptr/_shape."""

    def __init__(self, dense: np.ndarray, fmt: str) -> None:
        compressed = dense if fmt == "csr" else dense.T
        rows, cols = np.nonzero(compressed)
        self.data = compressed[rows, cols]
        self.indices = cols.astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=compressed.shape[0]))]).astype(np.int32)
        self._shape = dense.shape
        self.maxprint = 50
        self.format = fmt


# Stand-ins live in throw-away modules while pickling; the module names in the pickle are then
# rewritten to the official ones (protocol 2 writes each global as the text "c<module>\n<name>\n"),
# so no real chumpy or scipy module is ever replaced.
OFFICIAL_MODULES = {
    "fake_official_chumpy_ch": ("chumpy.ch", "Ch", FakeCh),
    "fake_official_chumpy_ch_ops": ("chumpy.ch_ops", "add", FakeChOp),
    "fake_official_scipy_csc": ("scipy.sparse._csc", "csc_matrix", FakeSparse),
    "fake_official_scipy_csr": ("scipy.sparse.csr", "csr_matrix", FakeSparse),  # the older spelling
}


@pytest.fixture
def official_names(monkeypatch):
    """Stand-in classes by role: 'Ch', 'add', 'csc', 'csr'; use `official_dumps` to pickle them."""
    classes = {}
    for fake_module, (_, name, base) in OFFICIAL_MODULES.items():
        cls = type(name, (base,), {"__module__": fake_module, "__qualname__": name})
        module = types.ModuleType(fake_module)
        setattr(module, name, cls)
        monkeypatch.setitem(sys.modules, fake_module, module)
        classes[name.split("_")[0]] = cls
    return classes


def official_dumps(content: object) -> bytes:
    data = pickle.dumps(content, protocol=2)
    for fake_module, (real_module, _, _) in OFFICIAL_MODULES.items():
        data = data.replace(b"c" + fake_module.encode() + b"\n", b"c" + real_module.encode() + b"\n")
    return data


def official_pickle(arrays: dict[str, np.ndarray], classes: dict[str, type], extra: dict | None = None) -> bytes:
    """An SMPL .pkl laid out as the official release: chumpy shapedirs / v_template, a sparse
    J_regressor, plain arrays for the rest, and non-array entries."""
    content = dict(arrays)
    content["shapedirs"] = classes["Ch"](arrays["shapedirs"].astype(np.float64))
    content["v_template"] = classes["Ch"](arrays["v_template"].astype(np.float64))
    content["J_regressor"] = classes["csc"](arrays["J_regressor"].astype(np.float64), "csc")
    content["J_regressor_prior"] = classes["csr"](arrays["J_regressor"].astype(np.float64), "csr")
    content["kintree_table"] = arrays["kintree_table"].astype(np.uint32)
    content["bs_style"] = "lbs"
    content["bs_type"] = "lrotmin"
    content["pose_training_info"] = {"n_poses": 1786, "objects": ["a"]}
    content["joint2num"] = {"pelvis": 0}
    content["vert_sym_idxs"] = np.arange(len(arrays["v_template"]))
    content.update(extra or {})
    return official_dumps(content)


@pytest.fixture
def smpl_arrays():
    return make_model_arrays("smpl", num_vertices=120, num_faces=40, seed=4)


def test_converted_file_loads_with_same_outputs(tmp_path, official_names, smpl_arrays):
    source = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    source.write_bytes(official_pickle(smpl_arrays, official_names))
    assert b"chumpy.ch" in source.read_bytes() and b"scipy.sparse._csc" in source.read_bytes()
    notes: list[str] = []
    written = converter.convert(source, tmp_path / "smpl.npz", log=notes.append)
    for key in ("bs_style", "bs_type", "pose_training_info", "joint2num"):
        assert any(f"'{key}'" in note for note in notes), key
    assert "J_regressor_prior" in written and "vert_sym_idxs" in written
    np.testing.assert_array_equal(written["J_regressor"], smpl_arrays["J_regressor"].astype(np.float64))
    np.testing.assert_array_equal(written["J_regressor_prior"], smpl_arrays["J_regressor"].astype(np.float64))
    np.savez(tmp_path / "original.npz", **smpl_arrays)
    ours = BodyModel.from_file(tmp_path / "smpl.npz", dtype=torch.float64)
    reference = BodyModel.from_file(tmp_path / "original.npz", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    inputs = dict(betas=torch.randn(2, 10, generator=g, dtype=torch.float64),
                  body_pose=0.4 * torch.randn(2, 69, generator=g, dtype=torch.float64),
                  global_orient=torch.randn(2, 3, generator=g, dtype=torch.float64))
    a, b = ours(**inputs), reference(**inputs)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.joints, b.joints, rtol=0, atol=1e-12)


def test_converter_imports_neither_chumpy_nor_scipy(tmp_path, official_names, smpl_arrays):
    data = official_pickle(smpl_arrays, official_names)
    for module in (b"chumpy.ch\n", b"scipy.sparse._csc\n", b"scipy.sparse.csr\n"):
        assert b"c" + module in data
    (tmp_path / "in.pkl").write_bytes(data)
    check = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(SCRIPT)!r})\n"
        "c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)\n"
        f"content = c.restricted_load(open({str(tmp_path / 'in.pkl')!r}, 'rb').read())\n"
        "print(type(content['shapedirs']).qualified_name, type(content['J_regressor']).qualified_name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('chumpy', 'scipy')))\n"
    )
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["chumpy.ch.Ch scipy.sparse._csc.csc_matrix", "[]"]


def test_real_scipy_matrix_pickle_is_densified(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.5]])
    data = pickle.dumps({"csc": sparse.csc_matrix(dense), "csr": sparse.csr_matrix(dense)}, protocol=2)
    (tmp_path / "m.pkl").write_bytes(data)
    written = converter.convert(tmp_path / "m.pkl", tmp_path / "m.npz", log=lambda _: None)
    np.testing.assert_array_equal(written["csc"], dense)
    np.testing.assert_array_equal(written["csr"], dense)


def test_old_module_spelling_and_chumpy_expression(tmp_path, official_names, smpl_arrays):
    data = official_pickle(smpl_arrays, official_names).replace(b"cscipy.sparse._csc\n", b"cscipy.sparse.csc\n")
    assert b"cscipy.sparse.csc\n" in data
    (tmp_path / "old.pkl").write_bytes(data)
    written = converter.convert(tmp_path / "old.pkl", tmp_path / "old.npz", log=lambda _: None)
    np.testing.assert_array_equal(written["J_regressor"], smpl_arrays["J_regressor"].astype(np.float64))
    # A chumpy expression has no stored value: refused with the key and class named.
    ch, add = official_names["Ch"], official_names["add"]
    expression = add(ch(np.zeros(3)), ch(np.ones(3)))
    (tmp_path / "expr.pkl").write_bytes(official_pickle(smpl_arrays, official_names, {"posedirs": expression}))
    with pytest.raises(converter.ConversionError, match=r"key 'posedirs' is a chumpy expression \(chumpy.ch_ops.add\)"):
        converter.convert(tmp_path / "expr.pkl", tmp_path / "expr.npz", log=lambda _: None)


class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class GetattrExploit:
    def __reduce__(self):
        return (getattr, ("text", "upper"))


def test_code_in_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    payload = {"v_template": np.zeros((3, 3)), "f": Exploit(f"touch {marker}")}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(converter.ConversionError) as info:
        converter.convert(tmp_path / "evil.pkl", tmp_path / "evil.npz")
    assert "refusing to load global" in str(info.value)
    assert "system" in str(info.value) and ("posix" in str(info.value) or "nt" in str(info.value))
    assert not marker.exists()
    assert not (tmp_path / "evil.npz").exists()
    (tmp_path / "getattr.pkl").write_bytes(pickle.dumps([GetattrExploit()], protocol=2))
    with pytest.raises(converter.ConversionError, match=r"refusing to load global '__builtin__.getattr'"):
        converter.convert(tmp_path / "getattr.pkl", tmp_path / "getattr.npz")


def test_codecs_encode_only_latin1():
    with pytest.raises(pickle.UnpicklingError, match="refusing _codecs.encode with encoding 'rot13'"):
        converter._latin1_encode("abc", "rot13")
    assert converter._latin1_encode("\xff\x00", "latin1") == b"\xff\x00"


def test_bad_inputs(tmp_path):
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([np.zeros(3)], protocol=2))
    with pytest.raises(converter.ConversionError, match="holds a list, expected a dict of model arrays"):
        converter.convert(tmp_path / "list.pkl", tmp_path / "out.npz")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x02definitely not a pickle")
    with pytest.raises(converter.ConversionError, match="junk.pkl"):
        converter.convert(tmp_path / "junk.pkl", tmp_path / "out.npz")
    (tmp_path / "strings.pkl").write_bytes(pickle.dumps({"bs_style": "lbs"}, protocol=2))
    with pytest.raises(converter.ConversionError, match="no numeric arrays found"):
        converter.convert(tmp_path / "strings.pkl", tmp_path / "out.npz", log=lambda _: None)


def test_command_line(tmp_path, official_names, smpl_arrays):
    (tmp_path / "in.pkl").write_bytes(official_pickle(smpl_arrays, official_names))
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "in.pkl"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "note: skipping 'bs_style'" in run.stdout
    assert "ok: a smpl model with 120 vertices, 24 joints, 10 shape components" in run.stdout
    marker = tmp_path / "marker"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"x": Exploit(f"touch {marker}")}, protocol=2))
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "evil.pkl"), str(tmp_path / "evil.npz")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "refusing to load global" in run.stderr
    assert not marker.exists() and not (tmp_path / "evil.npz").exists()
