"""``python -m fastlsm.capi {install,build,flags,header}``: build the C library, host flags."""

from __future__ import annotations

import argparse
import sys

from . import _build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastlsm.capi", description="Build and use fastlsm's C library."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("install", "build and install into the prefix --prefix"),
                       ("build", "the same as install (--out is --prefix)")):
        b = sub.add_parser(name, help=what)
        b.add_argument("--prefix", "--out", dest="prefix",
                       help=f"installation prefix (default: {_build.default_out_dir()})")
        b.add_argument("--no-check", action="store_true", help="skip the check in an empty env")
        b.add_argument("-v", "--verbose", action="store_true", help="show compiler commands")
    f = sub.add_parser("flags", help="print compile and/or link flags for a C host")
    f.add_argument("--prefix", "--out", dest="prefix", help="the prefix given to install")
    f.add_argument("--cflags", action="store_true", help="compile flags only")
    f.add_argument("--libs", action="store_true", help="link flags only")
    h = sub.add_parser("header", help="print the path of fastlsm.h")
    h.add_argument("--update", action="store_true",
                   help="rewrite its generated part (the _strided prototypes) from the table")
    args = parser.parse_args(argv)

    if args.command in ("build", "install"):
        paths = _build.build(args.prefix, check=not args.no_check, verbose=args.verbose)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        print(f"flags: {_build.flags(args.prefix)}")
    elif args.command == "flags":
        try:
            parts = [_build.cflags(args.prefix)] if args.cflags or not args.libs else []
            parts += [_build.libs(args.prefix)] if args.libs or not args.cflags else []
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(" ".join(parts))
    elif args.update:
        from . import _entries

        same = _entries.update_header(_build.header_path(), write=True)
        print(f"{_build.header_path()}: {'up to date' if same else 'updated'}")
    else:
        print(_build.header_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
