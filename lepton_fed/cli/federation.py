"""Real federations: ``federation``, ``superlink``, ``node join`` and ``run``.

Usage (3 commands on the coordinator, 1 per hospital; see docs/deploy.md)::

    lepton-fed federation init DIR --name NAME --superlink-host HOST --node hospital-a --node hospital-b
    lepton-fed superlink DIR                     # foreground; Ctrl-C stops it
    lepton-fed node join --federation DIR/nodes/hospital-a --data local.csv --label COLUMN
    lepton-fed run --federation DIR [hydra overrides]

    lepton-fed federation add-node|rotate-node|remove-node DIR NAME
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``federation``, ``superlink``, ``node`` and ``run`` to ``subparsers``."""
    fmt = argparse.RawDescriptionHelpFormatter
    fed = subparsers.add_parser("federation", help="provision a real federation (keys, certificates)",
                                description=__doc__, formatter_class=fmt)
    fsub = fed.add_subparsers(dest="federation_command", metavar="ACTION", required=True)
    init = fsub.add_parser("init", help="create the CA, TLS certificate, node keys and roster")
    init.add_argument("directory", metavar="DIR", type=Path, help="new, empty directory")
    init.add_argument("--name", required=True, help="federation name")
    init.add_argument("--superlink-host", action="append", required=True, metavar="HOST",
                      help="DNS name or IP the nodes dial (repeatable; the first is used by nodes)")
    init.add_argument("--node", action="append", required=True, metavar="NAME",
                      help="node name (repeatable), e.g. hospital-a")
    init.add_argument("--port", type=int, default=None, help="public SuperLink port (default 9092)")
    init.set_defaults(func=_init)
    for action, helptext in (("add-node", "add a node (re-signs the roster)"),
                             ("rotate-node", "new keys for a node (old bundle retired)"),
                             ("remove-node", "take a node out (re-signs the roster)")):
        a = fsub.add_parser(action, help=helptext)
        a.add_argument("directory", metavar="DIR", type=Path)
        a.add_argument("node", metavar="NAME")
        a.set_defaults(func=_change, action=action)

    sl = subparsers.add_parser("superlink", help="run the federation's SuperLink (foreground)",
                               description=__doc__, formatter_class=fmt)
    sl.add_argument("directory", metavar="DIR", type=Path,
                    help="the federation directory, or its coordinator/ copied to this host")
    sl.add_argument("--port", type=int, help="public Fleet port (default: from federation.json)")
    sl.add_argument("--control-port", type=int, help="loopback Control/Runtime port (default port+1)")
    sl.add_argument("--bind", default="0.0.0.0", help="address the public port binds (default 0.0.0.0)")
    sl.set_defaults(func=_superlink)

    node = subparsers.add_parser("node", help="join a federation as a node (foreground)",
                                 description=__doc__, formatter_class=fmt)
    nsub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    j = nsub.add_parser("join", help="start this node's SuperNode with pinned code")
    j.add_argument("--federation", required=True, type=Path, metavar="BUNDLE",
                   help="this node's bundle (DIR/nodes/<name> from the coordinator)")
    j.add_argument("--data", required=True, type=Path, help="the node's local data file")
    j.add_argument("--label", required=True, help="the label column of the data file")
    j.add_argument("--policy", type=Path, help="node policy YAML (default: the strict default)")
    j.add_argument("--ledger", type=Path, help="existing directory for the privacy ledger")
    j.add_argument("--test-fraction", type=float, default=None, metavar="F",
                   help="share of the node's rows it holds out for federated evaluation; "
                        "the node's choice, never the server's (default 0.2)")
    j.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve this node's Prometheus metrics on 127.0.0.1:PORT")
    j.add_argument("--superlink", metavar="HOST:PORT", help="override the bundle's address")
    j.add_argument("--allow-fab-hash", action="append", default=[], metavar="SHA256",
                   help="also run this exact app package's own code (repeatable)")
    j.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds to keep retrying an unreachable SuperLink (default 60)")
    j.set_defaults(func=_join)

    run = subparsers.add_parser("run", help="train on a running federation (submit + stream)",
                                description=__doc__, formatter_class=fmt)
    run.add_argument("--federation", required=True, type=Path, metavar="DIR")
    run.add_argument("--run-dir", type=Path, help="new output directory "
                     "(default outputs/federation/<timestamp>)")
    run.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, e.g. privacy=none")
    run.set_defaults(func=_run)


def _init(args: argparse.Namespace) -> int:
    from lepton_fed.deploy.provision import DEFAULT_PORT, init_federation

    fed = init_federation(args.directory, name=args.name, superlink_hosts=args.superlink_host,
                          nodes=args.node, port=args.port or DEFAULT_PORT)
    print(f"federation {args.name!r} created in {fed.root}\n"
          f"  {fed.offline}/      CA key + federation signing key: keep offline, not on the SuperLink\n"
          f"  {fed.coordinator.root}/  copy to the SuperLink host; then: lepton-fed superlink "
          f"{fed.coordinator.root}\n"
          + "".join(f"  {fed.node(n).root}/  give to {n}; they run: lepton-fed node join "
                    f"--federation <this dir> --data FILE --label COLUMN\n" for n in args.node))
    return 0


def _change(args: argparse.Namespace) -> int:
    from lepton_fed.deploy import provision

    fn = {"add-node": provision.add_node, "rotate-node": provision.rotate_node,
          "remove-node": provision.remove_node}[args.action]
    fn(args.directory, args.node)
    print(f"{args.action} {args.node}: done. Copy coordinator/node_keys/ and roster.json to the "
          "SuperLink host and restart `lepton-fed superlink` (it re-syncs registered keys); "
          "send every node its updated roster.json"
          + ("" if args.action == "remove-node" else f" and {args.node} its new bundle"))
    return 0


def _superlink(args: argparse.Namespace) -> int:
    from lepton_fed.deploy.superlink import run_superlink

    return run_superlink(args.directory, port=args.port, control_port=args.control_port,
                         bind=args.bind)


def _join(args: argparse.Namespace) -> int:
    from lepton_fed.deploy.node import join

    return join(bundle_dir=args.federation, data=args.data, label=args.label, policy=args.policy,
                ledger=args.ledger, test_fraction=args.test_fraction,
                metrics_port=args.metrics_port, superlink=args.superlink, allow_fab_hashes=args.allow_fab_hash,
                connect_wait=args.connect_timeout)


def _run(args: argparse.Namespace) -> int:
    from lepton_fed.deploy.submit import submit_run

    overrides = [o for o in args.overrides if o != "--"]
    submit_run(args.federation, overrides, run_dir=args.run_dir)
    return 0
