"""The `tradeguard` command line."""
