"""`tidyq serve`: the jobs page for people (and, under /api/v1, the REST API for services).

app.py assembles the ASGI app (``build_app``), auth.py guards the page, pages.py renders it,
display.py shapes each row, cli.py is the command.
"""
