"""Parser for the text printed by LiteRT/TFLite's `benchmark_model` tool.

Handles the run lines (`count=... first=... avg=... std=...`, plain or behind a log prefix), the
`Inference timings in us:` line, and the op-profile tables of `--enable_op_profiling=true`: the
"Run Order" and "Summary by node type" sections, with or without the `[start]` column of older
builds, tab or space separated, and the CSV form of `--op_profiling_output_mode=csv`. Node types
and names may contain spaces and commas (XNNPack rows such as
`Convolution (NHWC, F32) IGEMM ... Delegate/Convolution (NHWC, F32) IGEMM:0`).

Example:

    result = parse_benchmark_output(open("run.txt").read())
    print(result.avg_us, result.std_us, result.count)
    for op in result.ops:
        print(op.node_type, op.avg_ms, op.name)
"""

from __future__ import annotations

import dataclasses
import re

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SECTION = re.compile(
    r"=+ (Run Order|Top by Computation Time|Top by Memory Use|Summary by node type) =+"
)
_RUN_HEADER = re.compile(r"Running benchmark for at least \d+ iterations")
_GRAPH_MARK = re.compile(r"^(?:Primary graph|Subgraph \(index: (\d+)\)) (?:profile|summary):\s*$")
_TIMINGS_US = re.compile(r"Inference timings in us: (.*)$")
_KEY_VALUE = re.compile(rf"(\w+)=({_NUM})")
_TAIL_LINES = 15


@dataclasses.dataclass(frozen=True)
class OpRow:
    """One row of a "Run Order" table: one op (or delegate partition) of the model.

    `start_ms` is None for builds without the `[start]` column. `graph` says which table the row
    came from: "primary", "subgraph N" (e.g. the body of a WHILE loop), or "delegate internal"
    (XNNPack's own ops, whose time is also inside the delegate's row of the primary graph).
    """

    node_type: str
    avg_ms: float
    percent: float
    times_called: int
    name: str
    first_ms: float
    start_ms: float | None
    mem_kb: float
    cdf_percent: float
    graph: str = "primary"


@dataclasses.dataclass(frozen=True)
class RunStats:
    """A `count=... first=... curr=... min=... max=... avg=... std=...` line, in microseconds.

    A run whose samples were all equal prints only `count=N curr=X`; then every statistic is X
    and `std_us` is 0. `median_us` is set only by builds that print `median=`.
    """

    count: int
    avg_us: float
    std_us: float
    min_us: float
    max_us: float
    first_us: float | None = None
    median_us: float | None = None


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """What one `benchmark_model` run measured.

    The top-level numbers are those of the regular (post warm-up) runs: `benchmark_model`
    reports their mean `avg_us` and standard deviation `std_us`; recent LiteRT builds also print
    a median (`median_us`, else None). `ops` are the regular-run "Run Order" rows and `by_type`
    the regular-run "Summary by node type" (node type -> avg ms per run, summed over graphs).
    `timings_from` is "run" when the numbers come from the run line, or "profile" when that line
    was missing and the op profiler's `Timings (microseconds)` line was used instead.
    """

    avg_us: float
    std_us: float
    count: int
    min_us: float
    max_us: float
    ops: list[OpRow] = dataclasses.field(default_factory=list)
    by_type: dict[str, float] = dataclasses.field(default_factory=dict)
    median_us: float | None = None
    warmup: RunStats | None = None
    summary_us: dict[str, float] = dataclasses.field(default_factory=dict)
    timings_from: str = "run"


def parse_stats_line(line: str) -> RunStats | None:
    """Parses the statistics after `count=` in `line`; None when the line has none."""
    at = line.find("count=")
    if at < 0:
        return None
    values = {key: float(value) for key, value in _KEY_VALUE.findall(line[at:])}
    count = int(values.get("count", 0))
    if count == 0 or ("avg" not in values and "curr" not in values):
        return None
    avg = values.get("avg", values.get("curr"))
    return RunStats(
        count=count,
        avg_us=avg,
        std_us=values.get("std", 0.0),
        min_us=values.get("min", avg),
        max_us=values.get("max", avg),
        first_us=values.get("first"),
        median_us=values.get("median"),
    )


def _row_pattern(csv: bool, with_start: bool) -> re.Pattern:
    sep = r",\s*" if csv else r"\s+"
    start = rf"(?P<start>{_NUM}){sep}" if with_start else ""
    return re.compile(
        rf"^\s*(?P<type>\S.*?){sep}{start}(?P<first>{_NUM}){sep}(?P<avg>{_NUM}){sep}"
        rf"(?P<pct>{_NUM})%{sep}(?P<cdf>{_NUM})%{sep}(?P<mem>{_NUM}){sep}(?P<times>\d+)"
        rf"{sep}(?P<name>.*?)\s*$"
    )


def _summary_pattern(csv: bool) -> re.Pattern:
    sep = r",\s*" if csv else r"\s+"
    return re.compile(
        rf"^\s*(?P<type>\S.*?){sep}(?P<count>\d+){sep}(?P<avg>{_NUM}){sep}(?P<pct>{_NUM})%"
        rf"{sep}(?P<cdf>{_NUM})%{sep}(?P<mem>{_NUM})(?:{sep}(?P<times>\d+))?\s*$"
    )


def _op_row(match: re.Match, csv: bool, graph: str) -> OpRow:
    name = match["name"]
    if csv:  # the CSV writer turns the commas of a name into tabs
        name = name.replace("\t", ",")
    return OpRow(
        node_type=match["type"].strip(),
        avg_ms=float(match["avg"]),
        percent=float(match["pct"]),
        times_called=int(match["times"]),
        name=name,
        first_ms=float(match["first"]),
        start_ms=float(match["start"]) if match.groupdict().get("start") else None,
        mem_kb=float(match["mem"]),
        cdf_percent=float(match["cdf"]),
        graph=graph,
    )


def _graph_of(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("INFO: "):
        stripped = stripped[len("INFO: ") :]
    if stripped.startswith("Delegate internal:"):
        return "delegate internal"
    mark = _GRAPH_MARK.match(stripped)
    if mark:
        return f"subgraph {mark[1]}" if mark[1] else "primary"
    return None


def _regular_lines(lines: list[str]) -> list[str]:
    """The lines of the regular-run profile (all of them when the output has no such header)."""
    for i in range(len(lines) - 1, -1, -1):
        if "Operator-wise Profiling Info for Regular Benchmark Runs" in lines[i]:
            return lines[i + 1 :]
    for i in range(len(lines) - 1, -1, -1):
        if "Profiling Info for Benchmark Initialization" in lines[i]:
            # Builds without the regular-run header: its profile follows the init profile's
            # closing "N nodes observed" line.
            for j in range(i + 1, len(lines)):
                if lines[j].strip().endswith("nodes observed"):
                    return lines[j + 1 :]
            return []
    return lines


def parse_op_profile(text: str) -> tuple[list[OpRow], dict[str, float]]:
    """The regular-run op table of a `benchmark_model --enable_op_profiling=true` output.

    Args:
        text: the tool's output (stdout and stderr together), or the op-profile part of it.

    Returns:
        `(ops, by_type)`: the "Run Order" rows of every graph in run order, and the
        "Summary by node type" average ms per run of each node type (summed over graphs). Both
        are empty when the output holds no op profile.
    """
    ops: list[OpRow] = []
    by_type: dict[str, float] = {}
    graph, section, pattern, csv = "primary", None, None, False
    for line in _regular_lines(text.splitlines()):
        title = _SECTION.search(line)
        if title:
            section, pattern = title[1], None
            continue
        new_graph = _graph_of(line)
        if new_graph:
            graph, section = new_graph, None
            continue
        if section is None:
            continue
        if not line.strip():
            if pattern is not None:
                section = None
            continue
        if pattern is None:  # the column header line follows the section title
            header = line.strip().lower()
            if not header.startswith(("[node type]", "node type")):
                section = None
                continue
            csv = not header.startswith("[")
            if section == "Summary by node type":
                pattern = _summary_pattern(csv)
            else:
                pattern = _row_pattern(csv, with_start="start" in header)
            continue
        match = pattern.match(line)
        if match is None:
            continue
        if section == "Run Order":
            ops.append(_op_row(match, csv, graph))
        elif section == "Summary by node type":
            node_type = match["type"].strip()
            by_type[node_type] = by_type.get(node_type, 0.0) + float(match["avg"])
    return ops, by_type


def _run_stats(lines: list[str]) -> tuple[RunStats | None, RunStats | None]:
    """(warm-up, regular) run lines; the regular one is None when it is missing."""
    runs, headers = [], 0
    for line in lines:
        if _RUN_HEADER.search(line):
            headers += 1
            continue
        at = line.find("count=")
        if at < 0 or "Timings (microseconds)" in line[:at] or "Memory (bytes)" in line[:at]:
            continue
        stats = parse_stats_line(line)
        if stats is not None:
            runs.append(stats)
    if len(runs) >= 2:
        return runs[0], runs[-1]
    if len(runs) == 1 and headers < 2:
        return None, runs[0]
    # Two "Running benchmark" headers and one run line: the regular run did not finish.
    return (runs[0] if runs else None), None


def _profile_timings(lines: list[str]) -> RunStats | None:
    stats = None
    for line in _regular_lines(lines):
        if "Timings (microseconds):" in line and not line.lstrip().startswith("Subgraph"):
            stats = parse_stats_line(line) or stats
    return stats


def _summary_us(lines: list[str]) -> dict[str, float]:
    for line in lines:
        found = _TIMINGS_US.search(line)
        if found:
            summary = {}
            for part in found[1].split(","):
                key, _, value = part.partition(":")
                try:
                    summary[key.strip()] = float(value)
                except ValueError:
                    continue
            return summary
    return {}


def parse_benchmark_output(text: str) -> BenchmarkResult:
    """Parses the output of one `benchmark_model` run.

    Args:
        text: everything the tool printed (stdout and stderr together).

    Returns:
        A `BenchmarkResult` with the regular runs' statistics and, when op profiling was on,
        the per-op table.

    Raises:
        ValueError: the output holds no timing of the regular runs (the binary failed, or this
            is not `benchmark_model` output); the message ends with the output's last lines.
    """
    lines = text.splitlines()
    warmup, regular = _run_stats(lines)
    timings_from = "run"
    if regular is None:
        regular, timings_from = _profile_timings(lines), "profile"
    if regular is None:
        tail = "\n".join(lines[-_TAIL_LINES:]) if lines else "<empty output>"
        raise ValueError(
            "No timing of the regular runs in the benchmark_model output: expected a line "
            "'count=N first=... avg=... std=...' after 'Running benchmark for at least N "
            "iterations' (or an op-profile 'Timings (microseconds): count=...' line). The "
            f"binary probably failed. Received: last lines of the output=\n{tail}"
        )
    ops, by_type = parse_op_profile(text)
    return BenchmarkResult(
        avg_us=regular.avg_us,
        std_us=regular.std_us,
        count=regular.count,
        min_us=regular.min_us,
        max_us=regular.max_us,
        ops=ops,
        by_type=by_type,
        median_us=regular.median_us,
        warmup=warmup,
        summary_us=_summary_us(lines),
        timings_from=timings_from,
    )
