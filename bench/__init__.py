"""tidyq's benchmark harness: ``python -m bench`` (or ``make bench``).

Every figure is a ratio against a baseline measured in the same run, interleaved with it, because
the machines it runs on are shared and noisy. One module per scenario; harness.py owns the
processes (redis-server, workers, stand-in provider) and report.py the JSON/Markdown/PNG output.
"""
