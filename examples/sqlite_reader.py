"""A SQLite reader on dativo_bridge.sql_reader (docs/writing-plugins.md, "A SQL reader")."""

import sqlite3

from dativo_bridge.sql_reader import Column, SQLReader


class SQLiteReader(SQLReader):
    name = "tap-sqlite"
    config_jsonschema = {"type": "object", "properties": {"database": {"type": "string"}}}

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.config["database"])

    def tables(self, conn: sqlite3.Connection) -> list[tuple[None, str]]:
        query = "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') ORDER BY name"
        return [(None, n) for (n,) in conn.execute(query) if not n.startswith("sqlite_")]

    def columns(self, conn: sqlite3.Connection, schema: None, table: str) -> list[Column]:
        info = conn.execute(f"SELECT * FROM pragma_table_info({self.quote(table)})")
        return [Column(name, kind, not notnull, pk) for _, name, kind, notnull, _, pk in info]
