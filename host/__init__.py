"""The host side: an admin attaches a shareblock volume with one command."""
