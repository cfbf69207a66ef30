"""The ``fastlsm`` command: ``fastlsm bench`` and ``fastlsm info``.

``fastlsm bench`` times every kernel against NumPy and PyTorch (when installed) and prints
a table on stdout (``--markdown`` for the README), a progress bar on stderr, and with
``--json FILE`` every figure with machine, threads, versions and date. See
:mod:`fastlsm.bench` for what is measured and how.

``fastlsm info`` prints versions, the threading layer in use, the thread count, the CPU,
memory and where compiled kernels are cached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlsm",
        description="Fused, exact, parallel CPU kernels for the log-softmax family.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")
    sub.required = True

    b = sub.add_parser(
        "bench",
        help="time every kernel against NumPy and PyTorch, with the memory roofline",
        description=(
            "Time fastlsm's kernels on float32 logits against NumPy and PyTorch (when "
            "installed). The memory roofline is measured in the same run with the same "
            "thread count: a read-only pass and a read+write pass over an array the size "
            "of the logits. The table goes to stdout, a progress bar to stderr."
        ),
    )
    b.add_argument("--repeat", type=_positive_int, default=None, metavar="N",
                   help="timing rounds per case (default 10; 3 with --quick); slow "
                        "baselines stop after 3 rounds once they have spent a few seconds")
    b.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for fastlsm, PyTorch and the roofline "
                        "(default: fastlsm.get_num_threads())")
    b.add_argument("--only", type=_patterns, default=None, metavar="PATTERNS",
                   help="comma-separated kernel names or families, shell wildcards allowed "
                        "(e.g. 'log_softmax*,beam_step'); see --list")
    b.add_argument("--quick", action="store_true",
                   help="small shapes and 3 rounds: a smoke test in seconds (tests, CI)")
    b.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    b.add_argument("--csv", metavar="FILE",
                   help="write one line per kernel, shape and provider to FILE")
    b.add_argument("--markdown", action="store_true", help="print the table as markdown")
    b.add_argument("--no-torch", action="store_true",
                   help="do not import PyTorch even when it is installed")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.add_argument("--list", action="store_true",
                   help="list kernels, families and shapes, then exit")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="versions, threading layer, threads, CPU, compile cache")
    i.add_argument("--json", action="store_true", help="print the information as JSON")
    i.set_defaults(func=cmd_info)
    return parser


def cmd_bench(args) -> int:
    from . import bench

    if args.list:
        shapes = bench.QUICK_SHAPES if args.quick else bench.DEFAULT_SHAPES
        for spec in bench.KERNELS:
            dims = ", ".join(bench._shape(s) for s in shapes[spec.family])
            print(f"{spec.name:<20} family={spec.family:<18} roofline={spec.roofline:<4} {dims}")
        return 0
    repeat = args.repeat or (3 if args.quick else 10)
    cases, _ = bench.select_cases(args.only, args.quick)
    if not cases:
        print(f"fastlsm bench: nothing matches --only {','.join(args.only or [])}; "
              "see fastlsm bench --list", file=sys.stderr)
        return 2
    report = bench.run(
        repeat=repeat,
        threads=args.threads,
        only=args.only,
        quick=args.quick,
        use_torch=not args.no_torch,
        progress=not args.no_progress,
        command=" ".join(["fastlsm", *args.argv]),
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if args.csv:
        bench.write_csv(report, args.csv)
    sys.stdout.write(bench.format_table(report, markdown=args.markdown))
    return 0


def info() -> dict:
    """What ``fastlsm info`` prints, as a dict."""
    import numba
    import numpy as np

    import fastlsm

    from . import _jit, bench

    # A tiny parallel kernel (above the serial threshold) makes Numba pick its layer.
    fastlsm.log_softmax(np.zeros((2, _jit.SERIAL_WORK), np.float32))
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    m = bench.machine_info()
    return {
        "versions": bench.versions(),
        "threading_layer": layer,
        "threads": fastlsm.get_num_threads(),
        "max_threads": numba.config.NUMBA_NUM_THREADS,
        "cpu": m["cpu"],
        "cores": m["cores"],
        "usable_cores": m["usable_cores"],
        "memory": m["memory"],
        "platform": m["platform"],
        "python": m["python"],
        "cache_dir": _jit.cache_dir(),
        "environment": {k: os.environ[k] for k in sorted(os.environ)
                        if k.startswith(("FASTLSM_", "NUMBA_", "OMP_"))},
    }


def cmd_info(args) -> int:
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
        ("threads", f"{data['threads']} (max {data['max_threads']}; "
                    "fastlsm.set_num_threads or FASTLSM_NUM_THREADS)"),
        ("cpu", data["cpu"]),
        ("cores", f"{data['usable_cores']} usable of {data['cores']}"),
        ("memory", f"{mem.get('total', 0) / gib:.1f} GiB total, "
                   f"{mem.get('available', 0) / gib:.1f} GiB available" if mem else "unknown"),
        ("platform", data["platform"]),
        ("compile cache", data["cache_dir"]),
    ]
    lines += [(k, val) for k, val in data["environment"].items()]
    width = max(len(k) for k, _ in lines)
    for k, val in lines:
        print(f"{k + ':':<{width + 1}} {val}")
    return 0


def main(argv=None) -> int:
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
