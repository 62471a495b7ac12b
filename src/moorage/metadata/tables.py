"""The metadata schema, in one place (SQLAlchemy Core). Alembic migrations are written against it.

    repositories ─┬─< manifests ─< manifest_refs      (a manifest's blobs and child manifests)
                  ├─< tags                             (tag → manifest digest, per repository)
                  ├─< repo_blobs >── blobs             (which committed blobs a repository may use)
    gc_candidates                                      (blobs GC must look at: maybe unreferenced)
                  └─< uploads                          (upload sessions in progress)
    repositories ─< resource_tags                      (TagResource key/value pairs)
    repositories ─< repository_policies                (SetRepositoryPolicy text, one per repository)
    registry_policies                                  (PutRegistryPolicy text, one per registry)
    accounts ─┬─< users ─< user_policies               (IAM-style users; root is implicit; identity policies)
              └─< access_keys                          (secret stored encrypted, see auth.py)
    repositories ─┬─< lifecycle_policies               (PutLifecyclePolicy text, last evaluation)
                  └─< lifecycle_previews               (the latest StartLifecyclePolicyPreview and its result)
    lifecycle_events                                   (what lifecycle runs did; outlives the repository)
    events ─ event_consumers, event_failures           (the outbox: events, delivery positions, give-ups)
    creation_templates                                 (repository creation templates, per registry and prefix)
    replication_statuses                               (per source image and destination: replication progress)
    replication_backfills ─< backfill_items            (StartReplicationBackfill runs and what each copies)
    pull_time_exclusions                               (principals whose pulls leave lastRecordedPullTime)
    leases                                             (background-job leases)
    kv                                                 (small named values: signing keys, settings)

Every repository belongs to one registry `(account_id, region)`; everything below a repository
is scoped through `repo_id`. `blobs` is the one global content-addressed namespace: a row
means the bytes are committed in the blob store. Times are epoch seconds (float, UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

__all__ = [
    "access_keys",
    "accounts",
    "backfill_items",
    "blobs",
    "creation_templates",
    "event_consumers",
    "event_failures",
    "events",
    "gc_candidates",
    "kv",
    "leases",
    "lifecycle_events",
    "lifecycle_policies",
    "lifecycle_previews",
    "manifest_refs",
    "manifests",
    "metadata",
    "pull_time_exclusions",
    "registry_policies",
    "replication_backfills",
    "replication_statuses",
    "repo_blobs",
    "repositories",
    "repository_policies",
    "resource_tags",
    "secret_versions",
    "secrets",
    "tags",
    "uploads",
    "user_policies",
    "users",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

DIGEST = String(200)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("tag_mutability", String(40), nullable=False, server_default="MUTABLE"),
    Column("mutability_exclusions", Text, nullable=False, server_default="[]"),
    Column("scan_on_push", Boolean, nullable=False, server_default="0"),
    Column("encryption_type", String(16), nullable=False, server_default="AES256"),
    Column("kms_key", String(2048), nullable=True),
    UniqueConstraint("account_id", "region", "name", name="uq_repositories_registry_name"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("config_media_type", String(255), nullable=True),
    Column("subject", DIGEST, nullable=True),
    Column("size", Integer, nullable=False),
    Column("image_size", BigInteger, nullable=False, server_default="0"),
    Column("body", LargeBinary, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("last_pulled_at", Float, nullable=True),
    Column("storage_class", String(16), nullable=False, server_default="STANDARD"),
    Column("last_archived_at", Float, nullable=True),
    # when the last restore from archive completes (ACTIVATING until then)
    Column("last_activated_at", Float, nullable=True),
    Index("ix_manifests_subject", "repo_id", "subject"),
    # the console's repository page: images by push time / size (ImageTable.browse)
    Index("ix_manifests_pushed", "repo_id", "pushed_at", "digest"),
    Index("ix_manifests_size", "repo_id", "image_size", "digest"),
)

manifest_refs = Table(
    "manifest_refs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("parent", DIGEST, primary_key=True),
    Column("child", DIGEST, primary_key=True),
    # "blob" for config/layers, "manifest" for the children of an index
    Column("kind", String(8), nullable=False),
    Column("media_type", String(255), nullable=True),
    Index("ix_manifest_refs_child", "child"),
    Index("ix_manifest_refs_repo_child", "repo_id", "child"),
)

tags = Table(
    "tags",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(300), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_tags_repo_digest", "repo_id", "digest"),
)
# The OCI tags/list order (case-insensitive, the exact name breaking ties), so a page of a
# repository's tags is read off the index from its cursor instead of sorting every tag.
Index("ix_tags_repo_folded", tags.c.repo_id, func.lower(tags.c.name), tags.c.name)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    # set by garbage collection while it removes the bytes: the blob counts as absent
    Column("deleting", Boolean, nullable=False, server_default="0"),
)

# Blobs that may have become garbage (uploaded, or a manifest using them was deleted), with the
# time they were last touched; GC looks only here, so its work follows the garbage, not the store.
gc_candidates = Table(
    "gc_candidates",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("since", Float, nullable=False),
    Index("ix_gc_candidates_since", "since"),
)

repo_blobs = Table(
    "repo_blobs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("linked_at", Float, nullable=False),
    Index("ix_repo_blobs_digest", "digest"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("backend_state", Text, nullable=False, server_default="{}"),
    # JSON list of the byte counts of each append (ECR checks part sizes at completion)
    Column("part_sizes", Text, nullable=False, server_default="[]"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_uploads_updated_at", "updated_at"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)

kv = Table(
    "kv",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

resource_tags = Table(
    "resource_tags",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("created_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # NULL: the account's root
    Column("user_name", String(64), nullable=True),
    # AES-GCM ciphertext of the secret access key (SigV4 needs it in clear), base64
    Column("secret", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_access_keys_account", "account_id"),
)

# Policies are stored as the exact text accepted (validated by moorage.policy.parse_policy on the
# way in), so Get* answers what was set.
repository_policies = Table(
    "repository_policies",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

registry_policies = Table(
    "registry_policies",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

user_policies = Table(
    "user_policies",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("user_name", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(
        ["account_id", "user_name"],
        ["users.account_id", "users.name"],
        name="fk_user_policies_users",
        ondelete="CASCADE",
    ),
)

lifecycle_policies = Table(
    "lifecycle_policies",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("document", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_evaluated_at", Float, nullable=True),
)

# One preview per repository (a new one replaces it). `results` is the JSON list of the decisions
# (GetLifecyclePolicyPreview `previewResults` entries), written when the evaluation completes.
lifecycle_previews = Table(
    "lifecycle_previews",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("document", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("results", Text, nullable=True),
)

# What lifecycle runs did to images: kept by name (not repo_id), so the record outlives the repository.
lifecycle_events = Table(
    "lifecycle_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("repository", String(256), nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("action", String(16), nullable=False),
    Column("rule_priority", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_lifecycle_events_registry_at", "account_id", "region", "at"),
)

pull_time_exclusions = Table(
    "pull_time_exclusions",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("principal_arn", String(200), primary_key=True),
    Column("created_at", Float, nullable=False),
)

# The outbox (metadata/outbox.py): events, each consumer's position, the events a consumer gave up on.
events = Table(
    "events",
    metadata,
    Column("seq", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    # The writing transaction's id on PostgreSQL (pg_current_xact_id), 0 on SQLite.
    Column("xid", BigInteger, nullable=False, server_default="0"),
    Column("id", String(36), nullable=False, unique=True),
    Column("detail_type", String(100), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("repository", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("body", Text, nullable=False),
    # Event.work: which of Moorage's own consumers have work for it (NULL: undecided, all look).
    Column("work", Integer, nullable=True),
    Index("ix_events_position", "xid", "seq"),
    Index("ix_events_created_at", "created_at"),
    # Positions must never be reused, even after every row was pruned: consumers keep them.
    sqlite_autoincrement=True,
)

event_consumers = Table(
    "event_consumers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("xid", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("first_failure_at", Float, nullable=True),
    Column("next_attempt_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("seen_at", Float, nullable=False),
)

event_failures = Table(
    "event_failures",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("failed_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
)


# Repository creation templates and replication statuses (metadata/replication.py).
creation_templates = Table(
    "creation_templates",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("prefix", String(256), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

replication_statuses = Table(
    "replication_statuses",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("repository", String(256), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("dest_account_id", String(12), primary_key=True),
    Column("dest_region", String(32), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("failure_code", String(100), nullable=True),
    Column("updated_at", Float, nullable=False),
    Index("ix_replication_statuses_updated_at", "updated_at"),
)

replication_backfills = Table(
    "replication_backfills",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("dest_account_id", String(12), nullable=False),
    Column("dest_region", String(32), nullable=False),
    Column("status", String(20), nullable=False),
    Column("failure_code", String(100), nullable=True),
    Column("total", Integer, nullable=True),
    Column("completed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("failure_codes", Text, nullable=False, server_default=""),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Index("ix_replication_backfills_registry", "account_id", "region", "started_at"),
)

backfill_items = Table(
    "backfill_items",
    metadata,
    Column("backfill_id", String(36), ForeignKey("replication_backfills.id", ondelete="CASCADE"), primary_key=True),
    Column("repository", String(256), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("tag", String(300), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("failure_code", String(100), nullable=True),
    Column("sub_failure_codes", Text, nullable=False, server_default=""),
)


# The vulnerability database (metadata/vulndb.py): OSV records by generation, and their package index.
vuln_records = Table(
    "vuln_records",
    metadata,
    Column("generation", Integer, primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("modified", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("body", Text, nullable=False),
    # The generation whose import last changed the record (a copy keeps it): what an import changed.
    Column("changed_in", Integer, nullable=False, server_default="0"),
)

vuln_affected = Table(
    "vuln_affected",
    metadata,
    Column("generation", Integer, primary_key=True),
    Column("ecosystem", String(200), primary_key=True),
    Column("name", String(500), primary_key=True),
    Column("vuln_id", String(200), primary_key=True),
)

# Image scans (metadata/scans.py): the latest scan of each image, its lease and its result.
image_scans = Table(
    "image_scans",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("repository", String(256), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("scan_type", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("completed_at", Float, nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("result", Text, nullable=True),
    Index("ix_image_scans_status", "status"),
)

# The packages each scanned image holds, as (ecosystem, name) keys: which images an import affects.
image_packages = Table(
    "image_packages",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("repository", String(256), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("ecosystem", String(200), primary_key=True),
    Column("name", String(500), primary_key=True),
    Index("ix_image_packages_key", "ecosystem", "name"),
)


pull_through_rules = Table(
    "pull_through_rules",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("prefix", String(30), primary_key=True),
    Column("upstream_url", String(2048), nullable=False),
    Column("upstream_registry", String(64), nullable=True),
    Column("upstream_prefix", String(30), nullable=False),
    Column("credential_arn", String(612), nullable=True),
    Column("custom_role_arn", String(2048), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=True),
)


# Secrets Manager: values are sealed with the master key before they reach these tables.
secrets = Table(
    "secrets",
    metadata,
    Column("arn", String(2048), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(512), nullable=False),
    Column("description", Text, nullable=True),
    Column("kms_key_id", String(2048), nullable=True),
    Column("tags", Text, nullable=False),  # JSON [[key, value], ...]
    Column("created_at", Float, nullable=False),
    Column("last_changed_at", Float, nullable=False),
    Column("last_accessed_at", Float, nullable=True),
    Column("deleted_at", Float, nullable=True),
    Column("deletion_at", Float, nullable=True),
    UniqueConstraint("account_id", "region", "name"),
)

secret_versions = Table(
    "secret_versions",
    metadata,
    Column("arn", String(2048), ForeignKey("secrets.arn", ondelete="CASCADE"), primary_key=True),
    Column("version_id", String(64), primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("binary", Boolean, nullable=False),
    Column("stages", Text, nullable=False),  # JSON [stage, ...]
    Column("created_at", Float, nullable=False),
)
# Managed signing (signing.py): AWS Signer profiles with their keys, per-account root CAs, and the
# signing status of each image per profile.
signing_profiles = Table(
    "signing_profiles",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version", String(10), nullable=False),
    Column("platform_id", String(100), nullable=False),
    Column("status", String(10), nullable=False),
    Column("status_reason", String(500), nullable=True),
    Column("validity_value", Integer, nullable=False),
    Column("validity_type", String(10), nullable=False),
    Column("key_ciphertext", Text, nullable=False),
    Column("cert_chain", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("revoked_by", String(2048), nullable=True),
    Column("revocation_effective_from", Float, nullable=True),
)

signing_roots = Table(
    "signing_roots",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("key_ciphertext", Text, nullable=False),
    Column("cert_pem", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

signing_statuses = Table(
    "signing_statuses",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("repository", String(256), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("profile_arn", String(200), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("failure_code", String(100), nullable=True),
    Column("failure_reason", String(1000), nullable=True),
    Column("principal_arn", String(2048), nullable=True),
    Column("signature_digest", String(200), nullable=True),
    Column("updated_at", Float, nullable=False),
)
