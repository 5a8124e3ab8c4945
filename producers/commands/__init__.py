"""Extra `tidyq` commands. Each module here is imported by producers.cli at start-up and
registers itself with ``from producers.cli import app`` and ``@app.command()``."""
