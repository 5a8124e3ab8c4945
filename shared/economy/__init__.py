"""Economy mode: a job's items through a provider's batch API at the batch price.

``requests`` renders items into provider requests through the program's own adapter and parses the
answers back; one module per provider speaks its batch API (``openai_batch``: Files + Batches at any
OpenAI-compatible base URL). The worker side that submits and follows batches is
workers/economy_task.py.
"""
