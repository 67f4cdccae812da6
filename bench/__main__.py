"""`python -m bench`: runtime figures per driver side by side, then the site's.

A report, never a test. See bench/runtime.py (the runtime figures, and the
table of targets) and bench/site.py (the real site driven as learners would).
"""
from __future__ import annotations

import argparse
import logging
import sys

from bench import runtime as bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Runtime figures (per driver, side by side), then the "
        "site's figures from `python -m bench.site` run as a subprocess, "
        "and a table of target vs measured. A report: nothing is asserted.")
    parser.add_argument("--nodes", type=int, default=10, help="nodes to start for the runtime "
                        "figures (cold starts, idle memory, warm-pool starts)")
    parser.add_argument("--drivers", default="builtin,docker",
                        help="drivers measured side by side (comma-separated)")
    parser.add_argument("--no-site", action="store_true", help="runtime figures only")
    parser.add_argument("--site-drivers", default="builtin",
                        help="drivers the site figures run with (comma-separated)")
    parser.add_argument("--learners", type=int, default=50, help="learners in the load run")
    parser.add_argument("--pool", type=int, default=0,
                        help="warm pool nodes started before the load run (0: cold starts)")
    parser.add_argument("--terminals", type=int, default=100, help="terminals typing at once")
    parser.add_argument("--keys", type=int, default=30, help="keystrokes per terminal")
    parser.add_argument("--flood-mb", type=int, default=50, help="flood file size (MiB)")
    parser.add_argument("--restarts", type=int, default=0,
                        help="lesson pages held open while Redis restarts (0: skip)")
    parser.add_argument("--capacity", type=int, default=0,
                        help="add idle nodes up to this many with the site up (0: skip)")
    parser.add_argument("--capacity-seconds", type=float, default=900,
                        help="time budget of the capacity stage")
    parser.add_argument("--driver", help="measure this driver only")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip the dind peer (a Play-with-Docker style node on the host "
                        "engine, started after each cold start of each driver)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    drivers = [args.driver] if args.driver else [d for d in args.drivers.split(",") if d]
    site_drivers = [] if args.no_site else [d for d in args.site_drivers.split(",") if d]
    site_args = ["--learners", str(args.learners), "--pool", str(args.pool),
                 "--terminals", str(args.terminals), "--keys", str(args.keys),
                 "--flood-mb", str(args.flood_mb), "--capacity", str(args.capacity),
                 "--capacity-seconds", str(args.capacity_seconds),
                 "--restarts", str(args.restarts)]
    print(bench.report(drivers, args.nodes, site_drivers, site_args, peer=not args.no_peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
