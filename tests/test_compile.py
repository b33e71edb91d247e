"""``compile`` (``ikemtrain.nn.streams``): encoders through ``torch.compile`` give the eager
encoders' losses, momentum updates and SGD steps, the model's state dict keeps its keys (no
``_orig_mod.``), and what cannot run is one clear error.

The fast tests compile with a capture-only backend (dynamo traces every encoder and its
graphs run as captured, without inductor's code generation, which takes a minute or more per
encoder on two cores, cold); ``test_inductor_matches_eager`` compiles for real and is slow.
"""

import json

import pytest
import torch
from click.testing import CliRunner
from test_data import make_cache

from cli import ikemtrain_cli
from ikemtrain.config import ConfigError, DistillConfig, PretrainConfig, apply_settings, load_preset
from ikemtrain.engine.loop import pretrain
from ikemtrain.methods.pretrain import PretrainModel
from ikemtrain.nn import streams
from ikemtrain.nn.streams import StreamRunner, check_compile, stream_threads

THREE = ("joint", "velocity", "bone")
TINY = PretrainConfig(
    hidden_channels=2, hidden_dim=16, feature_dim=8, queue_size=16, dropout=0.0, head_bn=True
).model_kwargs()
B = 4


class Capture:
    """A torch.compile backend that records each graph dynamo captures and runs it as is."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("compile") / "c.h5", n=16, t=24)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return PretrainModel(THREE, **TINY).to(dtype)


def views(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        {m: torch.randn(B, 3, 12, 25, 2, generator=g, dtype=dtype) for m in THREE} for _ in "12"
    )


def train_steps(net, steps, stage, dtype=torch.float64):
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for i in range(steps):
        v1, v2 = views(10 + i, dtype)
        out = net(v1, v2, stage)
        opt.zero_grad(set_to_none=True)
        net.backward(out["loss"])
        opt.step()
        losses.append(out["loss"].item())
    return losses


def assert_same_state(a, b, atol, rtol=0.0):
    assert list(a.state_dict()) == list(b.state_dict())
    for (name, t), (_, t2) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(t, t2, rtol=rtol, atol=atol, msg=name)


def test_compiled_encoders_match_eager_and_keep_the_state_dict():
    """Two SGD steps in each stage (stage 2: frozen and moving keys): the compiled model's
    losses, parameters, key encoders (momentum-updated between the steps, which the compiled
    key encoders must see) and queues are the eager model's, and its state dict has the
    eager model's keys, loadable both ways."""
    eager, compiled = model(), model()
    capture = Capture()
    compiled.runner = StreamRunner(compile="default", backend=capture)
    for stage in (1, 2):
        a, b = train_steps(eager, 2, stage), train_steps(compiled, 2, stage)
        assert a == pytest.approx(b, abs=1e-10)
    assert_same_state(eager, compiled, atol=1e-10)
    # the encoders went through dynamo: graphs with gradient (queries) and without (keys)
    assert capture.graphs and len(compiled.runner._compiled) == 2 * len(THREE)
    assert all(
        isinstance(c, torch._dynamo.eval_frame.OptimizedModule)
        for _, c in compiled.runner._compiled.values()
    )
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    fresh = model(seed=1)
    fresh.load_state_dict(compiled.state_dict(), strict=True)
    compiled.load_state_dict(eager.state_dict(), strict=True)
    # a deep copy (the kNN monitor's, a checkpoint's) holds no compiled wrapper
    import copy

    assert copy.deepcopy(compiled).runner._compiled == {}


def test_compiled_encoders_run_under_bf16_autocast():
    """bf16 and compile together: the compiled encoders run under autocast (dynamo guards on
    it) and hand float32 features to the heads, as eager bf16 does."""
    eager, compiled = model(dtype=torch.float32), model(dtype=torch.float32)
    eager.runner = StreamRunner(precision="bf16")
    capture = Capture()
    compiled.runner = StreamRunner(precision="bf16", compile="default", backend=capture)
    v1, v2 = views(3, torch.float32)
    a = eager(v1, v2, 1, return_details=True)
    b = compiled(v1, v2, 1, return_details=True)
    assert all(b["details"]["q"][m].dtype == torch.float32 for m in THREE)
    assert b["loss"].item() == pytest.approx(a["loss"].item(), abs=1e-6)
    # autocast reached the compiled encoders: their loss is bf16's, not float32's
    fp32 = model(dtype=torch.float32)
    assert abs(fp32(v1, v2, 1)["loss"].item() - b["loss"].item()) > 1e-4
    assert capture.graphs


def test_compiled_distillation_matches_eager():
    """Distillation through the runner: the frozen teacher (eval mode, no gradient) and the
    students compiled give the eager loss and the eager students' gradients."""
    from test_distill import _views

    from ikemtrain.methods.distill import STUDENT_MODALITIES, DistillModel
    from skelmod.layout import MODALITY_NAMES

    def tiny():  # no dropout: the two models would draw different masks from one generator
        torch.manual_seed(0)
        return DistillModel(
            MODALITY_NAMES, STUDENT_MODALITIES, feature_dim=4, head_bn=False,
            backbone={"hidden_channels": 2, "hidden_dim": 16, "dropout": 0.0},
            **DistillConfig(queue_size=16).model_kwargs(),
        ).double()  # fmt: skip

    eager, compiled = tiny(), tiny()
    capture = Capture()
    compiled.runner = StreamRunner(compile="default", backend=capture)
    v1, v2 = ({m: x.double() for m, x in _views(seed=s).items()} for s in (1, 2))
    a, b = eager(v1, v2), compiled(v1, v2)
    assert b["loss"].item() == pytest.approx(a["loss"].item(), abs=1e-12)
    eager.backward(a["loss"])
    compiled.backward(b["loss"])
    grads = [(p, q) for p, q in zip(eager.parameters(), compiled.parameters(), strict=True)
             if p.grad is not None]  # fmt: skip
    assert grads
    for p, q in grads:
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12)
    assert capture.graphs and len(compiled.runner._compiled) == 6 + 3


def test_the_setting_is_checked_and_set_reaches_it():
    for config in (PretrainConfig, DistillConfig):
        assert config().compile == "none"
        with pytest.raises(ConfigError, match="compile"):
            config(compile="fast")
    preset = apply_settings(
        load_preset("tiny"), ["pretrain.compile=max-autotune", "distill.compile=default"]
    )
    assert preset.pretrain.compile == "max-autotune" and preset.distill.compile == "default"


def test_unsupported_combinations_are_named(monkeypatch):
    check_compile("none", "cpu")
    check_compile("default", "cpu")  # g++ is on this machine's PATH
    with pytest.raises(ValueError, match="reduce-overhead records CUDA graphs.*use default"):
        check_compile("reduce-overhead", "cpu")
    with pytest.raises(ValueError, match="expected one of none, default"):
        check_compile("fast", "cpu")
    import torch._inductor.cpp_builder as cpp_builder
    import torch.utils._triton as triton

    def no_compiler():
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(ValueError, match="default: compiling for the cpu needs a C\\+\\+ compiler"):
        check_compile("default", "cpu")
    monkeypatch.setattr(triton, "has_triton", lambda: False)
    with pytest.raises(ValueError, match="max-autotune: compiling for cuda needs triton"):
        check_compile("max-autotune", "cuda")

    def unsupported():
        raise RuntimeError("Python 3.99+ not yet supported for torch.compile")

    monkeypatch.setattr(torch._dynamo.eval_frame, "check_if_inductor_supported", unsupported)
    with pytest.raises(ValueError, match="torch.compile does not run here \\(Python 3.99"):
        check_compile("default", "cpu")


def test_compiled_encoders_run_on_one_thread():
    """torch.compile is not thread-safe (pytorch/pytorch#118260): auto picks one stream
    thread with compile, an explicit count above 1 is refused, and so is the runner."""
    cpu = torch.device("cpu")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert stream_threads(0, 6, cpu, 1, 0.0) == 2
        assert stream_threads(0, 6, cpu, 1, 0.0, compiled=True) == 1
        assert stream_threads(1, 6, cpu, 1, 0.0, compiled=True) == 1
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="stream_threads = 2 cannot run compiled encoders: "
                       "torch.compile is not thread-safe"):  # fmt: skip
        stream_threads(2, 6, cpu, 1, 0.0, compiled=True)
    with pytest.raises(ValueError, match="not thread-safe"):
        StreamRunner(threads=2, compile="default")
    with pytest.raises(ValueError, match="compile must be one of"):
        StreamRunner(compile="fast")


def _cfg(**kw):
    """Tiny settings; one stream thread in both runs, so that float32 sums add alike."""
    base = dict(
        hidden_channels=2, hidden_dim=16, feature_dim=8, queue_size=8, batch_size=4,
        epochs=2, cross_epoch=1, dropout=0.0, workers=0, lr=0.01, split="xsub",
        modalities=THREE, monitor_every=0, stream_threads=1,
    )  # fmt: skip
    return PretrainConfig(**{**base, **kw})


def test_a_compiled_run_is_the_eager_run_and_resumes_either_way(synth_cache, tmp_path, monkeypatch):
    """pretrain with compile (the capture backend): the training loop's runner compiles the
    encoders, the run learns exactly as the eager one, its checkpoint has the eager keys, and
    an eager run resumes a compiled one and back (compile is execution, not model)."""
    capture = Capture()
    monkeypatch.setattr(streams, "COMPILE_BACKEND", capture)
    run = lambda cfg, out, **kw: pretrain(cfg, synth_cache, tmp_path / out, echo=None,  # noqa: E731
                                          tensorboard=False, **kw)  # fmt: skip
    eager = run(_cfg(), "eager")
    compiled = run(_cfg(compile="default"), "compiled")
    assert capture.graphs
    a = torch.load(eager["checkpoint"], weights_only=True)
    b = torch.load(compiled["checkpoint"], weights_only=True)
    assert list(a["model"]) == list(b["model"])
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=1e-6)
    assert b["config"]["compile"] == "default"
    # compiled epoch 1, then eager epoch 2; and eager epoch 1, then compiled epoch 2
    run(_cfg(compile="default", epochs=1), "there")
    there = run(_cfg(), "there", resume=True)
    run(_cfg(epochs=1), "back")
    back = run(_cfg(compile="default"), "back", resume=True)
    for resumed in (there, back):
        c = torch.load(resumed["checkpoint"], weights_only=True)["model"]
        for name in a["model"]:
            torch.testing.assert_close(a["model"][name], c[name], rtol=0, atol=1e-6)


def test_the_command_line_takes_compile_and_names_what_cannot_run(small_run, tmp_path):
    invoke = CliRunner().invoke
    base = ["pretrain", str(small_run["cache"]), "--split", "xsub", "--preset",
            str(small_run["preset"]), "--device", "cpu"]  # fmt: skip
    bad = invoke(ikemtrain_cli.main, [*base, "--compile", "fast", "-o", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "'fast' is not one of 'none', 'default'" in bad.output
    cuda_only = invoke(
        ikemtrain_cli.main, [*base, "--compile", "reduce-overhead", "-o", str(tmp_path / "b")]
    )
    assert cuda_only.exit_code == 1, cuda_only.output
    assert cuda_only.stderr.startswith(
        "Error: compile: reduce-overhead records CUDA graphs, which run only on cuda"
    )
    threads = invoke(
        ikemtrain_cli.main,
        [*base, "--compile", "default", "--stream-threads", "2", "-o", str(tmp_path / "c")],
    )
    assert threads.exit_code == 1, threads.output
    assert threads.stderr.startswith(
        "Error: stream_threads: stream_threads = 2 cannot run compiled encoders"
    )
    distill = invoke(
        ikemtrain_cli.main,
        ["distill", str(small_run["cache"]), "--split", "xsub", "--teacher", str(tmp_path),
         "--compile", "fast", "-o", str(tmp_path / "d")],
    )  # fmt: skip
    assert distill.exit_code == 2 and "--compile" in distill.output


def test_run_json_records_compile(small_run, tmp_path, monkeypatch):
    """``--compile default`` reaches the run: run.json's settings, the checkpoint's config."""
    monkeypatch.setattr(streams, "COMPILE_BACKEND", Capture())
    result = CliRunner().invoke(
        ikemtrain_cli.main,
        ["pretrain", str(small_run["cache"]), "--split", "xsub", "--preset",
         str(small_run["preset"]), "--device", "cpu", "--compile", "default", "--epochs", "1",
         "-o", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["settings"]["compile"] == "default", record["settings"]
    assert "checkpoint:" in result.output


@pytest.fixture(scope="module")
def small_run(synth_cache, tmp_path_factory):
    preset = tmp_path_factory.mktemp("preset") / "mini.toml"
    preset.write_text(
        "[pretrain]\nepochs = 2\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 0\n"
        "hidden_channels = 2\nhidden_dim = 16\nfeature_dim = 8\nworkers = 0\ndropout = 0.0\n"
        "monitor_every = 0\nmodalities = ['joint', 'bone']\n"
    )
    return {"cache": synth_cache, "preset": preset}


@pytest.mark.slow
def test_inductor_matches_eager():
    """The real compiler (inductor, C++ for the CPU): two SGD steps of each stage give the
    eager losses and parameters. In float64: stage 2 mines its positives with a top-k, whose
    choices float32's reordered sums (inductor fuses) could flip on a tiny random model."""
    eager, compiled = model(), model()
    compiled.runner = StreamRunner(compile="default", backend="inductor")
    for stage in (1, 2):
        assert train_steps(eager, 2, stage) == pytest.approx(
            train_steps(compiled, 2, stage), rel=1e-9
        )
    assert_same_state(eager, compiled, atol=1e-9, rtol=1e-7)
    assert len(compiled.runner._compiled) == 2 * len(THREE)


@pytest.mark.slow  # six encoders at nucla-cpu's width, counted, captured and timed: minutes
def test_the_step_benchmark_times_compilation_apart(monkeypatch):
    """``benchmarks/train_step.py --compile``'s compiled row (capture backend, batch 2):
    samples/s of compiled steps, and the compiling first step's extra time on its own."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    spec = importlib.util.spec_from_file_location("train_step_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    capture = Capture()
    monkeypatch.setattr(streams, "COMPILE_BACKEND", capture)
    row = bench.run_setting("nucla-cpu", "compiled", "fp32", 2, 1, 0, "cpu", "default")
    assert capture.graphs and row["compile"] == "default"
    for stage in ("stage1", "stage2"):
        assert row[stage]["samples_per_s"] > 0 and "compile_s" in row[stage]
        assert row[stage]["eager_samples_per_s"] > 0 and "compile_cpu_s" in row[stage]
    assert row["stage1"]["compile_s"] > 0  # the first step captured the encoders
