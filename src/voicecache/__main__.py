"""`python -m voicecache` runs the CLI."""

from voicecache.cli import main

main()
