"""tidyq producers: the Python ``Client`` and the ``tidyq`` CLI (producers.cli)."""

from producers.client import Client, Job, JobFailed, JobNotFound, JobTimeout, SubmitWarning

__all__ = ["Client", "Job", "JobFailed", "JobNotFound", "JobTimeout", "SubmitWarning"]
