"""Pure, table-driven transforms between Customerp records, canonical records and Wave records."""
