"""Per-layer kernel choice: every candidate computes the bit config's arithmetic, the modes pick
by the rules they state, timings are cached per machine, and a policy deploys with them."""

import copy
import json
from collections import Counter

import pytest
import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant import deploy, load_config, quantize
from daptq_ros.quant import kernel_choice as kc
from daptq_ros.quant.deploy import DeployedLinear, kernel_candidates, packed_kernels

# bf16 kernels compute with 8 significant bits (as the deployed layers always did, see
# test_quant_deploy.py); fp32 and int8 dynamic compute the simulated arithmetic in float32.
BF16_TOLERANCE, FLOAT32_TOLERANCE = 3e-2, 1e-5


def _layer(preset: str, width: int = 256, calibration=None) -> nn.Module:
    torch.manual_seed(0)
    return quantize(nn.Sequential(nn.Linear(width, width)), load_config(preset), calibration)[0]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("preset", ["w4a16", "w4a8", "w3a16", "w8a16", "w8a8", "bf16"])
def test_every_candidate_kernel_computes_the_simulated_layer(preset):
    layer = _layer(preset)
    x = torch.randn(3, 7, 256)
    with torch.no_grad():
        expected = layer(x)
        for kernel in kernel_candidates(layer):
            actual = DeployedLinear(layer, kernel)(x)
            assert actual.dtype == torch.float32 and actual.shape == expected.shape
            exact = kernel in ("fp32", "int8_dynamic")
            tolerance = FLOAT32_TOLERANCE if exact else BF16_TOLERANCE
            assert _relative_error(actual, expected) < tolerance, kernel


def test_w8a8_on_int_mm_is_the_simulated_arithmetic_for_smoothed_layers_too():
    calibration = [torch.randn(32, 256) * torch.linspace(0.1, 20, 256) for _ in range(4)]
    layer = _layer("smoothquant_w8a8", calibration=calibration)
    with torch.no_grad():
        simulated, deployed = layer(calibration[0]), DeployedLinear(layer, "int8_dynamic")
        assert _relative_error(deployed(calibration[0]), simulated) < FLOAT32_TOLERANCE


def test_candidates_packed_first_and_what_stays_packed():
    assert kernel_candidates(_layer("w4a16")) == ("int4", "bf16", "fp32")
    assert kernel_candidates(_layer("w8a8")) == ("int8_dynamic", "int8_weight_only", "bf16", "fp32")
    assert packed_kernels(_layer("w8a8")) == ("int8_dynamic", "int8_weight_only")
    assert packed_kernels(_layer("bf16")) == ("bf16",)
    narrow = quantize(nn.Sequential(nn.Linear(4, 64)), load_config("w8a8"))[0]
    assert "int8_weight_only" not in kernel_candidates(narrow)  # needs 16-column blocks
    with pytest.raises(DaptqError, match="kernel 'int4' cannot run W8 sym channel A8 256x256"):
        DeployedLinear(_layer("w8a8"), "int4")


def test_dense_kernels_hold_the_dequantized_weight_and_packed_ones_do_not():
    layer = _layer("w4a16", width=1024)
    sizes = {k: sum(_bytes(DeployedLinear(layer, k))) for k in ("int4", "bf16", "fp32")}
    assert sizes["int4"] < 0.3 * sizes["bf16"] and sizes["fp32"] == 2 * sizes["bf16"]


def _bytes(module: nn.Module) -> list[int]:
    """Bytes of every parameter and buffer of a module."""
    return [t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]]


def test_modes_pick_by_their_rules():
    layer = _layer("w4a16")
    slow_packed = {"int4": 30.0, "bf16": 20.0, "fp32": 10.0}
    fast_packed = {"int4": 15.0, "bf16": 20.0, "fp32": 10.0}
    marginal_packed = {"int4": 19.0, "bf16": 20.0, "fp32": 25.0}
    assert kc.pick(layer, fast_packed, "auto") == "int4"  # packed costs nothing against bf16
    assert kc.pick(layer, slow_packed, "auto") == "fp32"  # packed would be slower than bf16
    assert kc.pick(layer, marginal_packed, "auto") == "int4"  # within noise, but the fastest
    assert kc.pick(layer, {"int4": 19.0, "bf16": 20.0, "fp32": 17.0}, "auto") == "fp32"
    assert kc.pick(layer, {"int4": 30.0, "bf16": 10.0, "fp32": 9.5}, "auto") == "fp32"
    assert kc.pick(layer, {"int4": 30.0, "bf16": 10.0, "fp32": 12.0}, "auto") == "bf16"
    assert kc.pick(layer, fast_packed, "fastest") == "fp32"
    assert kc.pick(layer, slow_packed, "packed") == "int4"
    w8a8 = _layer("w8a8")
    timings = {"int8_dynamic": 12.0, "int8_weight_only": 8.0, "bf16": 10.0, "fp32": 11.0}
    assert kc.pick(w8a8, timings, "auto") == "int8_weight_only"
    assert kc.pick(w8a8, timings, "packed") == "int8_weight_only"
    kept = nn.Linear(256, 256)
    assert kc.pick(kept, {"bf16": 20.0, "fp32": 5.0}, "auto") == "bf16"  # BF16 is the reference
    assert kc.pick(kept, {"bf16": 20.0, "fp32": 5.0}, "fastest") == "fp32"
    # a device without the packed kernel (measured as failing): auto falls back, packed says so
    assert kc.pick(layer, {"bf16": 1.0, "fp32": 2.0}, "auto") == "bf16"
    with pytest.raises(DaptqError, match="no packed kernel ran W4 asym g128 256x256"):
        kc.pick(layer, {"bf16": 1.0}, "packed")


def test_record_rows_counts_the_rows_of_every_call():
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 8))
    unused = nn.Linear(8, 8)
    model.add_module("unused", unused)
    rows = kc.record_rows(
        model, lambda: (model[1](model[0](torch.randn(2, 5, 8))), model[0](torch.randn(3, 8)))
    )
    assert rows == {"0": Counter({10: 1, 3: 1}), "1": Counter({10: 1})}
    assert not model[0]._forward_hooks  # the hooks are gone afterwards


def test_choose_kernels_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    model = quantize(nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), load_config("w4a16"))
    rows = {"0": Counter({9: 10}), "1": Counter({9: 10})}
    cache_file = tmp_path / "timings.json"
    calls = []
    real = kc.time_kernels
    monkeypatch.setattr(kc, "time_kernels", lambda *a, **k: calls.append(a) or real(*a, **k))
    layers = dict(model.named_children())
    first = kc.choose_kernels(layers, rows, "auto", cache=kc.KernelTimingCache(cache_file))
    assert len(calls) == 1  # both layers share one signature
    assert set(first) == {"0", "1"} and first["0"].rows == {9: 10}
    assert set(first["0"].timings_us) == {"int4", "bf16", "fp32"}
    stored = json.loads(cache_file.read_text())
    assert list(stored) == [kc.machine_key()] and "torch " in kc.machine_key()
    second = kc.choose_kernels(layers, rows, "fastest", cache=kc.KernelTimingCache(cache_file))
    assert len(calls) == 1 and second["0"].timings_us == first["0"].timings_us
    assert second["0"].kernel == min(first["0"].timings_us, key=first["0"].timings_us.get)
    with pytest.raises(DaptqError, match="kernel choice 'quick' is unknown"):
        kc.choose_kernels(layers, rows, "quick", cache=kc.KernelTimingCache(cache_file))


def test_a_kernel_this_machine_cannot_run_is_left_out(monkeypatch, daptq_logs):
    layer = _layer("w8a8")

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr("daptq_ros.quant.kernels.int8_weight_only_matmul", broken)
    timings = kc.time_kernels(layer, Counter({4: 1}))
    assert timings["int8_weight_only"] is None  # cached as not runnable here
    assert {k for k, us in timings.items() if us} == {"int8_dynamic", "bf16", "fp32"}
    assert "int8_weight_only cannot run W8 sym channel A8" in daptq_logs.text


def test_an_unwritable_cache_only_warns(tmp_path, daptq_logs):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = kc.KernelTimingCache(blocker / "timings.json")
    cache.put("x", {"bf16": 1.0})
    cache.save()
    assert "kernel timings not cached" in daptq_logs.text


def test_deploy_takes_the_chosen_kernels():
    simulated = quantize(
        nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), load_config("w8a8")
    )
    deployed = deploy(copy.deepcopy(simulated), kernels_by_layer={"1": "fp32"})
    assert [m.kernel for m in deployed] == ["int8_dynamic", "fp32"]
    x = torch.randn(5, 256)
    with torch.no_grad():
        assert _relative_error(deployed(x), simulated(x)) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("mode", ["auto", "packed", "fastest"])
def test_policy_deploys_with_measured_kernels_and_predicts_the_same_chunk(mode):
    import numpy as np

    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.policy.quantize import load_policy_with_bits

    model_dir = default_model_dir("pi0")
    deployed, _ = load_policy_with_bits(model_dir, "w8a8", kernel_choice=mode)
    simulated, _ = load_policy_with_bits(model_dir, "w8a8", deployed=False)
    choices = deployed.kernel_choices
    assert choices and all(c.kernel in c.timings_us for c in choices.values())
    deployed_layers = {n: m for n, m in deployed.model.named_modules() if n in choices}
    assert all(isinstance(m, DeployedLinear) for m in deployed_layers.values())
    assert {n: m.kernel for n, m in deployed_layers.items()} == {
        n: c.kernel for n, c in choices.items()
    }
    if mode == "packed":
        assert {c.kernel for c in choices.values()} <= {"int8_dynamic", "int8_weight_only", "bf16"}
    image = np.zeros((*deployed.loaded.meta.image_size, 3), np.uint8)
    state = np.zeros(deployed.state_dim)
    a = deployed.predict(image, "push the puck", state).actions
    b = simulated.predict(image, "push the puck", state).actions
    assert np.abs(a - b).max() < 0.05 * (np.abs(b).max() + 1e-6)


def test_deploy_measured_rebuilds_the_layers_whose_choice_differs(tmp_path):
    simulated = quantize(
        nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), load_config("w4a16")
    )
    x = torch.randn(64, 256)
    with torch.no_grad():
        expected = simulated(x)
    cache = kc.KernelTimingCache(tmp_path / "timings.json")
    signature = kc.layer_signature(simulated[1], Counter({64: 1}), torch.bfloat16)
    cache.put(signature, {"int4": 30.0, "bf16": 20.0, "fp32": 10.0})  # as if measured
    model = nn.Sequential(simulated[0], simulated[1])
    choices = kc.deploy_measured(
        model, lambda: model(x), "auto", whole_model_bf16=True, cache=cache
    )
    assert {name: c.kernel for name, c in choices.items()} == {"0": "fp32", "1": "fp32"}
    assert all(isinstance(m, DeployedLinear) and m.kernel == "fp32" for m in model)
    assert model[0].weight.dtype == torch.float32  # whole_model_bf16 leaves a kernel's dtype
    with torch.no_grad():
        assert _relative_error(model(x), expected) < FLOAT32_TOLERANCE
    with pytest.raises(DaptqError, match="kernel choice 'speed' is unknown"):
        kc.deploy_measured(model, lambda: None, "speed")


def test_every_kernel_op_of_every_device_exists_in_this_torch():
    from daptq_ros.quant.kernels import KERNEL_OPS

    assert set(KERNEL_OPS) == {"cpu", "cuda"}
    for device, ops in KERNEL_OPS.items():
        assert set(ops) == {"int4", "int8_weight_only", "int8_dynamic"}, device
        for op in ops.values():
            assert hasattr(torch.ops.aten, op), f"{device}: aten.{op}"


def test_cuda_int4_layout_helpers():
    from daptq_ros.quant.kernels import cuda_inner_k_tiles, nibble_pack

    codes = torch.tensor([[1, 2, 15, 0], [7, 8, 9, 10]], dtype=torch.uint8)
    assert nibble_pack(codes).tolist() == [[0x12, 0xF0], [0x78, 0x9A]]
    assert [cuda_inner_k_tiles(k) for k in (128, 256, 64, 96, 32)] == [8, 8, 4, 2, 2]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_policy_is_refused_with_the_reason_and_fix():
    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.policy.quantize import load_policy_with_bits

    with pytest.raises(
        DaptqError, match=r"device 'cuda': torch .* (no CUDA support|no GPU).*use device 'cpu'"
    ):
        load_policy_with_bits(default_model_dir("pi0"), "w4a16", device="cuda")
    with pytest.raises(DaptqError, match="run on 'cpu' or 'cuda', not 'tpu'"):
        load_policy_with_bits(default_model_dir("pi0"), "w4a16", device="tpu")


def test_fused_activation_quantization_is_the_same_arithmetic_and_only_for_large_a8_layers():
    layer = _layer("w4a8", width=256)
    x = torch.randn(200, 256) * 3
    with torch.no_grad():
        eager = DeployedLinear(layer, "fp32")(x)
        fused = DeployedLinear(layer, "fp32+fused")(x)
    assert torch.equal(eager, fused)
    assert "int4+fused" in kc.timed_candidates(layer, Counter({200: 1}))  # 51 200 values
    assert kc.timed_candidates(layer, Counter({9: 10})) == ["int4", "bf16", "fp32"]
    assert "int8_dynamic+fused" not in kc.timed_candidates(_layer("w8a8"), Counter({200: 1}))
    assert kc.timed_candidates(_layer("w4a16"), Counter({200: 1})) == ["int4", "bf16", "fp32"]
    with pytest.raises(DaptqError, match=r"kernel 'int8_dynamic\+fused' cannot run"):
        DeployedLinear(_layer("w8a8"), "int8_dynamic+fused")  # it quantizes inside _int_mm
    with pytest.raises(DaptqError, match=r"kernel 'int4\+fused' cannot run W4 asym g128 256x256"):
        DeployedLinear(_layer("w4a16"), "int4+fused")
    timings = {"int4": 30.0, "int4+fused": 12.0, "bf16": 20.0, "fp32": 25.0}
    assert kc.pick(layer, timings, "auto") == "int4+fused"
