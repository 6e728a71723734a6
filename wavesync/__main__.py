"""`python -m wavesync` is the `wavesync` command."""

from wavesync.cli import main

main()
