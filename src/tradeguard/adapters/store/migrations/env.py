"""Alembic environment of the store, run programmatically (no alembic.ini).

`Store.open` runs `upgrade head` inside its own transaction and passes the connection in
`config.attributes["connection"]`. To write a new revision, autogenerate it against a store at head:

    from alembic import command
    from tradeguard.adapters.store.store import Store, alembic_config

    with Store.open("sqlite:///var/dev.db") as store, store.engine.begin() as conn:
        command.revision(alembic_config(conn), message="what changes", autogenerate=True, rev_id="0002")

then review the generated file in `versions/` (SQLite gets batch operations, see `render_as_batch`).
"""

from alembic import context
from sqlalchemy.engine import Connection

from tradeguard.adapters.store.schema import UTCDateTime, metadata


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render UTCDateTime by its DDL, so revisions do not import application code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError("tradeguard migrations run online only, with config.attributes['connection'] set")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: autogenerate "move and copy" batch operations for it.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
