"""The MetadataStore on SQLAlchemy Core, for SQLite and PostgreSQL, one module per aggregate.

- `store.py`: `SqlMetadataStore` (engines, transactions, SQLite's loop-thread connections) and
  `SqlTransaction`, which composes the table objects below on one connection.
- `base.py`: what the table modules share (`SqlTable`, time and page conversions, `touch`).
- `repositories.py`: repositories and their resource tags.
- `images.py`: manifests, tags and manifest references (the manifest GET path).
- `blobs.py`: blobs, per-repository links, GC candidates, upload sessions.
- `identities.py`: accounts, users, access keys, policy documents, pull-time exclusions.
- `lifecycle.py`: lifecycle policies, previews and events.
- `jobs.py`: leases and the key-value table.

A new capability adds its table protocol to `moorage.metadata`, its module here, and one
attribute in `SqlTransaction`.
"""

from moorage.metadata.sql.store import SqlMetadataStore, SqlTransaction, async_url

__all__ = ["SqlMetadataStore", "SqlTransaction", "async_url"]
