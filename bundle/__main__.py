"""Regenerate mlmon's Prometheus rules, Grafana dashboards and Kubernetes PrometheusRule
from bundle/params.py.

    python -m bundle                      # rewrite the generated files (make generate)
    python -m bundle --check              # exit 1 if a committed file differs (tests run this)
    python -m bundle --params site.yml --out /tmp/site   # a site's bundle, elsewhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bundle import outputs, params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bundle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if a generated file differs")
    ap.add_argument("--params", type=Path, help="a YAML file of parameters to change")
    ap.add_argument("--out", type=Path, default=outputs.ROOT, help="write under this directory")
    args = ap.parse_args(argv)
    p = params.load(args.params) if args.params else params.Params()
    rendered = outputs.render(p)
    if args.check:
        stale = outputs.stale(rendered, args.out)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `python -m bundle` (make generate) and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in outputs.write(rendered, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
