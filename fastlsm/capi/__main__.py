"""``python -m fastlsm.capi {build,flags,header}``: build the C library, print host flags."""

from __future__ import annotations

import argparse
import sys

from . import _build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastlsm.capi", description="Build and use fastlsm's C library."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build libfastlsm.so, fastlsm.h and fastlsm.pc")
    b.add_argument("--out", help=f"output directory (default: {_build.default_out_dir()})")
    b.add_argument("--no-check", action="store_true", help="skip the check in an empty env")
    b.add_argument("-v", "--verbose", action="store_true", help="show compiler commands")
    f = sub.add_parser("flags", help="print compile and link flags for a C host")
    f.add_argument("--out", help="the directory given to build (default: build's default)")
    h = sub.add_parser("header", help="print the path of fastlsm.h")
    del h
    args = parser.parse_args(argv)

    if args.command == "build":
        paths = _build.build(args.out, check=not args.no_check, verbose=args.verbose)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        print(f"flags: {_build.flags(args.out)}")
    elif args.command == "flags":
        print(_build.flags(args.out))
    else:
        print(_build.header_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
