"""Semantic versions of templates, and the ranges in `requires`."""

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True, order=True)
class SemVer:
    major: int
    minor: int
    patch: int
    # A release sorts after its pre-releases: ("1", "") > ("0", "rc.1").
    release_marker: str
    prerelease: str

    @classmethod
    def parse(cls, text: str) -> "SemVer":
        core, _, prerelease = text.partition("-")
        major, minor, patch = (int(part) for part in core.split("."))
        return cls(major, minor, patch, "0" if prerelease else "1", prerelease)


def version_in_range(version: str, version_range: str) -> bool:
    if version_range.strip() == "*":
        return "-" not in version
    try:
        specifiers = SpecifierSet(version_range)
        # Explicit: packaging 26 lets a pre-release into a range that names none when nothing
        # else matches; a template's range takes pre-releases only when it names one.
        return specifiers.contains(Version(version), prereleases=bool(specifiers.prereleases))
    except (InvalidSpecifier, InvalidVersion):
        return False
