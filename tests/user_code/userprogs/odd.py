"""Things that are not programs."""

NOT_A_MODULE = 42


def needs_args(size):
    return size


def returns_string():
    return "a string"


def explodes():
    raise RuntimeError("boom while building")
