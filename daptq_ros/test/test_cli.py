"""The `daptq` command: help texts, one-line errors, the kernel bench and the quantization demo."""

import argparse
import json

import pytest

from daptq_ros.cli import COMMANDS, build_parser, main


def _options_without_help(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{prog} {name}")
        elif action.dest != "help" and not action.help:
            missing.append(f"{prog} {action.option_strings or action.dest}")
    return missing


def test_every_subcommand_has_help_for_every_option():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) >= {"bench", "quant-demo"}
    assert list(subparsers.choices) == list(COMMANDS)
    assert _options_without_help(parser, "daptq") == []


def test_bad_bit_config_fails_with_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("method: rtn\nweight_bits: 1\n")
    assert main(["quant-demo", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weight_bits=1 is not allowed" in err


def test_train_settings_are_parsed_and_a_bad_one_fails_with_one_line(tmp_path, capsys):
    from daptq_ros.commands.train import parse_settings

    assert parse_settings(["guidance_scale=1.5", "vision=keypoints", "stem_channels=[8,16]"]) == {
        "guidance_scale": 1.5,
        "vision": "keypoints",
        "stem_channels": [8, 16],
    }
    args = ["train", "--data", str(tmp_path), "--family", "cogact", "--out", str(tmp_path / "m")]
    assert main([*args, "--set", "guidance_scale"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--set 'guidance_scale' is not KEY=VALUE" in err


def test_group_size_not_dividing_the_width_fails_with_one_line(tmp_path, capsys):
    config = tmp_path / "g100.yaml"
    config.write_text("weight_bits: 4\ngroup_size: 100\n")
    assert (
        main(
            [
                "quant-demo",
                "--config",
                str(config),
                "--hidden",
                "128",
                "--layers",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "group_size=100 does not divide in_features=128" in err


def test_kernel_bench_json_reports_every_variant_with_ratios(capsys):
    assert (
        main(
            [
                "bench",
                "--kernels",
                "--widths",
                "256",
                "--batches",
                "1",
                "--layers",
                "2",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {
        "fp32",
        "bf16",
        "int8_weight_only",
        "int8_dynamic",
        "int4_g128",
        "mixed_int4_bf16",
    }
    assert rows["fp32"]["latency_vs_fp32"] == 1.0 and rows["fp32"]["bytes_vs_fp32"] == 1.0
    assert (
        rows["int4_g128"]["bytes_vs_fp32"] <= 0.14
        and rows["int8_weight_only"]["bytes_vs_fp32"] <= 0.26
    )
    assert report["dram_copy_bandwidth_gbs"] > 0 and all(
        r["roofline_share"] > 0 for r in rows.values()
    )


def test_bench_without_a_choice_is_an_error(capsys):
    assert main(["bench"]) == 2
    assert "--kernels" in capsys.readouterr().err


@pytest.mark.slow
def test_quant_demo_runs_and_round_trips(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "quant-demo",
                "--hidden",
                "128",
                "--layers",
                "1",
                "--calib-batches",
                "2",
                "--presets",
                "w4a16",
                "gptq_w4",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in report["rows"]] == ["fp32", "w4a16", "gptq_w4"]
    assert report["round_trip"]["max_abs_diff_after_reload"] == 0.0
    assert (out / "report.md").read_text().startswith("# Quantization demo")
    assert 0 < report["rows"][1]["logits_rel_error"] < 1


def test_without_ray_eval_and_report_run_serially(monkeypatch, capsys):
    import argparse

    from daptq_ros.commands import fanout
    from daptq_ros.commands.eval import resolve_parallel

    monkeypatch.setattr(fanout, "ray_available", lambda: False)
    monkeypatch.setattr(fanout, "available_cores", lambda: 4)
    default = argparse.Namespace(workers=None, address=None, threads=None)
    resolve_parallel(default)
    assert (default.workers, default.threads) == (0, 4)  # serial, on every core
    asked = argparse.Namespace(workers=2, address=None, threads=None)
    resolve_parallel(asked)
    assert asked.workers == 0 and "Ray is not installed" in capsys.readouterr().err


def test_ray_workers_default_to_the_cores_and_share_them(monkeypatch):
    import argparse

    from daptq_ros.commands import fanout
    from daptq_ros.commands.eval import resolve_parallel

    monkeypatch.setattr(fanout, "ray_available", lambda: True)
    monkeypatch.setattr(fanout, "available_cores", lambda: 4)
    default = argparse.Namespace(workers=None, address=None, threads=None)
    resolve_parallel(default)
    assert (default.workers, default.threads) == (4, 1)
    two = argparse.Namespace(workers=2, address=None, threads=None)
    resolve_parallel(two)
    assert (two.workers, two.threads) == (2, 2)


def test_a_subcommand_registers_only_itself():
    """`daptq drift` builds the drift parser alone, so it does not import what the others need."""
    parser = build_parser("drift")
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert list(subparsers.choices) == ["drift"]
    everything = build_parser("no-such-command")  # an unknown one: all, for argparse's error
    assert len(next(a for a in everything._actions if a.dest == "command").choices) == len(COMMANDS)
