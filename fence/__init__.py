"""Fencing for clusters: `fence_shareblock`, the Pacemaker fence agent that cuts a
node off at the storage target (fabric fencing)."""
