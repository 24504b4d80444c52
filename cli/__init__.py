"""The `shareblock` command line."""
