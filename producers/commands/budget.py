"""`tidyq budget`: what each tenant spent today (UTC) and on which jobs, against its daily budget
(shared/budget.py). Registered on the tidyq CLI at start-up."""

from __future__ import annotations

import json

import typer

from producers.cli import app, cli_errors


@app.command("budget")
def budget(tenant: str | None = typer.Option(None, "--tenant", help="only this tenant"),
           day: str | None = typer.Option(None, "--day", help="YYYY-MM-DD (UTC); default today")):
    """Spend per tenant and job for one UTC day, with each tenant's daily budget, as JSON."""
    with cli_errors():
        from shared.budget import check_day, tenant_budgets
        from shared.config import get_settings
        from shared.redisconn import get_redis

        check_day(day)
        settings = get_settings()
        budgets = tenant_budgets(get_redis(settings.redis_url or settings.default_redis_url), settings)
        typer.echo(json.dumps({"tenants": budgets.report(tenant, day)}, ensure_ascii=False))
