"""Operator commands: `flask --app api auth ...` and `flask --app api credits ...`.

Each command is one unit of work with its own commit.
"""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from api.auth import make_dev_token
from shared.accounts import service as accounts
from shared.accounts.models import User
from shared.credits import service as credits
from shared.errors import DomainError

auth_cli = AppGroup("auth", help="Authentication helpers.")
credits_cli = AppGroup("credits", help="Inspect and move credits (through the ledger).")


def _ext():
    return current_app.extensions["studiox"]


@auth_cli.command("dev-token")
@click.argument("sub")
@click.option("--email", default=None)
@click.option("--name", default=None)
@click.option("--ttl", default=30 * 24 * 3600, show_default=True, help="Lifetime in seconds.")
def dev_token(sub: str, email: str | None, name: str | None, ttl: int):
    """Print an HS256 dev token for SUB (valid with AUTH_MODE=dev)."""
    settings = _ext().settings
    if settings.auth_mode != "dev":
        click.echo("note: AUTH_MODE is not 'dev'; this server will refuse the token.", err=True)
    click.echo(make_dev_token(settings, sub, email, name, ttl))


@credits_cli.command("grant")
@click.argument("user")
@click.argument("amount", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why (kept in the ledger row's note).")
@click.option(
    "--bucket", type=click.Choice(["purchased", "plan"]), default="purchased", show_default=True
)
def grant(user: str, amount: int, reason: str, bucket: str):
    """Grant AMOUNT credits to USER (a user id or a Clerk id)."""
    try:
        with _ext().db.session_scope() as session:
            target = accounts.resolve_user(session, user)
            change = credits.grant(
                session, target.id, amount, "admin_grant", bucket=bucket, note=reason
            )
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"granted {amount} to {target.id}; balance {change.total_after}")


@credits_cli.command("show")
@click.argument("user")
@click.option("--limit", default=20, show_default=True)
def show(user: str, limit: int):
    """Show USER's balance and latest ledger rows."""
    try:
        with _ext().db.session_scope() as session:
            target = accounts.resolve_user(session, user)
            rows, _ = credits.list_ledger(session, target.id, limit=limit)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(
        f"user {target.id} ({target.clerk_id}) plan={target.plan_id} "
        f"plan_credits={target.plan_credits} purchased_credits={target.purchased_credits} "
        f"total={target.total_credits} next_reset_at={target.credits_reset_at.isoformat()}"
    )
    for row in rows:
        task = f" task={row.task_id}" if row.task_id else ""
        click.echo(
            f"  #{row.id} {row.created_at.isoformat()} {row.reason:<14} {row.bucket:<9} "
            f"{row.delta:+d} -> {row.balance_after}{task}"
        )


@credits_cli.command("reset-due")
@click.option("--batch-size", default=10_000, show_default=True)
def reset_due(batch_size: int):
    """Reset plan credits of every user whose reset date has passed."""
    total = 0
    while True:
        with _ext().db.session_scope() as session:
            done = credits.reset_due(session, batch_size=batch_size)
        total += done
        if done < batch_size:
            break
    click.echo(f"reset {total} users")


@credits_cli.command("audit")
def audit():
    """Check that every balance equals the sum of its ledger (exit 1 listing any that do not)."""
    with _ext().db.session_scope() as session:
        mismatches = credits.audit(session)
        users = session.execute(select(func.count()).select_from(User)).scalar_one()
    if not mismatches:
        click.echo(f"audit ok: {users} users, every balance matches its ledger")
        return
    click.echo(
        f"audit FAILED: {len(mismatches)} of {users} users differ from their ledger", err=True
    )
    for m in mismatches:
        click.echo(
            f"  {m.user_id}: plan {m.plan_credits} (ledger {m.ledger_plan}), "
            f"purchased {m.purchased_credits} (ledger {m.ledger_purchased})",
            err=True,
        )
    sys.exit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(auth_cli)
    app.cli.add_command(credits_cli)
