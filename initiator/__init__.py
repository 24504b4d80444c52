"""This node as an initiator: what nvme-cli reads to authenticate (its key config).

Both a host's side (`shareblock connect`) and the Cinder adapter (Cinder's own
attaches on the volume node) connect with os-brick, which passes no DH-HMAC-CHAP
keys to nvme-cli.
"""
