"""``celljepa peers list|install|remove``: the published tools scored beside celljepa."""

from __future__ import annotations

import argparse
import json

from ._parser import EXIT_OK, Subcommands


def add_peers(sub: Subcommands) -> None:
    """The ``peers`` command and its actions."""
    p = sub.add_parser(
        "peers",
        help="the published tools scored beside celljepa (scGen, GEARS, CPA, State): list, install, remove",
        description="list: each peer, whether it runs here (its import is tried) and why not. install NAME: make "
        "its isolated environment under the peers folder ($CELLJEPA_PEERS_HOME, default "
        "~/.cache/celljepa/peers) with pip, from PyPI; benchmarks then run it there through a "
        "subprocess. remove NAME: delete that environment.",
    )
    actions = p.add_subparsers(dest="action", metavar="{list,install,remove}", required=True)
    a = actions.add_parser("list", help="each peer, whether it runs here, and why not")
    a.add_argument("names", nargs="*", metavar="NAME", help="the peers to show (default: all)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.add_argument(
        "--available", action="store_true", help="print only the names of the peers that run here, one per line"
    )
    a = actions.add_parser("install", help="make a peer's isolated environment (pip, from PyPI)")
    a.add_argument("names", nargs="+", metavar="NAME", help="the peers to install")
    a.add_argument(
        "--python",
        help="the interpreter to make the environment with (default: the version the "
        "peer needs, found on PATH or in pyenv)",
    )
    a.add_argument("--force", action="store_true", help="make an installed environment again")
    a.add_argument(
        "--keep-free",
        type=float,
        default=0.0,
        metavar="GB",
        help="leave this much disk free besides the environment (default 0)",
    )
    a.add_argument(
        "--if-space", action="store_true", help="skip a peer the disk has no room for, saying so, instead of failing"
    )
    a = actions.add_parser("remove", help="delete a peer's environment")
    a.add_argument("names", nargs="+", metavar="NAME", help="the peers to remove")


def run_peers(args: argparse.Namespace) -> int:
    """``celljepa peers ACTION``."""
    from ..peers import PEERS, NoSpaceError, install_peer, parse_peers, peer_status, peers_home, remove_peer

    names = parse_peers(args.names) if args.names else ()
    if args.action == "list":
        rows = [peer_status(n) for n in (names or tuple(PEERS))]
        if args.available:
            for row in rows:
                if row["available"]:
                    print(row["name"])
            return EXIT_OK
        if args.json:
            print(json.dumps(rows, indent=1))
            return EXIT_OK
        print(f"peers folder: {peers_home()}")
        for row in rows:
            state = f"available ({row['where']})" if row["available"] else f"not available: {row['reason']}"
            print(f"{row['name']:<6} {state}")
            print(f"       {row['title']}; predicts {row['predicts']}")
        return EXIT_OK
    for name in names:
        if args.action == "install":
            try:
                install_peer(name, python=args.python, force=args.force, keep_free_gb=args.keep_free)
            except NoSpaceError as err:
                if not args.if_space:
                    raise
                print(f"celljepa peers: skipped {name}: {err}")
        elif remove_peer(name):
            print(f"removed {name}'s environment")
        else:
            print(f"{name} has no environment under {peers_home()}")
    return EXIT_OK


COMMANDS = {"peers": (add_peers, run_peers)}
