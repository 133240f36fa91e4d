"""The deploy form: one field per manifest input, typed by the input's type."""

import uuid

from django import forms
from django.conf import settings

from templates_catalog.forms import PersonalTokenForm
from templates_catalog.manifest import Manifest
from templates_catalog.manifest.schema import Input, InputType, TryIt

from .specs import MAX_STRING_CHARS, MAX_TEXT_CHARS


class DeployForm(forms.Form):
    # Generated when the page is shown: submitting the same page twice makes one deployment.
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput, error_messages={
        "required": "this form has expired: reload the page and press Deploy again",
        "invalid": "this form has expired: reload the page and press Deploy again",
    })

    # Not a manifest input: its name has hyphens, which an input's name never has.
    IDLE_TIMEOUT = "idle-timeout-seconds"
    HUB_FIELDS = ("idempotency_key", IDLE_TIMEOUT)

    def __init__(self, manifest: Manifest, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields[self.IDLE_TIMEOUT] = forms.IntegerField(
            required=False, label="Sleep after (seconds idle)", initial=settings.DEPLOY_IDLE_TIMEOUT_SECONDS,
            help_text="With no request for this long it sleeps and costs nothing; the next request wakes it. 0: never sleep.",
        )
        self.unsupported: list[Input] = []
        for item in manifest.inputs:
            field = _field_for(item)
            if field is None:
                self.unsupported.append(item)
            else:
                self.fields[item.name] = field
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4())

    def input_fields(self):
        return [self[name] for name in self.fields if name not in self.HUB_FIELDS]

    def idle_timeout_field(self):
        return self[self.IDLE_TIMEOUT]

    def inputs(self) -> dict:
        """The values to deploy with; blank optional fields are left out so the
        manifest's defaults apply."""
        return _given({name: value for name, value in self.cleaned_data.items() if name not in self.HUB_FIELDS})

    def idle_timeout(self) -> int | None:
        """None when left blank: the hub's default applies."""
        return self.cleaned_data.get(self.IDLE_TIMEOUT)

    def add_service_errors(self, errors: list[tuple[str, str]]) -> None:
        """The deploy service's (field, message) pairs, shown beside the field they name."""
        for field, message in errors:
            name = self.IDLE_TIMEOUT if field == "idle_timeout_seconds" else field.removeprefix("inputs.")
            self.add_error(name if name in self.fields else None, message)


class TryForm(forms.Form):
    """The "Try it" form of a manifest's `serve.try`: its fields are built as the deploy
    form's are; the prefix keeps their names apart from the page's other forms."""

    prefix = "try"

    def __init__(self, spec: TryIt, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for item in spec.inputs:
            field = _field_for(item)
            if field is not None:  # the schema refuses `file` inputs in `serve.try`
                self.fields[item.name] = field

    def values(self) -> dict:
        """What to send; blank optional fields are left out, so the endpoint's defaults apply."""
        return _given(self.cleaned_data)


def _given(values: dict) -> dict:
    return {name: value for name, value in values.items() if value not in (None, "")}


def _field_for(item: Input) -> forms.Field | None:
    common = {"label": item.label, "help_text": item.help, "initial": item.default}
    required = item.required and item.default is None
    kind = item.type
    if kind is InputType.STRING:
        return forms.CharField(required=required, max_length=MAX_STRING_CHARS, strip=False, **common)
    if kind is InputType.TEXT:
        return forms.CharField(required=required, max_length=MAX_TEXT_CHARS, strip=False, widget=forms.Textarea, **common)
    if kind is InputType.INTEGER:
        return forms.IntegerField(required=required, **common)
    if kind is InputType.NUMBER:
        return forms.FloatField(required=required, **common)
    if kind is InputType.BOOLEAN:
        # An unticked box is a value (false), never a missing one.
        return forms.BooleanField(required=False, **common)
    if kind is InputType.CHOICE:
        blank = [] if required or item.default is not None else [("", "(default)")]
        return forms.ChoiceField(required=required, choices=blank + [(choice, choice) for choice in item.choices], **common)
    return None


class EndpointTokenForm(PersonalTokenForm):
    """A token for one client of a deployment's endpoint: a name and an optional expiry."""

    name = forms.CharField(max_length=64, help_text="Which client uses it, e.g. “staging app”.")
