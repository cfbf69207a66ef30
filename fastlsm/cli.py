"""The ``fastlsm`` command: ``fastlsm bench``, ``fastlsm info`` and ``fastlsm --version``.

``fastlsm bench`` times every kernel against NumPy and PyTorch (when installed) and the
machine's ceilings, and prints a table on stdout (``--markdown`` for the README), a progress
line on stderr, with ``--json FILE`` (``-``: stdout) every figure with machine, threads,
versions and date, with ``--plot FILE`` a chart of % of ceiling. See :mod:`fastlsm.bench`
for what is measured and how.

``fastlsm info`` prints versions, the threading layer in use, the thread count, the CPU,
memory and where compiled kernels are cached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def _patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _dtypes(text: str) -> list[str]:
    from .bench import DTYPES

    names = _patterns(text)
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {bad[0] if bad else text!r}: use {', '.join(DTYPES)} "
            "(comma-separated, e.g. float32,bfloat16)"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlsm",
        description="Fused, exact, parallel CPU kernels for the log-softmax family.",
    )
    parser.add_argument("--version", action="version", version=f"fastlsm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")
    sub.required = True

    b = sub.add_parser(
        "bench",
        help="time every kernel against NumPy and PyTorch and the machine's ceilings",
        description=(
            "Time fastlsm's kernels against NumPy and PyTorch (when installed). The "
            "machine's ceilings are measured in the same run, interleaved with every case, "
            "at the kernels' thread count: a read pass (vectorized sum) and a copy with "
            "the kernels' stores (streaming for large outputs) over an array of the "
            "logits' size. Read-only kernels show their % of the read ceiling, kernels "
            "that write an output of the logits' size their % of the copy ceiling. Cases "
            "under 32 KiB of logits are call-bound: they show the call's time beside "
            "PyTorch's and a compiled no-op's, no %. A 16-bit row is timed beside the "
            "float32 kernel of its shape, a fresh-output row beside its out= call. The "
            "table goes to stdout, a progress line to stderr."
        ),
    )
    b.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        metavar="N",
        help="timing rounds per case (default 10; 3 with --quick); slow "
        "baselines stop after 3 rounds once they have spent a few seconds",
    )
    b.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads for fastlsm, PyTorch and the ceilings (default: fastlsm.get_num_threads())",
    )
    b.add_argument(
        "--only",
        type=_patterns,
        default=None,
        metavar="PATTERNS",
        help="comma-separated kernel names or families, shell wildcards allowed "
        "(e.g. 'log_softmax*,beam_step'); see --list",
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="small shapes and 3 rounds: a smoke test in seconds (tests, CI)",
    )
    b.add_argument(
        "--dtype",
        type=_dtypes,
        default=["float32"],
        metavar="DTYPES",
        help="logits dtypes, comma-separated: bfloat16, float16, float32, float64 "
        "(default float32); a dtype fastlsm does not support yet is "
        "skipped with a line saying so",
    )
    b.add_argument(
        "--json",
        metavar="FILE",
        help="write every figure to FILE as JSON ('-': stdout, and the table goes to stderr)",
    )
    b.add_argument(
        "--plot",
        metavar="FILE",
        help="draw %% of ceiling per kernel, fastlsm and PyTorch, to FILE "
        "(.png, .svg, .pdf; needs matplotlib: pip install 'fastlsm[plot]')",
    )
    b.add_argument(
        "--load",
        metavar="FILE",
        help="render a report saved with --json instead of running the benchmark",
    )
    b.add_argument(
        "--csv", metavar="FILE", help="write one line per kernel, shape and provider to FILE"
    )
    b.add_argument("--markdown", action="store_true", help="print the table as markdown")
    b.add_argument(
        "--no-torch", action="store_true", help="do not import PyTorch even when it is installed"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    b.add_argument(
        "--list", action="store_true", help="list kernels, families, ceilings and shapes, then exit"
    )
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="versions, threading layer, threads, CPU, compile cache")
    i.add_argument("--json", action="store_true", help="print the information as JSON")
    i.set_defaults(func=cmd_info)
    return parser


def _load_report(path: str, fmt: str) -> dict | None:
    """The report saved at ``path`` (``-``: stdin), or None after saying why it is not one."""
    try:
        with open(path) if path != "-" else sys.stdin as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"error: cannot read a report from {path}: {e}", file=sys.stderr)
        return None
    found = report.get("format") if isinstance(report, dict) else None
    if found != fmt:
        print(
            f"error: {path} is not a {fmt} report (format {found!r}); "
            "write one with fastlsm bench --json FILE",
            file=sys.stderr,
        )
        return None
    return report


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .bench import report as rep
    from .bench.registry import spec_shapes

    if args.list:
        for spec in bench.KERNELS:
            dims = ", ".join(rep.shape_text(s) for s in spec_shapes(spec, bench.SHAPES, args.quick))
            print(f"{spec.name:<20} family={spec.family:<18} ceiling={spec.ceiling:<5} {dims}")
        return 0
    if args.plot and not rep.have_matplotlib():
        print(f"error: {rep.PLOT_HELP}", file=sys.stderr)
        return 2
    if args.load:
        report = _load_report(args.load, bench.FORMAT)
        if report is None:
            return 2
    else:
        cases, _ = bench.select_cases(
            bench.KERNELS, bench.SHAPES, args.only, args.quick, args.dtype
        )
        if not cases:
            print(
                f"fastlsm bench: nothing matches --only {','.join(args.only or [])}; "
                "see fastlsm bench --list",
                file=sys.stderr,
            )
            return 2
        report = bench.run(
            repeat=args.repeat or (3 if args.quick else 10),
            threads=args.threads,
            only=args.only,
            quick=args.quick,
            dtypes=args.dtype,
            use_torch=not args.no_torch,
            progress=not args.no_progress,
            command=" ".join(["fastlsm", *args.argv]),
        )
    table = sys.stdout
    if args.json == "-":
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        table = sys.stderr
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if args.csv:
        bench.write_csv(report, args.csv)
    if args.plot:
        bench.plot(report, args.plot)
    table.write(bench.format_table(report, markdown=args.markdown))
    return 0


def info() -> dict:
    """What ``fastlsm info`` prints, as a dict."""
    import numba
    import numpy as np

    import fastlsm

    from . import _jit
    from .bench import machine

    # A tiny parallel kernel (above the serial threshold) makes Numba pick its layer.
    fastlsm.log_softmax(np.zeros((2, _jit.SERIAL_WORK), np.float32))
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    m = machine.machine_info()
    return {
        "versions": machine.versions(),
        "threading_layer": layer,
        "threads": fastlsm.get_num_threads(),
        "max_threads": numba.config.NUMBA_NUM_THREADS,
        "cpu": m["cpu"],
        "isa": m["isa"],
        "cores": m["cores"],
        "usable_cores": m["usable_cores"],
        "memory": m["memory"],
        "platform": m["platform"],
        "python": m["python"],
        "cache_dir": _jit.cache_dir(),
        "environment": {
            k: os.environ[k]
            for k in sorted(os.environ)
            if k.startswith(("FASTLSM_", "NUMBA_", "OMP_"))
        },
    }


def cmd_info(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    v = data["versions"]
    gib = 2**30
    mem = data["memory"]
    lines = [
        ("fastlsm", v["fastlsm"]),
        ("numba", v["numba"]),
        ("llvmlite", v["llvmlite"]),
        ("numpy", v["numpy"]),
        ("cffi", v["cffi"]),
        ("torch", v["torch"] or "not installed"),
        ("python", f"{data['python']} ({sys.executable})"),
        ("threading layer", data["threading_layer"] or "unknown"),
        (
            "threads",
            f"{data['threads']} (max {data['max_threads']}; "
            "fastlsm.set_num_threads or FASTLSM_NUM_THREADS)",
        ),
        ("cpu", data["cpu"] + (f" ({data['isa']})" if data["isa"] else "")),
        ("cores", f"{data['usable_cores']} usable of {data['cores']}"),
        (
            "memory",
            f"{mem.get('total', 0) / gib:.1f} GiB total, "
            f"{mem.get('available', 0) / gib:.1f} GiB available"
            if mem
            else "unknown",
        ),
        ("platform", data["platform"]),
        ("compile cache", data["cache_dir"]),
    ]
    lines += [(k, val) for k, val in data["environment"].items()]
    width = max(len(k) for k, _ in lines)
    for k, val in lines:
        print(f"{k + ':':<{width + 1}} {val}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastlsm`` command (and ``python -m fastlsm``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastlsm bench | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
