"""A local plugin that loads fine beside a broken one."""

from lab.api import hookimpl


def _factory(run):
    return None


@hookimpl
def register_trackers(register) -> None:
    register("fine-tracker", _factory)
