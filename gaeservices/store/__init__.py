"""The durable key-value store with expiry (SQL through SQLAlchemy Core, or Datastore)."""
