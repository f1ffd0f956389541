"""`python -m voicecache` runs the CLI."""

from voicecache.cli.main import main

main()
