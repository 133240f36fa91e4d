"""Resolve a version's `requires` into a concrete graph of versions: a read, before anything
is deployed.

Each requirement gets the newest version of its template that satisfies its range: yanked
versions never, pre-releases only when the range names one, private templates only when
the deploying user may read them. A template reached twice (a diamond) is shared when one
version satisfies every range on it; otherwise the graph is refused, like an unsatisfiable
range or a cycle, with the chain of requirements that led there.

Queries: one for the user's publishers, then one per level of the graph (every version of
every template that level requires, in one go).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import Membership, Template, TemplateVersion
from .specs import manifest_of
from .versions import SemVer, version_in_range

ARROW = " → "
# What resolution reads of a version; the rest (READMEs, file lists) can be large.
HEAVY_FIELDS = ("readme", "readme_html", "changelog", "changelog_html", "files")


@dataclass(frozen=True)
class Part:
    """One template of the graph, at the version it resolved to."""

    template: str
    version: str
    version_id: int
    digest: str


@dataclass(frozen=True)
class Edge:
    """`dependant` reaches `requirement` under `alias` (its `<ALIAS>_URL`)."""

    dependant: str
    requirement: str
    alias: str
    version_range: str

    @property
    def env_prefix(self) -> str:
        return self.alias.upper()


@dataclass(frozen=True)
class Graph:
    """A resolved graph. `parts` are in deploy order: every part after all it requires,
    the root last."""

    root: str
    parts: tuple[Part, ...]
    edges: tuple[Edge, ...]

    def part(self, template: str) -> Part:
        return next(part for part in self.parts if part.template == template)

    def requirements_of(self, template: str) -> tuple[Edge, ...]:
        return tuple(edge for edge in self.edges if edge.dependant == template)

    @property
    def requirements(self) -> tuple[Part, ...]:
        """Every part but the root."""
        return tuple(part for part in self.parts if part.template != self.root)

    def as_lock(self) -> dict:
        """The JSON stored on a deployment: what it was resolved to, digests included."""
        return {
            "root": self.root,
            "parts": [
                {"template": part.template, "version": part.version, "digest": part.digest,
                 "requires": {edge.alias: edge.requirement for edge in self.requirements_of(part.template)}}
                for part in self.parts
            ],
        }


class ResolutionRefused(Exception):
    """The graph cannot be deployed; `chain` is the path of requirements that caused it."""

    def __init__(self, chain: Iterable[str], reason: str):
        self.chain = tuple(chain)
        self.reason = reason
        super().__init__(ARROW.join((*self.chain, reason)))


@dataclass(frozen=True)
class _Pick:
    version: TemplateVersion
    # The chain that first reached it: root → … → this template.
    path: tuple[str, ...]


class _Conflict(Exception):
    """A template reached again under a range its chosen version misses."""

    def __init__(self, template: str, dependant: str, version_range: str, refusal: ResolutionRefused):
        self.template, self.dependant, self.version_range, self.refusal = template, dependant, version_range, refusal
        super().__init__(str(refusal))


def graph_resolve(version: TemplateVersion, *, user: AbstractBaseUser | AnonymousUser) -> Graph:
    """The graph `version` needs, resolved for `user`. Raises ResolutionRefused.

    A diamond whose ranges the first choice does not all satisfy is resolved again with
    every range on that template known up front: one version for all, or refused."""
    visible_publishers = _publishers_of(user)
    known: dict[str, list[tuple[str, str]]] = {}
    while True:
        try:
            return _resolve(version, visible_publishers, known)
        except _Conflict as conflict:
            ranges = known.setdefault(conflict.template, [])
            if (conflict.dependant, conflict.version_range) in ranges:
                raise conflict.refusal from None
            ranges.append((conflict.dependant, conflict.version_range))


def _resolve(version: TemplateVersion, visible_publishers: frozenset[int], known: dict[str, list[tuple[str, str]]]) -> Graph:
    root = version.template.name
    picks: dict[str, _Pick] = {root: _Pick(version=version, path=(root,))}
    edges: list[Edge] = []
    level = [root]
    while level:
        wanted = [(name, item) for name in level for item in manifest_of(picks[name].version).requires]
        candidates = _versions_of({item.template for _, item in wanted})
        new: list[str] = []
        for name, item in wanted:
            edges.append(Edge(dependant=name, requirement=item.template, alias=item.alias, version_range=item.version))
            path = picks[name].path
            chain = (*path, f"{item.template} {item.version}")
            if item.template in path:
                raise ResolutionRefused(chain, f"a cycle: {ARROW.join((*path[path.index(item.template):], item.template))}")
            if item.template in picks:
                _share(picks[item.template], name, chain, item.version)
                continue
            # Siblings of one level that require the same template are resolved together.
            ranges = [(dependant, other.version) for dependant, other in wanted if other.template == item.template]
            ranges += [pair for pair in known.get(item.template, []) if pair not in ranges]
            chosen = _newest(item.template, candidates.get(item.template, []), ranges, chain, visible_publishers)
            picks[item.template] = _Pick(version=chosen, path=(*path, item.template))
            new.append(item.template)
        level = new
    order = _deploy_order(root, edges)
    parts = tuple(_part(name, picks[name].version) for name in order)
    return Graph(root=root, parts=parts, edges=tuple(edges))


def _publishers_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[int]:
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    return frozenset(Membership.objects.filter(user_id=user.pk).values_list("publisher_id", flat=True))


def _versions_of(names: set[str]) -> dict[str, list[TemplateVersion]]:
    """Every version of the templates `names`, newest first, by template name."""
    if not names:
        return {}
    versions = TemplateVersion.objects.filter(template__name__in=names).select_related("template").defer(*HEAVY_FIELDS)
    by_name: dict[str, list[TemplateVersion]] = {}
    for version in sorted(versions, key=lambda v: SemVer.parse(v.version), reverse=True):
        by_name.setdefault(version.template.name, []).append(version)
    return by_name


def _newest(
    name: str, versions: list[TemplateVersion], ranges: list[tuple[str, str]], chain: tuple[str, ...],
    visible_publishers: frozenset[int],
) -> TemplateVersion:
    readable = [v for v in versions if _may_see(v.template, visible_publishers)]
    if not readable:
        raise ResolutionRefused(chain, f"no template {name} that you may deploy")
    usable = [v for v in readable if not v.yanked]
    for version in usable:
        if all(version_in_range(version.version, version_range) for _, version_range in ranges):
            return version
    if len({r for _, r in ranges}) > 1:
        asked = "; ".join(f"{who} needs {r}" for who, r in ranges)
        raise ResolutionRefused(chain, f"no one version of {name} satisfies them all ({asked}); two versions would be needed")
    if not usable:
        raise ResolutionRefused(chain, f"every version of {name} is yanked")
    raise ResolutionRefused(chain, f"none published; newest is {usable[0].version}")


def _may_see(template: Template, visible_publishers: frozenset[int]) -> bool:
    return template.visibility == Template.Visibility.PUBLIC or template.publisher_id in visible_publishers


def _share(pick: _Pick, dependant: str, chain: tuple[str, ...], version_range: str) -> None:
    """A template reached again: fine when the version already chosen fits this range too."""
    if version_in_range(pick.version.version, version_range):
        return
    name = pick.version.template.name
    refusal = ResolutionRefused(
        chain, f"conflicts with {ARROW.join(pick.path)} (resolved to {pick.version.version}): two versions of {name} "
               "would be needed",
    )
    raise _Conflict(name, dependant, version_range, refusal)


def _deploy_order(root: str, edges: list[Edge]) -> list[str]:
    """Dependencies first, the root last (a depth-first walk); a cycle is refused with its loop."""
    requires: dict[str, list[str]] = {}
    for edge in edges:
        requires.setdefault(edge.dependant, []).append(edge.requirement)
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            loop = path[path.index(name):]
            raise ResolutionRefused((*path, name), f"a cycle: {ARROW.join((*loop, name))}")
        for requirement in requires.get(name, []):
            visit(requirement, (*path, name))
        done.add(name)
        order.append(name)

    visit(root, ())
    return order


def _part(name: str, version: TemplateVersion) -> Part:
    return Part(template=name, version=version.version, version_id=version.pk, digest=version.bundle_sha256)

