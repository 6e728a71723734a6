"""The sync state in a SQL database: links, watermarks, dead letters."""
