"""`tidyq serve`: run the jobs page (and the REST API mounted on it) with uvicorn.

Refuses to start (exit 2, saying what to set) when the page has no authentication configured.
Binds 127.0.0.1 unless --host says otherwise; beyond loopback, put TLS in front of it (basic auth
sends the password with every request).
"""

from __future__ import annotations

from typing import Annotated

import typer

from producers.cli import EXIT_BAD_INPUT, app, err
from shared.errors import BadInput, ConfigurationError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="listen address; private, or TLS in front")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535,
                                             help="listen port (default TIDYQ_UI_PORT, 8780)")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level")] = "warning",
):
    """Serve the jobs page: running and recent jobs with live progress, failed items, queues,
    workers and circuit breakers. Needs TIDYQ_UI_AUTH=user:password."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    from producers.serve.app import build_app
    from shared.config import get_settings

    try:
        if log_level.lower() not in LOG_LEVELS:
            levels = ", ".join(LOG_LEVELS)
            raise BadInput(f"unknown level {log_level!r}; expected one of: {levels}", where="--log-level")
        settings = get_settings()
        server_app = build_app(settings)
        listen_port = settings.ui_port if port is None else port
        config = uvicorn.Config(server_app, host=host, port=listen_port, log_level=log_level.lower(),
                                access_log=False, server_header=False)
    except (BadInput, ConfigurationError) as exc:
        err.print(f"tidyq serve: error: {exc}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if server_app.state.api_off:
        err.print(f"tidyq serve: REST API off: {server_app.state.api_off}", markup=False)
    if host not in LOOPBACK:
        err.print(f"tidyq serve: listening on {host} beyond loopback; put TLS in front of it", markup=False)
    server = uvicorn.Server(config)
    err.print(f"tidyq serve: jobs page on http://{host if ':' not in host else f'[{host}]'}:{listen_port}/",
              markup=False)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits 1 when it cannot bind; say which option to change
        if server.started:
            raise
        err.print(f"tidyq serve: error: --port: cannot listen on {host}:{listen_port} (in use, or not allowed)",
                  markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
