"""Repository creation templates (semantics §12): the settings Moorage gives a repository it
creates itself — on a `/v2/` push to a missing repository (CREATE_ON_PUSH), when replication
needs a destination repository (REPLICATION), and for the pull-through cache (PULL_THROUGH_CACHE).

Templates are per registry. Selection for a new repository name: among the templates that list
the scenario in `appliedFor`, the one whose prefix is the longest `/`-boundary prefix of the name
(`prod` matches `prod/app`, never `production`), else the `ROOT` template, else none. A repository
created through a template gets every setting of it in the creating transaction: tag mutability
and exclusion filters, encryption, resource tags, repository policy and lifecycle policy (which
the lifecycle job then applies). Templates are never applied to an explicit CreateRepository and
never retroactively.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from moorage import events as ev
from moorage.clock import Clock
from moorage.errors import TemplateAlreadyExistsError, TemplateNotFoundError
from moorage.lifecycle import parse_policy as parse_lifecycle_policy
from moorage.metadata import MetadataStore, Transaction
from moorage.metadata.replication import TemplateRecord
from moorage.model import Page, PageRequest, RegistryRef, Repository, RepositoryName
from moorage.policy import check_ecr_actions, parse_policy

__all__ = ["ROOT", "SCENARIOS", "Template", "Templates", "normalize_prefix", "prefix_matches"]

ROOT = "ROOT"
SCENARIOS = ("PULL_THROUGH_CACHE", "REPLICATION", "CREATE_ON_PUSH")


def normalize_prefix(prefix: str) -> str:
    """The stored form of a prefix: `ROOT`, or the prefix without its (implied) trailing `/`."""
    return prefix if prefix == ROOT else prefix.rstrip("/")


def prefix_matches(prefix: str, name: str) -> bool:
    """Whether a (normalized) template prefix covers a repository name, on a `/` boundary."""
    return prefix == ROOT or name.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class Template:
    prefix: str
    applied_for: tuple[str, ...]
    description: str | None = None
    encryption_type: str = "AES256"
    kms_key: str | None = None
    resource_tags: tuple[tuple[str, str], ...] = ()
    tag_mutability: str = "MUTABLE"
    mutability_exclusions: tuple[str, ...] = ()
    repository_policy: str | None = None
    lifecycle_policy: str | None = None
    custom_role_arn: str | None = None
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)

    def document(self) -> str:
        data = asdict(self)
        for key in ("prefix", "created_at", "updated_at"):
            data.pop(key)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_record(cls, record: TemplateRecord) -> Template:
        data = json.loads(record.document)
        data["applied_for"] = tuple(data["applied_for"])
        data["resource_tags"] = tuple((k, v) for k, v in data["resource_tags"])
        data["mutability_exclusions"] = tuple(data["mutability_exclusions"])
        return cls(prefix=record.prefix, created_at=record.created_at, updated_at=record.updated_at, **data)


def validate_policies(template: Template) -> None:
    """The embedded policies are checked as SetRepositoryPolicy and PutLifecyclePolicy check them
    (PolicyError / LifecyclePolicyError, both InvalidRequestError)."""
    if template.repository_policy:
        check_ecr_actions(parse_policy(template.repository_policy, kind="resource", name="repositoryPolicy"))
    if template.lifecycle_policy:
        parse_lifecycle_policy(template.lifecycle_policy)


class Templates:
    def __init__(self, metadata: MetadataStore, *, clock: Clock) -> None:
        self._metadata = metadata
        self._clock = clock

    async def create(self, registry: RegistryRef, template: Template) -> Template:
        validate_policies(template)
        now = self._clock.now()
        stored = replace(template, prefix=normalize_prefix(template.prefix), created_at=now, updated_at=now)
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.templates.create(TemplateRecord(registry, stored.prefix, stored.document(), now, now)):
                raise TemplateAlreadyExistsError(
                    f"The repository creation template with prefix '{stored.prefix}' already exists in the "
                    f"registry with id '{registry.account_id}'"
                )
        return stored

    async def get(self, registry: RegistryRef, prefix: str) -> Template:
        async with self._metadata.transaction() as tx:
            record = await tx.templates.get(registry, normalize_prefix(prefix))
        if record is None:
            raise _not_found(registry, prefix)
        return Template.from_record(record)

    async def describe(
        self, registry: RegistryRef, prefixes: Sequence[str] | None, page: PageRequest
    ) -> Page[Template]:
        """The templates of the given prefixes that exist (no error for the others), or a page of all."""
        async with self._metadata.transaction() as tx:
            records = await tx.templates.list(registry)
        templates = [Template.from_record(r) for r in records]
        if prefixes is not None:
            wanted = {normalize_prefix(p) for p in prefixes}
            return Page([t for t in templates if t.prefix in wanted])
        if page.after is not None:
            templates = [t for t in templates if t.prefix > page.after]
        if page.limit is not None and len(templates) > page.limit:
            templates = templates[: page.limit]
            return Page(templates, templates[-1].prefix if templates else None)
        return Page(templates)

    async def update(self, registry: RegistryRef, template: Template) -> Template:
        """Replace a template's fields (the caller merged the unchanged ones in)."""
        validate_policies(template)
        now = self._clock.now()
        prefix = normalize_prefix(template.prefix)
        async with self._metadata.transaction(write=True) as tx:
            current = await tx.templates.get(registry, prefix)
            if current is None:
                raise _not_found(registry, prefix)
            stored = replace(template, prefix=prefix, created_at=current.created_at, updated_at=now)
            await tx.templates.update(TemplateRecord(registry, prefix, stored.document(), current.created_at, now))
        return stored

    async def delete(self, registry: RegistryRef, prefix: str) -> Template:
        async with self._metadata.transaction(write=True) as tx:
            record = await tx.templates.delete(registry, normalize_prefix(prefix))
        if record is None:
            raise _not_found(registry, prefix)
        return Template.from_record(record)

    # -- application -------------------------------------------------------------------------

    @staticmethod
    async def select(tx: Transaction, registry: RegistryRef, name: str, scenario: str) -> Template | None:
        """The template that applies to a new repository `name` created for `scenario`."""
        best: Template | None = None
        for record in await tx.templates.list(registry):
            template = Template.from_record(record)
            if scenario not in template.applied_for or not prefix_matches(template.prefix, name):
                continue
            if best is None or _rank(template) > _rank(best):
                best = template
        return best

    async def matches(self, registry: RegistryRef, name: str, scenario: str) -> bool:
        async with self._metadata.transaction() as tx:
            return await self.select(tx, registry, name, scenario) is not None

    @staticmethod
    async def create_repository(
        tx: Transaction, registry: RegistryRef, name: RepositoryName, template: Template | None, now: datetime
    ) -> Repository:
        """Create `name` in the transaction with the template's settings (ECR's defaults without one)
        and record the repository's CREATE event. Raises RepositoryAlreadyExistsError."""
        repo = Repository(registry, name, created_at=now)
        if template is not None:
            repo = replace(
                repo,
                tag_mutability=template.tag_mutability,
                mutability_exclusions=template.mutability_exclusions,
                encryption_type=template.encryption_type,
                kms_key=template.kms_key or None,
            )
        created = await tx.repositories.create(repo)
        if template is not None:
            if template.resource_tags:
                await tx.resource_tags.put(created.id, dict(template.resource_tags))
            if template.repository_policy:
                await tx.policies.put_repository_policy(created.id, template.repository_policy, now)
            if template.lifecycle_policy:
                await tx.lifecycle.put_policy(created.id, template.lifecycle_policy, now)
        await tx.events.add([ev.repository_action(registry, name, "CREATE", now)])
        return created


def _rank(template: Template) -> int:
    """Longer prefixes are more specific; ROOT is the fallback."""
    return -1 if template.prefix == ROOT else len(template.prefix)


def _not_found(registry: RegistryRef, prefix: str) -> TemplateNotFoundError:
    return TemplateNotFoundError(
        f"The repository creation template with prefix '{normalize_prefix(prefix)}' does not exist in the "
        f"registry with id '{registry.account_id}'"
    )
