"""Rendering a report: plain-text and markdown tables, CSV, and the % of ceiling plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence

from .registry import CALL_BOUND_BYTES


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _ms(v: float) -> str:
    """Milliseconds with 3 significant digits (0.00264, 24.4, 194), never in exponent
    notation: a call-bound row's 2.6 us stays readable beside PyTorch's 1.4 us."""
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{max(0, 2 - math.floor(math.log10(v)))}f}" if v > 0 else "0"


def _speedup(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}x"


def _pct(v: float | None) -> str:
    """A percentage with two significant digits under 10% (a peer at 0.04% is not at 0%),
    "-" for None."""
    if v is None:
        return "-"
    return f"{v:.2f}%" if v < 1 else f"{v:.1f}%" if v < 10 else f"{v:.0f}%"


def size_text(nbytes: int) -> str:
    """``32 B``, ``128 kB``, ``4.1 MB``, ``524 MB`` (decimal units, 3 significant digits)."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _same_run(r: dict) -> str:
    """The references timed in the row's own rounds (see ``harness._references``)."""
    cells = []
    if r.get("vs_float32") is not None:
        cells.append(f"{r['vs_float32']:.2f}x float32 el/s")
    if r.get("vs_out") is not None:
        cells.append(f"{r['vs_out']:.2f}x out= time")
    return "; ".join(cells) or "-"


def _has_same_run(report: dict) -> bool:
    return any(_same_run(r) != "-" for r in report["results"])


def _peers(report: dict) -> list[str]:
    """Peers measured in at least one row, in table order (PyTorch, then Hugging Face)."""
    present = {name for r in report["results"] for name in r["providers"]}
    return [p for p in ("torch", "hf") if p in present]


PEER_NAMES = {"torch": "PyTorch", "hf": "HF", "numpy": "NumPy"}


def columns(report: dict) -> list[str]:
    cols = ["kernel", "dtype", "shape", "median ms", "p20-p80 ms", "GB/s", "% of ceiling"]
    for peer in _peers(report):
        cols += [f"{PEER_NAMES[peer]} ms", f"{PEER_NAMES[peer]} %", f"vs {PEER_NAMES[peer]}"]
    return cols + ["vs NumPy"] + (["same run"] if _has_same_run(report) else [])


def table_rows(report: dict) -> list[list[str]]:
    rows = []
    peers = _peers(report)
    same_run = _has_same_run(report)
    for r in report["results"]:
        f = r["providers"]["fastlsm"]
        cells = [
            r["label"],
            r["dtype"],
            shape_text(r["shape"]),
            _ms(f["median_ms"]),
            f"{_ms(f['p20_ms'])}-{_ms(f['p80_ms'])}",
            f"{r['gbs']:.1f}",
            "call" if r["bound"] == "call" else f"{_pct(r['pct_ceiling'])} {r['ceiling']}",
        ]
        for peer in peers:
            t = r["providers"].get(peer)
            cells += ["-", "-"] if t is None else [_ms(t["median_ms"]), _pct(t["pct_ceiling"])]
            cells.append(_speedup(r.get(f"speedup_{peer}")))
        cells.append(_speedup(r.get("speedup_numpy")))
        if same_run:
            cells.append(_same_run(r))
        rows.append(cells)
    return rows


def header_lines(report: dict) -> list[str]:
    m, v = report["machine"], report["versions"]
    mem = m["memory"].get("total")
    lines = [
        f"fastlsm {v['fastlsm']}, {report['date']}: {report['command']}",
        f"machine: {m['cpu']}"
        + (f" ({m['isa']})" if m.get("isa") else "")
        + f", {m['usable_cores']} cores"
        + (f", {mem / 2**30:.0f} GiB" if mem else "")
        + f"; threads: {report['threads']} ({report['threading_layer']})",
        f"numba {v['numba']}, numpy {v['numpy']}, torch "
        + (v["torch"] if report["config"]["torch"] else "not used"),
        "ceilings (GB/s, measured in this run interleaved with each case, at the kernels' "
        "thread count; read = a vectorized sum (4 accumulators), copy = read + write with "
        "the kernels' stores (streaming for large outputs), bytes read + written):",
    ]
    for c in report["ceilings"]:
        shapes = ", ".join(f"{shape_text(sh)} {dt}" for sh, dt in c["shapes"])
        head = f"  {size_text(c['bytes'])}, {c['threads']} thread{'s' if c['threads'] > 1 else ''}"
        if "call_ms" in c:
            lines.append(
                f"{head} ({shapes}): call-bound; a compiled no-op given the same arrays takes "
                f"{1e3 * c['call_ms']:.2f} us"
            )
        else:
            lines.append(f"{head} ({shapes}): read {c['read_gbs']:.1f}, copy {c['copy_gbs']:.1f}")
    lines.append(
        "fastlsm median and 20th-80th percentile times; % of the read ceiling for kernels "
        "that only read the logits, of the copy ceiling for those that write an output of "
        "their size; vs X = X's median / fastlsm's"
    )
    lines.append(
        f"call: logits under {CALL_BOUND_BYTES // 1024} KiB take less time to move than a call "
        "costs, so no % of a bandwidth ceiling: the row is the fixed cost of a call, beside "
        "PyTorch's (vs PyTorch) and the no-op floor above"
    )
    if _has_same_run(report):
        lines.append(
            "same run: fastlsm references timed in the row's own rounds: Nx float32 el/s = "
            "elements per second of the 16-bit row / of the float32 kernel on the same shape; "
            "Nx out= time = a fresh output's time / the same call with out="
        )
    return lines


def format_table(report: dict, markdown: bool = False) -> str:
    """The report as a plain-text table (``markdown=True``: the README's markdown)."""
    cols, rows = columns(report), table_rows(report)
    out: list[str] = []
    if markdown:
        for line in header_lines(report):  # ceiling entries become a bullet list
            if line.startswith("  "):
                out.append("- " + line.strip())
            else:
                out += ([""] if out and out[-1].startswith("- ") else []) + [line + "  "]
        out.append("")
        out.append("| " + " | ".join(cols) + " |")
        align = ["---", "---", "---"] + ["--:"] * (len(cols) - 3)
        out.append("|" + "|".join(align) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        out += header_lines(report) + [""]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]

        def fmt(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        out.append(fmt(cols))
        out.append(fmt(["-" * w for w in widths]))
        out += [fmt(r) for r in rows]
    for s in report["skipped"]:
        out.append(f"skipped {s['kernel']} {shape_text(s['shape'])} {s['dtype']}: {s['reason']}")
    return "\n".join(out) + "\n"


def write_csv(report: dict, path: str) -> None:
    """One line per kernel, shape, dtype and provider, with machine and date."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "kernel",
                "shape",
                "dtype",
                "provider",
                "median_ms",
                "p20_ms",
                "p80_ms",
                "gbs",
                "pct_ceiling",
                "bound",
                "samples",
                "threads",
                "fastlsm",
                "cpu",
                "date",
            ]
        )
        for r in report["results"]:
            for name, t in r["providers"].items():
                w.writerow(
                    [
                        r["kernel"],
                        "x".join(map(str, r["shape"])),
                        r["dtype"],
                        name,
                        f"{t['median_ms']:.6g}",
                        f"{t['p20_ms']:.6g}",
                        f"{t['p80_ms']:.6g}",
                        f"{t['gbs']:.4g}",
                        "" if t["pct_ceiling"] is None else f"{t['pct_ceiling']:.4g}",
                        r["bound"],
                        t["samples"],
                        report["threads"],
                        report["versions"]["fastlsm"],
                        report["machine"]["cpu"],
                        report["date"],
                    ]
                )


PLOT_HELP = (
    "fastlsm bench --plot needs matplotlib, which is not installed: "
    "pip install 'fastlsm[plot]' (or pip install matplotlib)"
)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(report: dict, path: str) -> None:
    """A horizontal bar chart of % of ceiling per case, fastlsm and PyTorch side by side.

    The format follows ``path``'s extension (``.png``, ``.svg``, ``.pdf``). Raises
    ``ImportError`` with :data:`PLOT_HELP` when matplotlib is missing.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(PLOT_HELP) from e

    results = [r for r in report["results"] if r["pct_ceiling"] is not None]  # not call-bound
    labels = [
        f"{r['label']} {shape_text(r['shape'])}"
        + ("" if r["dtype"] == "float32" else f" {r['dtype']}")
        for r in results
    ]
    series = [("fastlsm", "fastlsm", "#1f77b4")] + [
        (p, PEER_NAMES[p], "#ff7f0e" if p == "torch" else "#2ca02c") for p in _peers(report)
    ]
    height = 0.8 / len(series)
    fig = Figure(figsize=(9, 0.32 * len(results) + 1.6))
    ax = fig.add_subplot()
    for k, (key, name, color) in enumerate(series):
        ys = [i + (k - (len(series) - 1) / 2) * height for i in range(len(results))]
        xs = [(r["providers"].get(key) or {}).get("pct_ceiling") or 0.0 for r in results]
        ax.barh(ys, xs, height=height, label=name, color=color)
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    ax.set_ylim(len(results) - 0.5, -0.5)  # first case on top, no empty margins
    ax.axvline(100, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("% of the machine's ceiling (read, or copy with the kernels' stores)")
    m = report["machine"]
    ax.set_title(
        f"fastlsm {report['versions']['fastlsm']}: {m['cpu']}, "
        f"{report['threads']} threads, {report['date'][:10]}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
