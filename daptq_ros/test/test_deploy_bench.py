"""`daptq bench --deploy`: every variant measured in its own process, ratios, the report."""

import json

import pytest
import torch

from daptq_ros.cli import main
from daptq_ros.errors import DaptqError
from daptq_ros.evidence.deploy_bench import run_deploy_bench


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One small run (the embedded model's size, 2 chunks per variant, no compile)."""
    out = tmp_path_factory.mktemp("perf") / "performance_small.md"
    # the analysis beside the report, named after it, is appended to it
    (out.parent / "performance_small_findings.md").write_text("## What limits it\n\nmeasured.\n")
    args = ["bench", "--deploy", "--families", "pi0", "--size", "pi0=default", "--runs", "2"]
    args += ["--variants", "fp32", "bf16", "w4a16", "daptq_budget", "--no-compile"]
    args += ["--kernel-choice", "packed"]  # int4 stays int4 whatever this CPU measures
    args += ["--out", str(out), "--json"]
    return args, out


def test_deploy_bench_reports_every_variant_with_ratios_and_writes_the_doc(report, capsys):
    args, out = report
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in data["results"]}
    assert list(rows) == ["fp32", "bf16", "w4a16", "daptq_budget"]
    assert rows["fp32"]["chunk_x_fp32"] == 1.0 and rows["bf16"]["chunk_x_bf16"] == 1.0
    for row in rows.values():
        assert 0 < row["prefix_ms_p50"] < row["chunk_ms_p50"] <= row["chunk_ms_p95"]
        assert row["head_ms_p50"] > 0 and row["load_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["gemv_gbs"] > 0 and row["gemv_roofline_share"] > 0
        assert "compiled_chunk_ms_p50" not in row
    assert rows["bf16"]["bytes_x_fp32"] == pytest.approx(0.5, abs=0.02)
    assert rows["w4a16"]["weight_mb"] < rows["bf16"]["weight_mb"]
    assert rows["w4a16"]["int4_gemv_weight_mb"] < rows["w4a16"]["gemv_weight_mb"]
    assert "int4_gemv_gbs" not in rows["bf16"]
    assert rows["fp32"]["kernels"] == {}  # FP32 is not deployed
    assert (
        set(rows["bf16"]["kernels"]["prefix"]) == set(rows["bf16"]["kernels"]["head"]) == {"bf16"}
    )
    assert rows["w4a16"]["kernels"]["head"]["int4"] > 0
    assert rows["w4a16"]["rss_x_fp32"] > 0 and data["kernel_choice"] == "packed"
    assert rows["daptq_budget"]["quantize_s"] > 0 and rows["fp32"]["quantize_s"] == 0
    doc = out.read_text()
    assert data["machine"]["torch"] in doc and "2 torch threads" in doc
    assert "daptq bench --deploy --families pi0 --runs 2 --size pi0=default" in doc
    assert "--kernel-choice packed" in doc and "## Kernels chosen" in doc
    assert "| pi0 / default | w4a16 | " in doc
    assert (out.parent / "performance_small_latency_vs_bytes.png").stat().st_size > 1000
    assert "(performance_small_latency_vs_bytes.png)" in doc and "## What limits it" in doc


def test_openvino_rows_run_the_exported_model_against_torchs_references(tmp_path, capsys):
    out = tmp_path / "performance_ov.md"
    args = ["bench", "--deploy", "--families", "pi0", "--size", "pi0=default", "--runs", "2"]
    args += ["--variants", "fp32", "bf16", "daptq_budget", "--runtimes", "torch", "openvino"]
    assert main([*args, "--no-compile", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["variant"], r["runtime"]) for r in data["results"]}
    # bf16 is torch's row only: OpenVINO runs the float32 export
    assert rows == {(v, "torch") for v in ("fp32", "bf16", "daptq_budget")} | {
        ("fp32", "openvino"),
        ("daptq_budget", "openvino"),
    }
    exported = {r["variant"]: r for r in data["results"] if r["runtime"] == "openvino"}
    for row in exported.values():
        assert row["chunk_x_fp32"] > 0 and row["chunk_x_bf16"] > 0 and row["rss_x_fp32"] > 0
        assert 0 < row["chunk_ms_p50"] <= row["chunk_ms_p95"] and row["export_s"] > 0
    # the exported file holds the integer codes: smaller than the float32 export
    assert exported["daptq_budget"]["weight_mb"] < exported["fp32"]["weight_mb"]
    assert exported["daptq_budget"]["dynamic_quantization_group"] > 0
    doc = out.read_text()
    assert (
        "| pi0 / default | daptq_budget (openvino) |" in doc and "--runtimes torch openvino" in doc
    )


def test_unknown_variant_is_refused_before_any_work():
    with pytest.raises(DaptqError, match="unknown variant 'w5'"):
        run_deploy_bench(["pi0"], ["fp32", "w5"], runs=1, threads=1, with_compile=False)


def test_bad_size_option_fails_with_one_line(capsys):
    assert main(["bench", "--deploy", "--size", "pi0"]) == 2
    assert "expected FAMILY=SIZE" in capsys.readouterr().err


def test_read_bandwidth_buffer_stops_growing_at_the_cap(monkeypatch):
    import daptq_ros.evidence.kernel_bench as kernel_bench

    monkeypatch.setattr(kernel_bench, "READ_BUFFER_CAP", 1 << 20)
    allocated = []
    ones = torch.ones
    monkeypatch.setattr(
        kernel_bench.torch, "ones", lambda n, **kw: allocated.append(n) or ones(n, **kw)
    )
    # a terabyte of weights: measured on a buffer of the cap, not of their size
    assert kernel_bench.read_bandwidth_gbs(1 << 40, repeats=2) > 0
    assert allocated == [(1 << 20) // 4]


def test_the_released_pi0_preset_has_siglip_and_no_keypoint_stem():
    from daptq_ros.evidence.deploy_bench import PRESET_INPUTS
    from daptq_ros.policy.families import Batch
    from daptq_ros.policy.families.pi0 import Pi0Adapter

    (image_size, views) = PRESET_INPUTS["pi0_siglip"]
    adapter = Pi0Adapter()
    shape = {"vocab_size": 64, "max_text_length": 8, "state_dim": 4, "action_dim": 4}
    inputs = {**shape, "horizon": 4, "image_size": image_size, "num_views": views}
    config = adapter.default_config(size="pi0_siglip", **inputs)
    vision = config["vlm_config"]["vision_config"]
    assert "daptq_vision_stem" not in config
    assert (vision["num_hidden_layers"], vision["hidden_size"]) == (27, 1152)
    assert (vision["image_size"], vision["patch_size"]) == (224, 14)
    # The same preset at a tiny width builds and samples from a 224 px view (256 tokens).
    tiny = {"hidden_size": 32, "expert_hidden_size": 32, "num_layers": 1, "num_heads": 2}
    tiny |= {"head_dim": 16, "intermediate_size": 64}
    tiny["siglip"] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "patch_size": 14,
    }
    model = adapter.build(adapter.default_config(size="pi0_siglip", overrides=tiny, **inputs))
    batch = Batch(
        images=torch.rand(1, 3, *image_size),
        input_ids=torch.randint(1, 64, (1, 8)),
        attention_mask=torch.ones(1, 8, dtype=torch.int64),
        state=torch.zeros(1, 4),
    )
    assert adapter.sample(model.eval(), batch, num_steps=2).shape == (1, 4, 4)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_bench_without_a_gpu_is_refused_before_any_work(capsys):
    assert main(["bench", "--deploy", "--device", "cuda", "--families", "pi0"]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda'" in err and "use device 'cpu'" in err and len(err.splitlines()) == 1


def test_a_row_whose_process_fails_is_listed_and_the_others_are_kept(monkeypatch):
    from daptq_ros.evidence import deploy_bench
    from daptq_ros.evidence.deploy_report import failed_rows

    def measured_row(scratch, common, runtime, timing, options):
        if common["variant"] == "w8a8":
            raise DaptqError(
                "deploy bench: prepare of w8a8 failed (exit -9 (killed: out of memory?)): "
            )
        return {**common, "runtime": runtime, "chunk_ms_p50": 4.0, "weight_mb": 2.0} | {
            "rss_loaded_mb": 8.0
        }

    monkeypatch.setattr(deploy_bench, "_measured_row", measured_row)
    messages = []
    report = run_deploy_bench(
        ["pi0"], ["fp32", "w8a8", "bf16"], 1, 1, False, progress=messages.append
    )
    assert [row["variant"] for row in report["results"]] == ["fp32", "bf16"]
    assert [row["variant"] for row in report["failed"]] == ["w8a8"]
    assert any("did not run" in message and "out of memory" in message for message in messages)
    listed = "\n".join(failed_rows(report["failed"]))
    assert "## Rows that did not run" in listed and "w8a8 (torch): deploy bench" in listed
