"""``python -m producers.api [--host 127.0.0.1] [--port 8780]``: serve the REST API at /api/v1.

Refuses to start (exit 2, one line on stderr) without TIDYQ_API_TOKENS or with a bad one: the API
never serves jobs without a token check.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8780


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    from producers.api.standalone import create_app
    from shared.errors import ConfigurationError

    try:
        app = create_app()
    except ConfigurationError as exc:
        print(f"tidyq api: configuration error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"tidyq api: serving http://{args.host}:{args.port}/api/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
