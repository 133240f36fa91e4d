class BuildFailed(Exception):
    """A build could not finish; the message is a sentence a publisher can act on."""
