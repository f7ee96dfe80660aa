"""The hard time limit that goes with a soft one: settings and the canvas both use it."""


def hard_time_limit(soft: int) -> int:
    """The limit at which a step that ignored its soft time limit is killed."""
    return soft + max(5, soft // 10)
