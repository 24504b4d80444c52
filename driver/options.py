"""The driver's oslo.config options.

Where Cinder has a name (target_protocol, target_ip_address, ...), shareblock
uses it: inside Cinder those options already exist in every backend section, so
only `SHAREBLOCK_OPTS` is appended there; standalone, both lists are registered.
"""
from oslo_config import cfg

CINDER_NAMED_OPTS = [
    cfg.StrOpt("volume_driver", default="shareblock.driver.cinder.ShareBlockDriver",
               help="accepted so a cinder.conf section pastes unchanged; the embedded "
                    "control plane always loads shareblock's driver"),
    cfg.StrOpt("volume_backend_name", help="backend name for scheduling"),
    cfg.StrOpt("target_protocol", default="iscsi", choices=["iscsi", "nvmet_tcp"],
               help="iscsi (LIO) or nvmet_tcp (kernel nvmet over NVMe/TCP)"),
    cfg.StrOpt("target_ip_address", default="127.0.0.1", help="portal address"),
    cfg.ListOpt("target_secondary_ip_addresses", default=[], help="more portal addresses"),
    cfg.PortOpt("target_port", default=None, help="default 3260 (iSCSI) or 4420 (NVMe/TCP)"),
    cfg.FloatOpt("max_over_subscription_ratio", default=20.0,
                 help="thin provisioning over-subscription"),
    cfg.IntOpt("reserved_percentage", default=0, min=0, max=100),
]

SHAREBLOCK_OPTS = [
    cfg.StrOpt("shareblock_pool", default="file:/var/lib/shareblock/volumes",
               help="file:/DIR (sparse files on loop devices) or lvm:VG/THINPOOL"),
    cfg.StrOpt("shareblock_storage_node", default="local",
               help="local, or ssh://user@host[:port] for a remote storage node"),
    cfg.StrOpt("shareblock_known_hosts", default=None,
               help="known_hosts file for the storage node (system files are read too)"),
    cfg.StrOpt("shareblock_ssh_key", default=None, help="private key for the storage node"),
    cfg.StrOpt("shareblock_remote_agent", default="shareblock-target-agent",
               help="the agent command on the storage node"),
    cfg.BoolOpt("shareblock_multiattach", default=True,
                help="report the multiattach capability"),
    cfg.StrOpt("shareblock_fs_guard", default="enforce", choices=["enforce", "warn", "off"],
               help="default shared-filesystem guard, overridden by the volume type's "
                    "shareblock:fs_guard extra spec"),
    cfg.ListOpt("shareblock_nvmet_port_ids", item_type=cfg.types.Integer(min=1, max=65535),
                default=[], help="nvmet_tcp: shareblock's own nvmet port id per portal "
                                 "(target_ip_address, then the secondary ones); default "
                                 "ids 8000-8999 derived from each portal. A port of that "
                                 "id with another address, or an admin's port at the "
                                 "portal, is refused, never reused or changed"),
    cfg.BoolOpt("shareblock_mutual_chap", default=False, help="iSCSI: mutual CHAP too"),
    cfg.StrOpt("shareblock_iqn_prefix", default="iqn.2026-11.io.shareblock"),
    cfg.StrOpt("shareblock_nqn_prefix", default="nqn.2026-11.io.shareblock"),
    cfg.StrOpt("shareblock_secret_key", secret=True, default=None,
               help="the backend's key (at least 16 characters) every host's CHAP and "
                    "DH-HMAC-CHAP secrets are derived from; the same on every node that "
                    "may run this backend. Unset: one is made in shareblock_state_path"),
    cfg.StrOpt("shareblock_node_state_path", default="/var/lib/shareblock/node",
               help="a local storage node's desired state, one 0600 file per exported "
                    "volume, replayed at boot by shareblock-restore (a node over SSH keeps "
                    "its own: the agent's --state-dir)"),
    cfg.StrOpt("shareblock_state_path", default="/var/lib/shareblock",
               help="where the driver keeps the generated secret key, when "
                    "shareblock_secret_key is unset (0600)"),
]
