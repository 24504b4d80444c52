"""Policy with oslo.policy and Cinder's rule names.

As the seed says, multi-attach is admin-only by default; a policy file can
open it to others (`"volume:multiattach": "role:member"`).
"""
from oslo_config import cfg
from oslo_policy import policy

RULES = [
    policy.RuleDefault("admin_api", "role:admin"),
    policy.RuleDefault("member_api", "role:admin or role:member"),
    policy.RuleDefault("volume:multiattach", "rule:admin_api",
                       "create a multiattach volume, or retype one to multiattach"),
    policy.RuleDefault("volume:multiattach_bootable_volume", "rule:admin_api",
                       "multiattach a bootable volume"),
    policy.RuleDefault("volume:retype", "rule:member_api", "retype a volume"),
    policy.RuleDefault("volume:create", "rule:member_api", "create a volume"),
    policy.RuleDefault("volume:delete", "rule:member_api", "delete a volume"),
    policy.RuleDefault("volume:extend", "rule:member_api", "extend a volume"),
    policy.RuleDefault("volume:get", "rule:member_api", "show or list volumes"),
    policy.RuleDefault("volume:create_snapshot", "rule:member_api", "snapshot a volume"),
    policy.RuleDefault("volume:delete_snapshot", "rule:member_api", "delete a snapshot"),
    policy.RuleDefault("volume:get_snapshot", "rule:member_api", "show or list snapshots"),
    policy.RuleDefault("volume:revert_to_snapshot", "rule:member_api",
                       "revert a volume to its latest snapshot"),
    policy.RuleDefault("volume:attachment_create", "rule:member_api", "create an attachment"),
    policy.RuleDefault("volume:attachment_update", "rule:member_api", "update an attachment"),
    policy.RuleDefault("volume:attachment_complete", "rule:member_api",
                       "complete an attachment"),
    policy.RuleDefault("volume:attachment_delete", "rule:member_api", "delete an attachment"),
    policy.RuleDefault("volume_extension:types_manage", "rule:admin_api",
                       "create, change and delete volume types"),
    policy.RuleDefault("scheduler_extension:scheduler_stats:get_pools", "rule:admin_api",
                       "list the backends' pools and their capabilities"),
    policy.RuleDefault("shareblock:reconcile", "rule:admin_api", "reconcile with the target"),
    policy.RuleDefault("shareblock:guard", "rule:admin_api", "run the filesystem guard"),
    policy.RuleDefault("shareblock:fence", "rule:admin_api",
                       "fence or unfence a node at the target, show its fence status"),
]


class PolicyNotAuthorized(PermissionError):
    pass


class Policy:
    def __init__(self, policy_file: str | None = None):
        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[])
        self.enforcer = policy.Enforcer(conf, policy_file=policy_file or "/nonexistent/policy.yaml")
        self.enforcer.register_defaults(RULES)
        self.enforcer.load_rules()  # defaults, then the file's rules over them
        # rules are read once, at start (as above), and every rule here is a
        # function of (rule, user, roles) alone: its answer is kept
        self._answers: dict[tuple, bool] = {}

    def check(self, rule: str, user: str, roles: list[str]) -> None:
        key = (rule, user, tuple(roles))
        if key not in self._answers:
            self._answers[key] = self.enforcer.enforce(rule, {}, {"user_id": user,
                                                                  "roles": roles})
        if not self._answers[key]:
            raise PolicyNotAuthorized(f"policy does not allow {rule} for {user} "
                                      f"(roles: {', '.join(roles) or 'none'})")
