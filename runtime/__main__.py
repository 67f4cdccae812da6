"""Command line for the runtime: `python -m runtime node create --session S --name N` ..."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from . import get_driver, images
from .model import LabRuntimeError, NodeSpec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    parser.add_argument("--driver", help="runtime driver (default: $LAB_DRIVER or builtin)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="group", required=True)

    node = sub.add_parser("node", help="manage nodes").add_subparsers(dest="cmd", required=True)
    create = node.add_parser("create", help="start a node and print its id")
    create.add_argument("--session", required=True)
    create.add_argument("--name", default="node1")
    create.add_argument("--restore", default="", metavar="KEY", help="start from a saved machine")
    save = node.add_parser("save", help="stop a node, keeping its state as a saved machine")
    save.add_argument("id")
    save.add_argument("key", help="owner/lesson/node, e.g. u12/first-containers/node1")
    ex = node.add_parser("exec", help="run a command in a node: node exec ID -- CMD ARGS...")
    ex.add_argument("id")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.add_argument("--timeout", type=float, default=600)
    ls = node.add_parser("ls", help="list nodes")
    ls.add_argument("--json", action="store_true")
    rm = node.add_parser("rm", help="remove nodes")
    rm.add_argument("ids", nargs="+")

    session = sub.add_parser("session", help="manage sessions").add_subparsers(dest="cmd", required=True)
    srm = session.add_parser("rm", help="remove every node of a session")
    srm.add_argument("session")

    sv = sub.add_parser("saves", help="saved machines (in $LAB_SAVE_DIR)").add_subparsers(
        dest="cmd", required=True)
    sls = sv.add_parser("ls", help="list saved machines")
    sls.add_argument("prefix", nargs="?", default="", help="only keys starting with this (an owner: u12/)")
    srm_save = sv.add_parser("rm", help="delete saved machines")
    srm_save.add_argument("keys", nargs="+")

    img = sub.add_parser("images", help="node and lesson images").add_subparsers(dest="cmd", required=True)
    build = img.add_parser("build", help="build the node image (and lesson images) if missing")
    build.add_argument("--force", action="store_true", help="rebuild the lesson images")
    build.add_argument("--node-only", action="store_true", help="only the node image")

    reg = sub.add_parser("registry", help="the lab registry").add_subparsers(dest="cmd", required=True)
    reg.add_parser("serve", help="run the lab registry in the foreground ($LAB_REGISTRY_MODE, "
                   "$LAB_REGISTRY_PORT)")

    pool = sub.add_parser("pool", help="the warm pool of ready nodes").add_subparsers(
        dest="cmd", required=True)
    fill = pool.add_parser("fill", help="start pool nodes until SIZE are ready")
    fill.add_argument("size", type=int)
    trim = pool.add_parser("trim", help="remove waiting pool nodes beyond SIZE")
    trim.add_argument("size", type=int)
    for sized in (fill, trim):
        sized.add_argument("--nodes", type=int, default=1,
                            help="pre-built sessions of this many nodes (default 1: single nodes)")
    pool.add_parser("ls", help="ready pool nodes and pre-built sessions, by size")
    sub.add_parser("reap", help="remove nodes whose processes died")
    sub.add_parser("record", help="record the terminals of this host's lab nodes until killed "
                   "($LAB_RECORD, $LAB_RECORD_MB, $LAB_RECORD_DAYS, $LAB_SESSION_PREFIX)")

    host = sub.add_parser("host", help="this machine as a lab site's sandbox host").add_subparsers(
        dest="cmd", required=True)
    join = host.add_parser("join", help="join a lab site (asks it, sets up, starts the host's "
                           "worker, gateway and registry)")
    join.add_argument("--site", required=True, help="the site's URL, http://lab.example.org")
    join.add_argument("--token", required=True, help="a join token (manage.py hosts token)")
    join.add_argument("--name", help="this host's name (default: the machine's)")
    join.add_argument("--gateway-url", help="where browsers reach this host's gateway "
                      "(default: http://<this machine's name>:8001)")
    join.add_argument("--no-setup", action="store_true", help="skip `make setup`")
    join.add_argument("--no-start", action="store_true",
                      help="join and write the host's settings (host.env) only")
    hls = host.add_parser("ls", help="the site's hosts with their load")
    hls.add_argument("--site", required=True)
    hls.add_argument("--token", required=True)

    # `python -m runtime bench ...` is `python -m bench ...` (bench/): the library
    # itself knows nothing of the benchmarks or the site.
    sub.add_parser("bench", help="same as `python -m bench` (measure; print a report)",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if "bench" in argv and argv.index("bench") == next(
            (i for i, a in enumerate(argv) if not a.startswith("-")), -1):
        os.execv(sys.executable, [sys.executable, "-m", "bench", *argv[argv.index("bench") + 1:]])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.group == "record":  # runs its own event loop, forever
        from . import recorder
        recorder.serve(get_driver(args.driver))
        return 0
    try:
        return asyncio.run(_dispatch(args))
    except LabRuntimeError as e:
        print(f"error: {e.reason}", file=sys.stderr)
        return 1


async def _dispatch(args) -> int:
    if args.group == "host":
        from . import hostjoin
        if args.cmd == "ls":
            return hostjoin.list_hosts(args.site, args.token)
        name = args.name or hostjoin.default_name()
        gateway_url = args.gateway_url or f"http://{name}:8001"
        return hostjoin.join(args.site, args.token, name, gateway_url,
                             setup=not args.no_setup, start=not args.no_start)
    if args.group == "images":
        # The node image is rebuilt only when its recipe changes: running nodes
        # use it as their lower layer, so --force never replaces it under them.
        images.build_node_image()
        from . import seccomp
        seccomp.helper()  # built now, not by the first node start
        if not args.node_only:
            from . import lessonimages
            await lessonimages.build_all(get_driver(args.driver), force=args.force)
        return 0
    if args.group == "saves":
        from . import saves
        store = saves.get_store()
        if args.cmd == "ls":
            print(f"{'KEY':48}{'SIZE':>10}  {'SAVED':20}IMAGE")
            for info in store.list(args.prefix):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
                print(f"{info.key:48}{info.size / 2**20:>7.1f} MB  {when:20}{info.meta.get('image', '?')}")
            return 0
        missing = [key for key in args.keys if not store.delete(key)]
        for key in missing:
            print(f"error: no saved machine {key}", file=sys.stderr)
        return 1 if missing else 0
    if args.group == "registry" and args.cmd == "serve":
        from . import registry
        registry.serve()  # replaces this process
    driver = get_driver(args.driver)
    if args.group == "pool" and args.cmd == "ls":
        for size, count in sorted(driver.pool_counts().items()):
            print(f"{count} ready {'node' if size == 1 else f'session of {size} nodes'}"
                  f"{'s' if count != 1 and size == 1 else ''}")
        return 0
    if args.group == "pool":
        act = driver.fill_pool if args.cmd == "fill" else driver.trim_pool
        for node_id in await asyncio.to_thread(act, args.size, args.nodes):
            print(node_id)
        return 0
    if args.group == "reap":
        for node_id in await asyncio.to_thread(driver.reap_dead):
            print(node_id)
        return 0
    if args.group == "node" and args.cmd == "create":
        node = await driver.start(NodeSpec(session=args.session, name=args.name, restore=args.restore),
                                  on_progress=lambda e: logging.getLogger("runtime").debug("%s", e))
        print(node.id)
        return 0
    if args.group == "node" and args.cmd == "save":
        info = await driver.save_and_stop(args.id, args.key)
        print(f"{info.key} {info.size / 2**20:.1f} MB")
        return 0
    if args.group == "node" and args.cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            print("error: give a command after --", file=sys.stderr)
            return 2
        def out(chunk: bytes) -> None:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        result = await driver.exec(args.id, argv, timeout=args.timeout, on_output=out)
        if result.timed_out:
            print(f"error: timed out after {args.timeout:.0f}s", file=sys.stderr)
        return result.exit_code if result.exit_code >= 0 else 124
    if args.group == "node" and args.cmd == "ls":
        nodes = driver.list_nodes()
        if args.json:
            print(json.dumps([n.to_json() for n in nodes], indent=1))
        else:
            print(f"{'ID':14}{'SESSION':16}{'NAME':10}{'ADDRESS':16}STATE")
            for n in nodes:
                state = await driver.poll(n.id) or "running"
                print(f"{n.id:14}{n.session:16}{n.name:10}{n.address:16}{state}")
        return 0
    if args.group == "node" and args.cmd == "rm":
        for node_id in args.ids:
            await driver.stop(node_id)
        return 0
    if args.group == "session" and args.cmd == "rm":
        for node_id in await driver.stop_session(args.session):
            print(node_id)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
