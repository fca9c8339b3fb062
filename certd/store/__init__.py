"""Everything certd must remember lives here (SQLite or PostgreSQL), never only in memory."""
