class BuildFailed(Exception):
    """A build could not finish; the message is a sentence a publisher can act on.

    `failure_kind` says whose fault it was: "template" (the publisher fixes it in a new
    version) or "hub" (building again may work once the hub's operators fixed the cause)."""

    failure_kind = "template"

    def __init__(self, message: str, *, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class HubFailure(BuildFailed):
    """The hub, not the template, failed the build: its engine did not answer, its own
    deadline passed. Building the same version again may succeed."""

    failure_kind = "hub"


class TemplateNotReady(BuildFailed):
    """The built template was started and did not answer its ready path in time."""
