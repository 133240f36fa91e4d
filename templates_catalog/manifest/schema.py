"""The `hub.yaml` manifest, schema ``hub/v1``.

Plain pydantic, no Django: the builders and runners read manifests too. Every string
that may later reach a Dockerfile, a shell or a file path is held to a strict pattern
here, at publish time, so nothing downstream has to trust a publisher's text.
"""

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SCHEMA_ID = "hub/v1"

# Each pattern is anchored and, being matched by pydantic's Rust engine, `$` never
# accepts a trailing newline: no value can smuggle a second Dockerfile line.
PATTERN_HINTS: dict[str, str] = {}


def _pattern(regex: str, hint: str, *, max_length: int, **field: Any) -> Any:
    PATTERN_HINTS[regex] = hint
    return Annotated[str, Field(pattern=regex, description=hint, max_length=max_length, **field)]


TemplateName = _pattern(
    r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])$",
    "2-64 lowercase letters, digits and hyphens, starting and ending with a letter or digit, e.g. `minilm-embeddings`",
    max_length=64,
)
SemVer = _pattern(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$",
    "a semantic version MAJOR.MINOR.PATCH, e.g. `1.4.0` or `2.0.0-rc.1`",
    max_length=64,
)
VersionRange = _pattern(
    r"^(\*|(?:(?:==|!=|>=|<=|>|<|~=)\s*[0-9][0-9A-Za-z.*-]*)(?:\s*,\s*(?:==|!=|>=|<=|>|<|~=)\s*[0-9][0-9A-Za-z.*-]*)*)$",
    "a version range such as `>=1.0.0,<2.0.0`, `~=1.2`, `==1.4.0` or `*`",
    max_length=100,
)
Tag = _pattern(
    r"^[a-z0-9][a-z0-9-]{0,31}$", "a short lowercase tag of letters, digits and hyphens, e.g. `embeddings`", max_length=32
)
License = _pattern(
    r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$",
    "an SPDX license identifier such as `Apache-2.0` or `MIT`, or `proprietary`",
    max_length=64,
)
PythonPin = _pattern(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?==[0-9][A-Za-z0-9.+!_-]*$",
    "a pinned requirement `name==version`, e.g. `numpy==2.1.3` (ranges, URLs and options are not allowed)",
    max_length=200,
)
# Debian names may hold `.` and `+` (`libstdc++6`, `python3.11`), but apt reads a name
# that matches no package as a regex: `.` followed by `+` is refused, and every other
# pattern or selector character (`*?[]^$~!|()`, `:=/`) is outside the alphabet.
SystemPackage = _pattern(
    r"^[a-z0-9][a-z0-9+-]*(?:\.(?:[a-z0-9-][a-z0-9+-]*)?)*$",
    "a Debian package name, exactly as apt lists it, e.g. `libgomp1` or `libstdc++6` (apt patterns such as `*`, `?`, `[…]`, "
    "`.+` or `~` and version, release or architecture selectors `=`, `/`, `:` are not allowed)",
    min_length=2,
    max_length=63,
)
Handler = _pattern(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
    "`module:Class`, e.g. `app.handler:Embedder`",
    max_length=200,
)
UrlPath = _pattern(r"^/[A-Za-z0-9/_.-]{0,99}$", "an absolute URL path such as `/health`", max_length=100)
CommandArg = _pattern(
    r"^[A-Za-z0-9_./:=@%+,-]{1,200}$",
    "one command-line word of letters, digits and `_./:=@%+,-` (the command is a list of words, run without a shell)",
    max_length=200,
)
RelativePath = _pattern(
    r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
    "a relative path inside the job's output folder, e.g. `model/checkpoint.pt` (no leading `/`, no `..`)",
    max_length=200,
)
# Where a persistent volume may be mounted: only folders no image or harness uses, so a
# volume can never hide code (/opt/hub, /usr, /bin), configuration (/etc) or the kernel's
# views (/proc, /sys, /dev). The allow-list is the FHS's places for a service's own data:
# /data, /srv, /mnt and /var/lib/<name>, each possibly with subfolders; no segment starts with a dot.
StoragePath = _pattern(
    r"^/(?:data|srv|mnt|var/lib/[A-Za-z0-9_-][A-Za-z0-9_.-]*)(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
    "an absolute folder under `/data`, `/srv`, `/mnt` or `/var/lib/<name>`, e.g. `/data` or `/var/lib/vectors` "
    "(no trailing `/`, no `..`, nothing that holds the image's code or system files)",
    max_length=200,
)
Identifier = _pattern(
    r"^[a-z][a-z0-9_]{0,31}$", "a lowercase identifier of letters, digits and `_`, e.g. `ticker`", max_length=32
)
# One line, as a person reads it: no C0 or C1 control (U+0085 is a line break to
# some readers), no DEL, no Unicode line or paragraph separator, and no bidi
# embedding, override, isolate or mark, which make text display other than it reads.
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$"
OneLine = Annotated[str, Field(pattern=ONE_LINE_PATTERN)]
ONE_LINE_HINT = "without control characters, line separators or bidirectional overrides"
PATTERN_HINTS[ONE_LINE_PATTERN] = f"one line of text {ONE_LINE_HINT}"
_ONE_LINE = re.compile(ONE_LINE_PATTERN)


def is_one_line(text: str) -> bool:
    """The one-line rule of the manifest's titles, for text that arrives elsewhere (yank reasons)."""
    return _ONE_LINE.fullmatch(text) is not None


class Tier(StrEnum):
    ATOMIC = "atomic"
    WORKFLOW = "workflow"
    APP = "app"


TIER_RANK = {Tier.ATOMIC: 0, Tier.WORKFLOW: 1, Tier.APP: 2}


class Kind(StrEnum):
    SERVICE = "service"
    JOB = "job"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


class Runtime(_Strict):
    python: Literal["3.11", "3.12"] = "3.11"
    system_packages: list[SystemPackage] = Field(default_factory=list, max_length=50)
    packages: list[PythonPin] = Field(default_factory=list, max_length=200)
    build_command: list[CommandArg] = Field(
        default_factory=list,
        max_length=64,
        description="A command run once inside the image build, after the packages are installed, in the template's "
        "folder, as the unprivileged user and with no network (like Cog's `build.run`): e.g. training a checkpoint so "
        "its weights are part of the image and its digest. A list of words, run without a shell.",
    )

    @model_validator(mode="after")
    def _no_duplicate_packages(self) -> "Runtime":
        names = [pin.split("==")[0].split("[")[0].lower().replace("_", "-") for pin in self.packages]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"each package may be pinned once; {', '.join(duplicates)} appears more than once")
        return self


class TryShow(StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"
    TEXT = "text"
    IMAGE = "image"


# A path under the deployment's endpoint, never a place of its own: no scheme, host, `//`,
# query string, percent-escape, `.` or `..` segment can be written.
TryPath = _pattern(
    r"^/(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*)?$",
    "a path under the deployment's endpoint that starts with `/`, e.g. `/v1/embeddings` "
    "(no scheme or host, no `..`, no query string)",
    max_length=200,
)
AnswerField = _pattern(
    r"^[A-Za-z_][A-Za-z0-9_-]{0,63}(?:\.(?:[A-Za-z_][A-Za-z0-9_-]{0,63}|[0-9]{1,4}))*$",
    "a dotted path into the JSON answer, keys and list positions, e.g. `markdown` or `choices.0.text`",
    max_length=200,
)


class TryAnswer(_Strict):
    show: TryShow = Field(
        TryShow.JSON,
        description="How the answer is shown: `markdown` (sanitised like a README), `json` (pretty-printed), `text`, "
        "or `image` (a `data:image/...;base64,` URL, or an answer whose Content-Type is an image).",
    )
    field: AnswerField | None = Field(None, description="The part of the JSON answer to show; unset: all of it.")


class TryIt(_Strict):
    """The form the deployment's page shows: its fields are sent to `path`, as a JSON object
    keyed by the input names (POST) or as the query string (GET), and the answer is shown."""

    path: TryPath
    method: Literal["GET", "POST"] = "POST"
    inputs: list["Input"] = Field(default_factory=list, max_length=20)
    answer: TryAnswer = Field(default_factory=TryAnswer)

    @model_validator(mode="after")
    def _sendable(self) -> "TryIt":
        files = [item.name for item in self.inputs if item.type is InputType.FILE]
        if files:
            raise ValueError(f"`inputs` {', '.join(files)} is a `file` input, which the Try it form cannot send: "
                             "make it `text` or `string`, or remove it")
        _require_unique("inputs", [item.name for item in self.inputs])
        return self


class Batching(_Strict):
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: int = Field(0, ge=0, le=1000)


class Serve(_Strict):
    handler: Handler
    port: int = Field(8080, ge=1024, le=65535)
    health_path: UrlPath = "/health"
    ready_path: UrlPath = "/ready"
    batching: Batching = Field(default_factory=Batching)
    max_body_bytes: int | None = Field(
        None,
        ge=1024,
        le=1024**3,
        description="The largest request body the harness accepts, in bytes (1 KiB to 1 GiB); larger ones get 413. "
        "Unset: the harness's default, 1 MiB.",
    )
    try_: TryIt | None = Field(
        None,
        alias="try",
        description="A form on the deployment's page that calls the endpoint and shows the answer (optional).",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Storage(_Strict):
    """A persistent volume mounted at `path` (its path is also in $HUB_STORAGE_DIR): kept
    across stops, restarts and redeploys of the same deployment, removed only when the
    deployment is deleted."""

    path: StoragePath
    size_gb: Decimal = Field(gt=0, le=1024, decimal_places=1, description="the size the volume is asked for, in GB")


class JobOutput(_Strict):
    name: Identifier
    path: RelativePath


class Job(_Strict):
    command: list[CommandArg] = Field(min_length=1, max_length=64)
    outputs: list[JobOutput] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _unique_outputs(self) -> "Job":
        _require_unique("outputs", [output.name for output in self.outputs])
        return self


class Resources(_Strict):
    gpus: int = Field(0, ge=0, le=8)
    gpu_memory_gb: Decimal = Field(Decimal(0), ge=0, le=1024, decimal_places=1)
    cpu: Decimal = Field(Decimal(1), gt=0, le=128, decimal_places=2)
    memory_gb: Decimal = Field(Decimal(1), gt=0, le=2048, decimal_places=1)

    @model_validator(mode="after")
    def _gpu_memory_needs_gpu(self) -> "Resources":
        if self.gpu_memory_gb and not self.gpus:
            raise ValueError("gpu_memory_gb is set but gpus is 0: set gpus to 1 or more, or remove gpu_memory_gb")
        return self


class InputType(StrEnum):
    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    FILE = "file"


_DEFAULT_TYPES: dict[InputType, tuple[type, ...]] = {
    InputType.STRING: (str,),
    InputType.TEXT: (str,),
    InputType.INTEGER: (int,),
    InputType.NUMBER: (int, float),
    InputType.BOOLEAN: (bool,),
    InputType.CHOICE: (str,),
}


MAX_DEFAULT_CHARS = 1000


def _short_default(value: Any) -> Any:
    # Checked before the union, so a long text gets one error instead of one per type.
    if isinstance(value, str) and len(value) > MAX_DEFAULT_CHARS:
        raise ValueError(f"a text `default` may have at most {MAX_DEFAULT_CHARS} characters, not {len(value)}")
    return value


class Input(_Strict):
    name: Identifier
    label: Annotated[OneLine, Field(min_length=1, max_length=80)]
    type: InputType = InputType.STRING
    required: bool = False
    default: Annotated[
        Annotated[str, Field(max_length=MAX_DEFAULT_CHARS)] | int | float | bool | None, BeforeValidator(_short_default)
    ] = None
    choices: list[Annotated[OneLine, Field(min_length=1, max_length=80)]] = Field(default_factory=list, max_length=50)
    help: Annotated[OneLine, Field(max_length=300)] = ""

    @model_validator(mode="after")
    def _consistent(self) -> "Input":
        if self.type is InputType.CHOICE and not self.choices:
            raise ValueError("a `choice` input needs a list of `choices`")
        if self.type is not InputType.CHOICE and self.choices:
            raise ValueError(f"`choices` only applies to type `choice`, not `{self.type}`: remove it or change the type")
        if self.default is None:
            return self
        if self.type is InputType.FILE:
            raise ValueError("a `file` input cannot have a default: remove `default`")
        allowed = _DEFAULT_TYPES[self.type]
        if isinstance(self.default, bool) and bool not in allowed or not isinstance(self.default, allowed):
            raise ValueError(f"`default` must be a {self.type} value, not {self.default!r}")
        if self.type is InputType.CHOICE and self.default not in self.choices:
            raise ValueError(f"`default` {self.default!r} is not one of the choices {self.choices}")
        return self


class Requirement(_Strict):
    template: TemplateName
    version: VersionRange = "*"
    alias: Identifier

    @property
    def env_var(self) -> str:
        return f"{self.alias.upper()}_URL"


class Manifest(_Strict):
    """What a publisher writes in `hub.yaml`."""

    schema_: Literal["hub/v1"] = Field(SCHEMA_ID, alias="schema")
    name: TemplateName
    version: SemVer
    tier: Tier
    kind: Kind
    title: Annotated[OneLine, Field(min_length=3, max_length=80)]
    summary: Annotated[OneLine, Field(min_length=10, max_length=300)]
    tags: list[Tag] = Field(default_factory=list, max_length=12)
    license: License
    runtime: Runtime = Field(default_factory=Runtime)
    serve: Serve | None = None
    job: Job | None = None
    storage: Storage | None = None
    resources: Resources = Field(default_factory=Resources)
    inputs: list[Input] = Field(default_factory=list, max_length=30)
    requires: list[Requirement] = Field(default_factory=list, max_length=20)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.kind is Kind.SERVICE and self.serve is None:
            raise ValueError("a `service` template needs a `serve` section naming its handler")
        if self.kind is Kind.SERVICE and self.job is not None:
            raise ValueError("a `service` template cannot have a `job` section: set `kind: job` or remove `job`")
        if self.kind is Kind.JOB and self.job is None:
            raise ValueError("a `job` template needs a `job` section with its `command`")
        if self.kind is Kind.JOB and self.storage is not None:
            raise ValueError("`storage` is for services; a job keeps what it makes as `job.outputs`: remove `storage`")
        if self.tier is Tier.ATOMIC and self.requires:
            raise ValueError("an `atomic` template cannot require other templates: make it a `workflow` or an `app`")
        _require_unique("tags", self.tags)
        _require_unique("inputs", [item.name for item in self.inputs])
        _require_unique("requires", [item.alias for item in self.requires], what="aliases")
        _require_unique("requires", [item.template for item in self.requires], what="templates")
        if any(item.template == self.name for item in self.requires):
            raise ValueError("a template cannot require itself: remove it from `requires`")
        return self

    @property
    def needs_gpu(self) -> bool:
        return self.resources.gpus > 0


def _require_unique(field: str, values: list[str], what: str = "names") -> None:
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"`{field}` repeats {what}: {', '.join(duplicates)}; each must appear once")


TryIt.model_rebuild()
Serve.model_rebuild()
Manifest.model_rebuild()
