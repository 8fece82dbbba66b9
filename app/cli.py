"""The `videojobs` command: the one-process service and the admin commands
(docs/api.md §10).

Admin commands open the same store as the service. With an embedded store held by a
running `videojobs up` they reach that process over its admin channel (app/admin_channel.py)
and behave exactly as with the service stopped.
A failing command prints one line saying why and exits non-zero.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence

from app.config import Settings, SettingsError

log = logging.getLogger(__name__)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CommandError(Exception):
    """A failure explained in one line to the operator."""


def _settings(args: argparse.Namespace, embedded: bool = True) -> Settings:
    return Settings.from_env(data_dir=getattr(args, "data_dir", None), embedded=embedded)


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The store to act on: a running `videojobs up`'s (over its admin channel) when it
    holds this embedded store, else the store opened here. Commands use it the same way."""
    from app.admin_channel import connect, socket_path_for
    from app.wiring import open_store

    s = _settings(args)
    channel = socket_path_for(s.surrealdb_url)
    if channel is not None:
        remote = connect(channel)
        if remote is not None:
            return remote
    return open_store(s)


def cmd_users_create(args: argparse.Namespace) -> int:
    from app.passwords import hash_password
    from app.store.users import UserExists

    email = args.email.strip().lower()
    if not EMAIL_RE.match(email):
        raise CommandError(f"not an email address: {args.email!r}")
    if len(args.password) < 8:
        raise CommandError("the password must be at least 8 characters")
    if args.credits < 0:
        raise CommandError("--credits must not be negative")
    store = _store(args)
    try:
        store.users.create(email, hash_password(args.password), credits=args.credits)
    except UserExists:
        raise CommandError(f"a user with email {email} already exists") from None
    finally:
        store.close()
    log.info("created user %s with %d credits", email, args.credits)
    return 0


def cmd_credits_grant(args: argparse.Namespace) -> int:
    from app.store.users import UserNotFound

    if args.amount <= 0:
        raise CommandError("the amount must be a positive whole number")
    store = _store(args)
    try:
        balance = store.users.grant(args.email.strip().lower(), args.amount, note="cli grant")
    except UserNotFound:
        raise CommandError(f"no user with email {args.email}") from None
    finally:
        store.close()
    log.info("granted %d credits to %s; balance now %d", args.amount, args.email, balance)
    return 0


def cmd_templates_load(args: argparse.Namespace) -> int:
    from app.video_templates import TemplateFileError, load_template_file

    try:
        templates = load_template_file(args.path)
    except TemplateFileError as exc:
        raise CommandError(str(exc)) from None
    store = _store(args)
    try:
        for template in templates:
            store.templates.upsert(template.to_record())
    finally:
        store.close()
    log.info("loaded %d templates from %s", len(templates), args.path)
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        user = store.users.get_by_email(args.email.strip().lower())
        if user is None:
            raise CommandError(f"no user with email {args.email}")
        token = store.tokens.create(user["id"], user["email"])
    finally:
        store.close()
    sys.stdout.write(token + "\n")
    return 0


def _webhook_secret_key(args: argparse.Namespace) -> str:
    """SECRET_KEY, or (embedded defaults) the key `videojobs up` keeps in the data dir."""
    settings = _settings(args)
    if settings.secret_key:
        return settings.secret_key
    from pathlib import Path

    from app.oneprocess import _secret_key

    base = Path(getattr(args, "data_dir", None) or "var").resolve()
    base.mkdir(parents=True, exist_ok=True)
    return _secret_key(base)


def cmd_webhooks_set(args: argparse.Namespace) -> int:
    from app import outbound
    from app.errors import ApiError
    from app.webhook_secrets import SecretBox

    box = SecretBox(_webhook_secret_key(args))
    allow_private = _settings(args).allow_private_webhooks
    store = _store(args)
    try:
        user = store.users.get_by_email(args.email.strip().lower())
        if user is None:
            raise CommandError(f"no user with email {args.email}")
        endpoint = outbound.set_endpoint(store, box, user["id"], user["email"], args.url,
                                         allow_private)
    except ApiError as exc:
        reasons = "; ".join(m for msgs in (exc.details or {}).values() for m in msgs)
        raise CommandError(f"cannot use {args.url!r} as a webhook URL: {reasons}") from None
    finally:
        store.close()
    sys.stdout.write(endpoint.secret + "\n")
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    store = _store(args)  # Store.open migrates
    store.close()
    log.info("schema is up to date")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from app.oneprocess import run_all_in_one

    return run_all_in_one(host=args.host, port=args.port, data_dir=args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videojobs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(subparsers: argparse._SubParsersAction, name: str, func: Callable[..., int],
            help_text: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("--data-dir", default=None,
                       help="where embedded defaults live (SURREALDB_URL, STORAGE_DIR)")
        p.set_defaults(func=func)
        return p

    up = add(sub, "up", cmd_up, "run the whole service in one process on embedded defaults")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=None)

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="sub", required=True)
    p = add(users, "create", cmd_users_create, "create a user")
    p.add_argument("email")
    p.add_argument("--password", required=True)
    p.add_argument("--credits", type=int, default=0)

    credits = sub.add_parser("credits", help="manage credits").add_subparsers(dest="sub",
                                                                            required=True)
    p = add(credits, "grant", cmd_credits_grant, "add credits (recorded in the ledger)")
    p.add_argument("email")
    p.add_argument("amount", type=int)

    tpl = sub.add_parser("templates", help="manage templates").add_subparsers(dest="sub",
                                                                            required=True)
    p = add(tpl, "load", cmd_templates_load, "create or update templates from YAML or JSON")
    p.add_argument("path")

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="sub", required=True)
    p = add(tokens, "create", cmd_tokens_create, "print a new API token")
    p.add_argument("email")

    hooks = sub.add_parser("webhooks", help="outbound webhooks").add_subparsers(dest="sub",
                                                                             required=True)
    p = add(hooks, "set", cmd_webhooks_set,
            "set a user's webhook URL and print its signing secret")
    p.add_argument("email")
    p.add_argument("url")

    db = sub.add_parser("db", help="the job store").add_subparsers(dest="sub", required=True)
    add(db, "migrate", cmd_db_migrate, "create or update the schema")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.admin_channel import AdminChannelError
    from app.logs import configure_logging
    from app.store.errors import StoreError

    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CommandError, SettingsError, StoreError, AdminChannelError) as exc:
        sys.stderr.write(f"videojobs: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
