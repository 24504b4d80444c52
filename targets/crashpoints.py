"""Named crash points at the step boundaries of shareblock's operations.

A crash between two steps (a DB commit and a kernel change, a node's desired
document and configfs) is what `reconcile` and the boot-time restore repair. The reliability
tests arm these points so that the Nth one reached ends the process at once;
unarmed, `reached()` does nothing. This module imports nothing of shareblock's,
so every room (targets, driver, control plane) can mark its steps.

Points: commit (a control-plane DB transaction), desired (a node's desired
document written, configfs not yet changed), pool.create, pool.delete, export,
unexport, admit, mode, revoke.
"""
import os

EXIT_CODE = 77  # what a crashed child exits with: tells a crash from a failure


class Crash(BaseException):
    """A simulated crash for in-process tests: a BaseException, so that no
    `except Exception` rollback runs, as none would in a killed process."""


_plan: dict | None = None


def arm(n: int, action: str = "exit", on_crash=None) -> None:
    """Crash at the nth point reached (n=0: never, only record the trail).

    At that point on_crash(trail) runs first (e.g. to tell the parent which point
    it was, or to cut the storage node off), then the action: "exit" ends the
    process with os._exit(EXIT_CODE), "raise" raises Crash, "continue" goes on
    (the fault was on_crash's).
    """
    global _plan
    if action not in ("exit", "raise", "continue"):
        raise ValueError(f"crash action {action!r}")
    _plan = {"n": n, "action": action, "on_crash": on_crash, "trail": []}


def disarm() -> list[str]:
    """Stop and return the names of the points reached since arm()."""
    global _plan
    trail = _plan["trail"] if _plan else []
    _plan = None
    return trail


def trail() -> list[str]:
    return list(_plan["trail"]) if _plan else []


def reached(name: str) -> None:
    """A step is done and the next has not begun: a crash may land here."""
    if _plan is None:
        return
    _plan["trail"].append(name)
    if len(_plan["trail"]) != _plan["n"]:
        return
    plan, trail_now = _plan, list(_plan["trail"])
    plan["n"] = -1  # one crash per arming; the trail goes on being recorded
    if plan["on_crash"]:
        plan["on_crash"](trail_now)
    if plan["action"] == "exit":
        os._exit(EXIT_CODE)
    if plan["action"] == "raise":
        disarm()
        raise Crash(f"crash point {len(trail_now)}: {name}")
