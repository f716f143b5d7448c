"""`edge-mfr fleet keygen | publish | status`: the command-line side of fleet distribution."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_mfr.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register `fleet` and its sub-commands on the main parser's sub-parsers."""
    p = sub.add_parser("fleet", help="many doors, one gallery: keys, publishing signed bundles, status")
    fs = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    k = fs.add_parser("keygen", help="create the fleet's Ed25519 key pair (fleet.key stays on the admin host)")
    k.add_argument("--out", type=Path, required=True, help="folder for fleet.key (0600) and fleet.pub")
    k.add_argument("--force", action="store_true", help="replace an existing key pair (doors must get the new "
                                                       "fleet.pub, or they refuse every later bundle)")
    k.set_defaults(func=cmd_keygen)
    pub = fs.add_parser("publish", help="sign the admin gallery's changes and publish them to every door "
                                        "(broker from [mqtt], fleet name from [fleet] of --config)")
    pub.add_argument("--gallery", type=Path, required=True, help="the admin host's gallery (enroll into it)")
    pub.add_argument("--key", type=Path, required=True, help="fleet.key from `edge-mfr fleet keygen`")
    pub.add_argument("--rules", type=Path, help="TOML with per-person doors and schedules ([people.<id>])")
    pub.add_argument("--full", action="store_true", help="send everyone, not only the changes")
    pub.add_argument("--state", type=Path, help="where the last publish is remembered (default: next to "
                                                "--gallery, <gallery>.published.json)")
    pub.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    pub.set_defaults(func=cmd_publish)
    st = fs.add_parser("status", help="the gallery version this door runs and the fleet rules it applies")
    st.add_argument("--json", action="store_true", help="print as one JSON line")
    st.set_defaults(func=cmd_status)


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge_mfr.interfaces.fleet import keys

    priv, pub = keys.keygen(args.out, force=args.force)
    print(f"private key: {priv} (mode 0600)")
    print(f"public key:  {pub} (copy to every door; list it in [fleet] public_keys)")
    print(f"warning: {keys.WARNING}")
    return 0


def _broker(cfg: Any) -> tuple[Any, str, int]:
    from edge_mfr.interfaces.mqtt import MqttSettings

    if not cfg.mqtt.enabled:
        raise ConfigError("fleet publish needs [mqtt] enabled = true with the broker's address in --config")
    settings = MqttSettings.from_config(cfg)
    return settings, settings.host, settings.port


def cmd_publish(args: argparse.Namespace) -> int:
    from edge_mfr.config import load_config
    from edge_mfr.interfaces.fleet import link, publisher

    cfg = load_config(args.config)
    settings, host, port = _broker(cfg)
    state = args.state or args.gallery.with_name(args.gallery.name + ".published.json")
    summary = publisher.publish(
        gallery_path=args.gallery, private_key_path=args.key, fleet=cfg.fleet.id, root=cfg.fleet.topic_root,
        state_path=state, client_factory=link.client_factory(settings, "fleet-publisher"), host=host, port=port,
        rules_path=args.rules, force_full=args.full, chunk_bytes=cfg.fleet.chunk_kib * 1024,
        progress=lambda line: None if args.json else print(line))
    if args.json:
        print(json.dumps(summary))
    else:
        revoked = ", ".join(summary["revoked"]) or "nobody"
        print(f"published {summary['kind']} bundle v{summary['version']} to {cfg.fleet.topic_root}: "
              f"{summary['people']} people, revoked {revoked}, {summary['bytes']} bytes")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edge_mfr.config import load_config
    from edge_mfr.interfaces.fleet.follower import FleetState, load_rules

    cfg = load_config(args.config)
    gallery = cfg.recognition.gallery
    state = FleetState.load(gallery, cfg.fleet.id)
    rules = load_rules(gallery)
    out = {"fleet": cfg.fleet.id, "enabled": cfg.fleet.enabled, "version": state.version,
           "applied_at": state.applied_at or None, "people": state.people, "rules": len(rules)}
    if args.json:
        print(json.dumps(out))
    else:
        follow = "following" if cfg.fleet.enabled else "not following (fleet.enabled = false)"
        print(f"fleet {cfg.fleet.id}: {follow}; gallery v{state.version}"
              + (f" applied {state.applied_at}, {state.people} people, {len(rules)} with door rules"
                 if state.version else " (no bundle applied yet)"))
    return 0
