"""CLI command groups, one module per topic; each registers itself on `voicecache.cli.app`."""
