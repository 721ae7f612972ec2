"""The full-text index of messages and conversation titles, per database vendor.

PostgreSQL: GIN indexes on `to_tsvector(SEARCH_CONFIG, ...)` expressions; a query that filters
on the same expressions (chat.search does, through SearchVector) uses them, and nothing has to
be kept in step by hand. The message index leaves out replies still `streaming`, so that the
flushes of a reply being generated never touch it (the hot path stays as it was).

SQLite: FTS5 tables kept in step by triggers, so that every path that writes a message (a new
message, a reply finalised later by another process, an edit, a conversation deleted or
cleared, a rename) is covered without the code having to remember it:
- `chat_message_fts`: an external-content table over `chat_message` (rowid = the message id),
  holding the messages that are not `streaming` (the same rule as PostgreSQL's index);
- `chat_conversation_fts`: the titles, keyed through `chat_conversation_fts_key`, an integer key
  per conversation (a UUID primary key has no rowid that VACUUM promises to keep).

SQLite drops a table's triggers when Django remakes the table (most AlterField, AddField and
constraint changes do): `ensure_sqlite_triggers` runs after every `migrate` (chat.apps) and puts
them back, rebuilding the index if they were missing.
"""

from __future__ import annotations

from typing import Any

# PostgreSQL's text search configuration, and its SQLite counterpart: both stem English words
# (porter), so "pirates" finds "pirate" on either database.
SEARCH_CONFIG = "english"
SQLITE_TOKENIZE = "porter unicode61 remove_diacritics 2"

POSTGRES_INSTALL = [
    f"""CREATE INDEX IF NOT EXISTS chat_msg_search ON chat_message
        USING gin (to_tsvector('{SEARCH_CONFIG}'::regconfig, COALESCE(content, '')))
        WHERE status <> 'streaming'""",
    f"""CREATE INDEX IF NOT EXISTS chat_conv_title_search ON chat_conversation
        USING gin (to_tsvector('{SEARCH_CONFIG}'::regconfig, COALESCE(title, '')))""",
]
POSTGRES_UNINSTALL = [
    "DROP INDEX IF EXISTS chat_msg_search",
    "DROP INDEX IF EXISTS chat_conv_title_search",
]

SQLITE_TABLES = [
    f"""CREATE VIRTUAL TABLE chat_message_fts USING fts5(
        content, content='chat_message', content_rowid='id', tokenize='{SQLITE_TOKENIZE}')""",
    """CREATE TABLE chat_conversation_fts_key (
        key INTEGER PRIMARY KEY, conversation_id char(32) NOT NULL UNIQUE)""",
    f"""CREATE VIRTUAL TABLE chat_conversation_fts USING fts5(
        title, tokenize='{SQLITE_TOKENIZE}')""",
]

# What the index holds, from the tables themselves (after the tables are made, or when
# triggers were found missing).
SQLITE_FILL = [
    "INSERT INTO chat_message_fts(chat_message_fts) VALUES ('delete-all')",
    """INSERT INTO chat_message_fts(rowid, content)
        SELECT id, content FROM chat_message WHERE status <> 'streaming'""",
    """INSERT OR IGNORE INTO chat_conversation_fts_key(conversation_id)
        SELECT id FROM chat_conversation""",
    "DELETE FROM chat_conversation_fts_key WHERE conversation_id NOT IN "
    "(SELECT id FROM chat_conversation)",
    "DELETE FROM chat_conversation_fts",
    """INSERT INTO chat_conversation_fts(rowid, title)
        SELECT k.key, c.title FROM chat_conversation_fts_key k
        JOIN chat_conversation c ON c.id = k.conversation_id WHERE c.title <> ''""",
]

# Fixed SQL only (no value is formatted in). A message is indexed while it is not `streaming`.
SQLITE_TRIGGERS = {
    "chat_message_fts_insert": """
        AFTER INSERT ON chat_message WHEN new.status <> 'streaming' BEGIN
            INSERT INTO chat_message_fts(rowid, content) VALUES (new.id, new.content);
        END""",
    # An external-content index is told what it held: the old text, as it was indexed.
    "chat_message_fts_delete": """
        AFTER DELETE ON chat_message WHEN old.status <> 'streaming' BEGIN
            INSERT INTO chat_message_fts(chat_message_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
        END""",
    # Only when the text, or whether it is indexed, changes: a reply's flushes while it
    # streams, and the figures saved with it, cost nothing here.
    "chat_message_fts_update": """
        AFTER UPDATE OF content, status ON chat_message
        WHEN (old.status <> 'streaming' OR new.status <> 'streaming')
            AND (old.content IS NOT new.content
                 OR (old.status <> 'streaming') <> (new.status <> 'streaming'))
        BEGIN
            INSERT INTO chat_message_fts(chat_message_fts, rowid, content)
                SELECT 'delete', old.id, old.content WHERE old.status <> 'streaming';
            INSERT INTO chat_message_fts(rowid, content)
                SELECT new.id, new.content WHERE new.status <> 'streaming';
        END""",
    "chat_conversation_fts_insert": """
        AFTER INSERT ON chat_conversation BEGIN
            INSERT OR IGNORE INTO chat_conversation_fts_key(conversation_id) VALUES (new.id);
            INSERT INTO chat_conversation_fts(rowid, title)
                SELECT key, new.title FROM chat_conversation_fts_key
                WHERE conversation_id = new.id AND new.title <> '';
        END""",
    "chat_conversation_fts_update": """
        AFTER UPDATE OF title ON chat_conversation WHEN old.title IS NOT new.title BEGIN
            DELETE FROM chat_conversation_fts WHERE rowid =
                (SELECT key FROM chat_conversation_fts_key WHERE conversation_id = old.id);
            INSERT INTO chat_conversation_fts(rowid, title)
                SELECT key, new.title FROM chat_conversation_fts_key
                WHERE conversation_id = new.id AND new.title <> '';
        END""",
    "chat_conversation_fts_delete": """
        AFTER DELETE ON chat_conversation BEGIN
            DELETE FROM chat_conversation_fts WHERE rowid =
                (SELECT key FROM chat_conversation_fts_key WHERE conversation_id = old.id);
            DELETE FROM chat_conversation_fts_key WHERE conversation_id = old.id;
        END""",
}

SQLITE_UNINSTALL = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS),
    "DROP TABLE IF EXISTS chat_message_fts",
    "DROP TABLE IF EXISTS chat_conversation_fts",
    "DROP TABLE IF EXISTS chat_conversation_fts_key",
]


def _execute(connection: Any, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _create_triggers(connection: Any, names: list[str]) -> None:
    _execute(connection, [f"CREATE TRIGGER {name} {SQLITE_TRIGGERS[name]}" for name in names])


def install(connection: Any) -> None:
    """Create the index (migration 0010), filled from the rows already there."""
    if connection.vendor == "postgresql":
        _execute(connection, POSTGRES_INSTALL)
    elif connection.vendor == "sqlite":
        _execute(connection, SQLITE_TABLES)
        _execute(connection, SQLITE_FILL)
        _create_triggers(connection, list(SQLITE_TRIGGERS))


def uninstall(connection: Any) -> None:
    if connection.vendor == "postgresql":
        _execute(connection, POSTGRES_UNINSTALL)
    elif connection.vendor == "sqlite":
        _execute(connection, SQLITE_UNINSTALL)


def ensure_sqlite_triggers(connection: Any) -> list[str]:
    """Put back the triggers a table remake dropped, and rebuild the index they failed to keep
    (after a `migrate`). Returns the names of the triggers it made."""
    if connection.vendor != "sqlite":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        found = {(kind, name) for kind, name in cursor.fetchall()}
    if ("table", "chat_message_fts") not in found:
        return []  # migrated back before 0010, or not yet to it
    missing = [name for name in SQLITE_TRIGGERS if ("trigger", name) not in found]
    if missing:
        _execute(connection, SQLITE_FILL)
        _create_triggers(connection, missing)
    return missing
