"""Benchmarks: shareblock side by side with targetcli, cinder-rtstool and the floor."""
