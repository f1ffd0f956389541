"""`voicecache keys`: API keys (add, list, revoke) and master-key rotation.

Rotating the master key without downtime:

1. `voicecache keys generate-master-key` prints a new key.
2. Restart the servers (one at a time) with `VOICECACHE_MASTER_KEY=<new>` and
   `VOICECACHE_MASTER_KEY_PREVIOUS=<old>`: they read samples wrapped by either key and wrap new
   uploads with the new one.
3. With the same two variables, `voicecache keys rotate` re-wraps every sample's data key under
   the new key (each file is replaced atomically; the sample ciphertext itself is unchanged).
4. Remove `VOICECACHE_MASTER_KEY_PREVIOUS` and restart the servers again.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from voicecache.cli.common import ConfigOption, command, fail, load_settings
from voicecache.security.audit import AuditLog
from voicecache.security.auth import SCOPES, KeyStore

keys_app = typer.Typer(help="API keys and master-key rotation.", no_args_is_help=True)


@keys_app.command("add")
@command
def add(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to")],
    scope: Annotated[
        list[str], typer.Option(help=f"Scope to grant, repeatable: {', '.join(SCOPES)}")
    ],
    config: ConfigOption = None,
) -> None:
    """Create a key; prints the key alone on stdout (it is stored only as a hash)."""
    settings = load_settings(config)
    token, record = KeyStore(settings.keys_path).add(tenant, scope)
    AuditLog(settings.audit_path).record(
        "key.add", "cli", key=record.id, key_tenant=tenant, scopes=list(record.scopes)
    )
    typer.echo(
        f"created key {record.id} for tenant {tenant} ({', '.join(record.scopes)})", err=True
    )
    typer.echo(token)


@keys_app.command("list")
@command
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """List keys: id, tenant, scopes, creation time (never the keys themselves)."""
    settings = load_settings(config)
    keys = KeyStore(settings.keys_path).keys()
    if as_json:
        rows = [
            {"id": k.id, "tenant": k.tenant, "scopes": list(k.scopes), "created": k.created}
            for k in keys
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not keys:
        typer.echo("no keys: the API is open on loopback only", err=True)
        return
    for k in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created))
        typer.echo(f"{k.id}  {k.tenant:<20} {','.join(k.scopes):<20} {created}")


@keys_app.command("revoke")
@command
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id, as `keys list` shows it")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; running servers stop accepting it within a second."""
    settings = load_settings(config)
    found = KeyStore(settings.keys_path).revoke(key_id)
    if found is None:
        fail(f"no key with id {key_id!r}")
    AuditLog(settings.audit_path).record("key.revoke", "cli", key=key_id, key_tenant=found.tenant)
    typer.echo(f"revoked key {key_id} of tenant {found.tenant}")


@keys_app.command("generate-master-key")
@command
def generate_master_key() -> None:
    """Print a new random master key (base64, for VOICECACHE_MASTER_KEY)."""
    from voicecache.voices.crypto import MasterKey

    typer.echo(MasterKey.generate().encoded())


@keys_app.command("rotate")
@command
def rotate(config: ConfigOption = None) -> None:
    """Re-wrap every voice sample's data key under the current master key
    (VOICECACHE_MASTER_KEY), reading older samples with VOICECACHE_MASTER_KEY_PREVIOUS."""
    settings = load_settings(config)
    from voicecache.bootstrap import build_voices

    store = build_voices(settings).store
    current = store.keyring.require_current()
    rewrapped, already, failed = store.rewrap_all()
    AuditLog(settings.audit_path).record(
        "master_key.rotate", "cli", key_id=current.key_id, rewrapped=rewrapped, failed=failed
    )
    typer.echo(
        f"re-wrapped {rewrapped} sample(s) under master key {current.key_id}; "
        f"{already} already were"
    )
    if failed:
        fail(
            f"{len(failed)} sample(s) are wrapped by an unknown master key or damaged: "
            f"{', '.join(failed)} (set VOICECACHE_MASTER_KEY_PREVIOUS to the key they used)"
        )
