"""ikemtrain.api: one shape for the entry points, settings checked like ``--set``, the
``Encoders`` value, and the decisions the command line used to make (now the library's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from protocol_runs import BACKBONE, THREE, pretrain_run
from test_data import make_cache

import ikemtrain
from ikemtrain import api
from ikemtrain.config import (
    ConfigError,
    LinearEvalConfig,
    PretrainConfig,
    apply_settings,
    load_preset,
)
from ikemtrain.demo import demo_preset
from ikemtrain.engine import knn_eval as engine_knn_eval
from ikemtrain.engine import linear_eval as engine_linear_eval
from ikemtrain.errors import CheckpointError, OutputExistsError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: [linear_eval] of a probe that runs in about a second
LE = {"epochs": 3, "lr": 0.5, "steps": [2], "batch_size": 4, "eval_interval": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("api") / "c.h5", n=24, t=24, classes=3)


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory) -> Path:
    return pretrain_run(cache, tmp_path_factory.mktemp("run"))


def test_keyword_and_mapping_overrides_are_the_same_as_set() -> None:
    by_set = apply_settings(load_preset("tiny"), ["pretrain.lr=0.05", "pretrain.steps=[3, 6]"])
    by_keyword = api.configure("tiny", section="pretrain", lr=0.05, steps=[3, 6])
    by_mapping = api.configure("tiny", {"pretrain.lr": 0.05, "pretrain.steps": (3, 6)})
    by_strings = api.configure("tiny", ["pretrain.lr=0.05", "pretrain.steps=[3, 6]"])
    assert by_set == by_keyword == by_mapping == by_strings
    with pytest.raises(ConfigError, match=r"^settings pretrain\.lr") as e:  # not '--set'
        api.configure("tiny", ["pretrain.lr=fast"])
    assert "--" not in str(e.value)
    assert by_keyword.pretrain.steps == (3, 6) and by_keyword.name == "tiny"
    # a Preset is taken as it is; settings apply before the keywords
    both = api.configure(by_set, ["pretrain.epochs=4"], "pretrain", epochs=5)
    assert both.pretrain.epochs == 5 and both.pretrain.lr == 0.05


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: api.configure("tiny", section="pretrain", epoch=3), "unknown key 'epoch'"),
        (lambda: api.configure("tiny", section="pretrain", epochs=0), "pretrain.epochs=0"),
        (lambda: api.configure("tiny", {"pretrain": 1}), "expected SECTION.KEY"),
        (lambda: api.configure("tiny", {"training.lr": 1}), "unknown table 'training'"),
        (lambda: api.configure("tiny", ["pretrain.lr"]), "expected SECTION.KEY=VALUE"),
        (lambda: api.configure("tiny", lr=0.1), "need a table"),
        (lambda: api.configure("no-such-preset"), "unknown preset 'no-such-preset'"),
        (lambda: api.Encoders.random("tiny", ["joint", "pose"]), "pose"),
        (lambda: api.Encoders.random("tiny", 3, seed=-1), "seed"),
    ],
)
def test_bad_settings_are_config_errors_naming_them(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_random_encoders_take_the_presets_width() -> None:
    enc = api.Encoders.random("tiny", 3, seed=4)
    tiny = load_preset("tiny").pretrain
    assert enc.kind == "random-init" and enc.random_init and enc.seed == 4
    assert enc.modalities == THREE and enc.backbone == tiny.backbone
    assert enc.engine_kwargs() == {"random_init": True, "backbone": tiny.backbone,
                                   "modalities": THREE}  # fmt: skip
    assert api.Encoders.random("tiny").modalities == tiny.modalities


def test_encoders_from_a_run_and_from_what_is_not_one(run: Path, tmp_path: Path) -> None:
    enc = api.Encoders.from_run(run)
    assert enc.kind == "pretrain" and enc.modalities == THREE
    assert enc.checkpoint == run / "checkpoint.pt" and not enc.random_init
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        api.Encoders.from_run(tmp_path / "empty")


def test_linear_eval_is_the_engines_with_the_presets_settings(
    cache: Path, run: Path, tmp_path: Path
) -> None:
    """The same numbers as the engine called with the resolved settings; two streams write
    OUT/<stream>; a run folder works as ``encoders`` too."""
    got = ikemtrain.linear_eval(cache, tmp_path / "api", encoders=run, streams=["joint", "3s"],
                                split="xsub", preset="tiny", device="cpu", echo=None,
                                **LE)  # fmt: skip
    cfg = load_preset("tiny").linear_eval.replace(**{**LE, "steps": (2,)})
    want = engine_linear_eval(cfg, cache, tmp_path / "engine", "xsub", "3s", checkpoint=run,
                              device="cpu", echo=None)  # fmt: skip
    assert set(got) == {"joint", "3s"}
    assert got["3s"]["history"] == want["history"]
    assert got["3s"]["top1_final"] == want["top1_final"]
    for stream in ("joint", "3s"):
        written = json.loads((tmp_path / "api" / stream / "results.json").read_text())
        assert written["top1_final"] == got[stream]["top1_final"]


def test_the_random_encoders_seed_is_the_protocols(cache: Path, tmp_path: Path) -> None:
    enc = api.Encoders.random(ikemtrain.configure("tiny", section="pretrain", **BACKBONE),
                              THREE, seed=5)  # fmt: skip
    got = ikemtrain.knn_eval(cache, tmp_path / "api", encoders=enc, streams="joint", k=[1, 3],
                             split="xsub", preset="tiny", device="cpu", echo=None)  # fmt: skip
    want = engine_knn_eval(cache, tmp_path / "engine", "xsub", ["joint"], [1, 3], seed=5,
                           batch_size=LinearEvalConfig().eval_batch_size, device="cpu",
                           echo=None, **enc.engine_kwargs())  # fmt: skip
    assert got["streams"] == want["streams"]
    other = ikemtrain.knn_eval(cache, tmp_path / "other", encoders=enc, streams="joint",
                               k=[1, 3], split="xsub", preset="tiny", seed=6, device="cpu",
                               echo=None)  # fmt: skip
    assert other["config"]["seed"] == 6 and got["config"]["seed"] == 5


def test_export_refuses_an_existing_file_before_reading_the_run(tmp_path: Path) -> None:
    out = tmp_path / "student.pt"
    out.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="exists"):
        ikemtrain.export(tmp_path / "no-such-run", out)
    assert out.read_bytes() == b"mine"


def test_describe_filters_the_frozen_keys_to_the_modalities() -> None:
    rows = dict(ikemtrain.describe("paper-ntu60", ("joint", "velocity")))
    cfg = PretrainConfig(modalities=("joint", "velocity"))
    from ikemtrain.methods.pretrain import describe as describe_model

    assert rows == dict(describe_model(cfg.modalities, **cfg.model_kwargs()))
    assert rows["backbone (one STGCN)"] == 821_380
    # stage 2 momentum-updates velocity's keys only: joint's key encoder is frozen
    assert rows["trainable (keys frozen)"] < rows["total"]
    student = dict(ikemtrain.describe("paper-ntu60", student=True, num_class=60))
    assert student["total"] == 2_510_400
    with pytest.raises(ConfigError, match="student"):
        ikemtrain.describe("paper-ntu60", 3, student=True)


def test_the_demos_preset_is_the_librarys() -> None:
    preset = demo_preset("tiny", split="xview", seed=3, loader_workers=0)
    assert (preset.pretrain.split, preset.pretrain.seed, preset.pretrain.workers) == ("xview", 3, 0)
    assert preset.linear_eval.seed == 3
    assert demo_preset("tiny") == load_preset("tiny")
    with pytest.raises(ConfigError, match="benchmark name"):
        demo_preset("tiny", split="x-view")


def test_the_top_level_names_resolve_and_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, skelmod, ikemtrain\n"
        "assert 'torch' not in sys.modules\n"
        "[getattr(skelmod, n) for n in skelmod.__all__]\n"
        "assert 'torch' not in sys.modules, 'skelmod imported torch'\n"
        "[getattr(ikemtrain, n) for n in ikemtrain.__all__]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
    for name in ("pretrain", "distill", "linear_eval", "knn_eval", "finetune", "Encoders",
                 "Student", "export"):  # fmt: skip
        assert name in ikemtrain.__all__
    for name in ("convert", "import_arrays", "open_cache", "compute_modalities", "generate"):
        assert name in __import__("skelmod").__all__


def test_skelmod_convert_is_callable_once_its_module_is_imported(tmp_path: Path) -> None:
    """``import skelmod.convert`` sets ``skelmod.convert`` to the module (the import
    system's rule); the top-level ``skelmod.convert(raw, out)`` still converts."""
    import skelmod
    import skelmod.convert
    from skelmod.synth import generate

    generate(tmp_path / "raw", 2, 3, 0)
    report = skelmod.convert(tmp_path / "raw", tmp_path / "c.h5", workers=1)
    assert report.converted == 6 and (tmp_path / "c.h5").is_file()
