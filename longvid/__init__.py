"""LongVid engine: build long-video corpora as WebDataset shards and stream them into training.

Rooms: ``shards`` (on-disk format, imports nothing of ours), ``annotators`` (pure per-item
logic, no Ray), ``pipelines`` (Ray wiring and the CLI), ``model`` (bundled video LLM).
"""

__version__ = "0.1.0"
