"""The embedded control plane: volume types, volumes, attachments, policy, state.

What Cinder's API, scheduler and volume manager do for multi-attach, in-process
and over SQLite, loading backend drivers through the same driver interface.
"""
