"""Tests of the benchmark_model parser on recorded outputs (tests/data/benchmark_model)."""

import os

import pytest

from fdi_keras.profiling.benchmark_model import (
    BenchmarkResult,
    parse_benchmark_output,
    parse_op_profile,
    parse_stats_line,
)

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "benchmark_model")


def _read(name: str) -> str:
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def _top(result_ops):
    return max(result_ops, key=lambda op: op.avg_ms)


def test_old_build_with_start_column():
    result = parse_benchmark_output(_read("tflite_v2_8_start_column_riscv64.txt"))
    # count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798
    assert isinstance(result, BenchmarkResult)
    assert result.avg_us == pytest.approx(2.95034e6)
    assert result.std_us == 109798
    assert (result.count, result.min_us, result.max_us) == (50, 2727568, 3189954)
    assert result.median_us is None
    assert result.timings_from == "run"
    # Warm-up printed as "count=1 curr=3512391".
    assert result.warmup.count == 1 and result.warmup.avg_us == 3512391
    assert result.summary_us["Inference (avg)"] == pytest.approx(2.95034e6)
    assert result.summary_us["Init"] == 17187
    # The regular-run table only (the init profile's AllocateTensors row is left out).
    assert len(result.ops) == 31
    assert all(op.start_ms is not None and op.graph == "primary" for op in result.ops)
    first = result.ops[0]
    assert first.node_type == "CONV_2D"
    assert first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert (first.start_ms, first.first_ms, first.avg_ms) == (0.066, 87.754, 60.957)
    assert (first.percent, first.cdf_percent, first.mem_kb, first.times_called) == (
        2.066,
        2.066,
        0.0,
        1,
    )
    top = _top(result.ops)
    assert top.name == "[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10"
    assert top.avg_ms == 277.374
    assert result.ops[-1].node_type == "SOFTMAX" and result.ops[-1].start_ms == 2950.011
    assert result.by_type == {
        "CONV_2D": 2651.853,
        "DEPTHWISE_CONV_2D": 296.919,
        "AVERAGE_POOL_2D": 0.869,
        "SOFTMAX": 0.232,
        "SQUEEZE": 0.016,
    }


def test_litert_build_with_xnnpack_rows_and_median():
    result = parse_benchmark_output(_read("litert_xnnpack_fc_fp32_android_sme2.txt"))
    # INFO: count=1000 first=1407 curr=1370 min=1362 max=1452 avg=1379.64 std=14 p5=1365
    # median=1373 p95=1409 (not the profiler's "Timings (microseconds): count=1357 ...").
    assert result.avg_us == 1379.64
    assert result.std_us == 14
    assert result.count == 1000
    assert result.median_us == 1373
    assert result.warmup.count == 358 and result.warmup.median_us == 1377
    assert [op.node_type for op in result.ops] == [
        "LiteRT::Run[buffer registration]",
        "AllocateTensors",
        "Static Reshape (NC)",
        "Fully Connected (NC, F32) GEMM",
        "LiteRT::Run[Buffer sync]",
    ]
    assert all(op.start_ms is None for op in result.ops)
    top = _top(result.ops)
    assert top.name == "Delegate/Fully Connected (NC, F32) GEMM:1"
    assert (top.first_ms, top.avg_ms, top.percent, top.cdf_percent) == (
        1.564,
        1.269,
        97.059,
        98.769,
    )
    allocate = result.ops[1]
    assert (allocate.times_called, allocate.mem_kb) == (0, 56.0)
    assert result.by_type["Fully Connected (NC, F32) GEMM"] == 1.268
    assert len(result.by_type) == 5


def test_csv_mode_matches_the_text_table():
    csv = parse_benchmark_output(_read("CONSTRUCTED_csv_mode_xnnpack.txt"))
    text = parse_benchmark_output(_read("litert_xnnpack_fc_fp32_android_sme2.txt"))
    assert csv.avg_us == 1379.64 and csv.count == 1000

    def key(ops):
        return [(o.node_type, o.name, o.first_ms, o.avg_ms, o.percent, o.times_called) for o in ops]

    assert key(csv.ops) == key(text.ops)
    # The CSV writer replaced the comma of the name by a tab; the parser restores it.
    assert csv.ops[3].name == "Delegate/Fully Connected (NC, F32) GEMM:1"
    assert csv.by_type == text.by_type


def test_2019_build_space_separated_without_section_header():
    result = parse_benchmark_output(_read("tflite_2019_spaces_no_section_header.txt"))
    # count=626 first=1675 curr=1587 min=1586 max=1684 avg=1592.71 std=14
    assert (result.avg_us, result.std_us, result.count) == (1592.71, 14, 626)
    assert result.warmup.avg_us == 1652.99
    assert [(op.node_type, op.start_ms, op.avg_ms, op.name) for op in result.ops] == [
        ("DEPTHWISE_CONV_2D", 0.0, 0.719, "[Relu6]"),
        ("FULLY_CONNECTED", 0.719, 0.849, "[BiasAdd_1]"),
    ]
    assert result.summary_us == {}


def test_output_without_op_profiling():
    result = parse_benchmark_output(_read("tflite_android_no_op_profiling.txt"))
    assert (result.avg_us, result.std_us, result.count) == (1039.66, 22, 1000)
    assert result.ops == [] and result.by_type == {}
    assert result.summary_us["Warmup (avg)"] == 1041.15


def test_nnapi_op_table_with_commas_in_names():
    ops, by_type = parse_op_profile(_read("tflite_nnapi_op_table_only.txt"))
    assert len(ops) == 8 and by_type == {}
    assert ops[0].node_type == "TfLiteNnapiDelegate"
    assert ops[0].name == "[MobilenetV2/expanded_conv_16/project/add_fold, aspp0/Relu]:71"
    assert ops[-1].node_type == "ARG_MAX" and ops[-1].start_ms == 36.740
    assert _top(ops).name == "[ResizeBilinear_2]:69" and _top(ops).avg_ms == 22.369


def test_error_without_timings_names_what_is_missing():
    with pytest.raises(ValueError, match="No timing of the regular runs") as info:
        parse_benchmark_output(_read("tflite_nnapi_op_table_only.txt"))
    assert "[ArgMax]:70" in str(info.value)  # the output's last lines are shown
    with pytest.raises(ValueError, match="<empty output>"):
        parse_benchmark_output("")


def test_error_when_the_regular_run_did_not_finish():
    # The warm-up line alone must not pass for the regular runs.
    text = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "count=9 first=64791 curr=56295 min=54873 max=65831 avg=57758.2 std=4065\n\n"
        "Running benchmark for at least 50 iterations and at least 1 seconds\n"
        "ERROR: Node number 3 (CONV_2D) failed to invoke.\n"
    )
    with pytest.raises(ValueError, match="failed to invoke"):
        parse_benchmark_output(text)


def test_falls_back_to_the_profile_timings():
    text = _read("litert_xnnpack_fc_fp32_android_sme2.txt").replace("INFO: count=", "INFO: n=")
    result = parse_benchmark_output(text)
    assert result.timings_from == "profile"
    assert (result.avg_us, result.std_us, result.count) == (1307.19, 21, 1357)


def test_graphs_are_labelled():
    # Layout of ProfileSummaryDefaultFormatter::GenerateReport for a model with a WHILE body
    # and XNNPack's detailed profile (rows written for this test, not recorded).
    header = "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]"
    text = "\n".join(
        [
            "count=10 first=5 curr=5 min=5 max=6 avg=5.2 std=0",
            "Operator-wise Profiling Info for Regular Benchmark Runs:",
            "Primary graph profile:",
            "============================== Run Order ==============================",
            header,
            "\tWHILE\t0.050\t0.040\t80.000%\t80.000%\t0.000\t1\t[while]:3",
            "",
            "Subgraph (index: 1) profile:",
            "============================== Run Order ==============================",
            header,
            "\tFULLY_CONNECTED\t0.002\t0.002\t50.000%\t50.000%\t0.000\t8\t[fc]:0",
            "",
            "Subgraph (index: 1) Timings (microseconds): count=10 curr=40",
            "Delegate internal: ",
            "============================== Run Order ==============================",
            header,
            "\tFully Connected (NC, F32) GEMM\t0.001\t0.001\t9.000%\t9.000%\t0.000\t1\t"
            "Delegate/Fully Connected (NC, F32) GEMM:0",
            "",
        ]
    )
    result = parse_benchmark_output(text)
    assert [(op.graph, op.node_type) for op in result.ops] == [
        ("primary", "WHILE"),
        ("subgraph 1", "FULLY_CONNECTED"),
        ("delegate internal", "Fully Connected (NC, F32) GEMM"),
    ]
    assert result.ops[1].times_called == 8


def test_parse_stats_line():
    stats = parse_stats_line(
        "INFO: count=64 first=16067 curr=15102 min=14661 max=17579 avg=15517.6 std=551"
    )
    assert (stats.count, stats.avg_us, stats.std_us, stats.first_us) == (64, 15517.6, 551, 16067)
    same = parse_stats_line("count=50 curr=1000(all same)")
    assert (same.avg_us, same.std_us, same.min_us, same.max_us) == (1000, 0, 1000, 1000)
    assert parse_stats_line("Memory (bytes): count=0") is None
    assert parse_stats_line("Num threads: [4]") is None
