"""Project exceptions: errors a user can cause, with a message that says what to do."""


class HearthError(Exception):
    """An error the user can fix; the CLI prints its message without a traceback."""


class ModelNotFound(HearthError):
    """A model folder, checkpoint or adapter is missing or unreadable."""


class ConversationNotFound(HearthError):
    """No stored conversation has the requested id."""


class ContextOverflow(HearthError):
    """The current message alone does not fit the backend's context window."""


class StorageError(HearthError):
    """HEARTH_HOME or the history database cannot be used."""
