"""tidyq producers: the Python ``Client``, its asyncio twin ``AsyncClient`` and the ``tidyq`` CLI (producers.cli)."""

from producers.async_client import AsyncClient, AsyncJob
from producers.client import Client, Job, JobFailed, JobNotFound, JobTimeout, SubmitWarning

__all__ = ["AsyncClient", "AsyncJob", "Client", "Job", "JobFailed", "JobNotFound", "JobTimeout", "SubmitWarning"]
