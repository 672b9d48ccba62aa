"""The stores: Redis holds the live sale (`inventory`), PostgreSQL the records (`records`)."""
