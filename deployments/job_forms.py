"""The run-a-job form (one field per manifest input, a file upload for a `file` input) and
the "Publish as a new version" form."""

import uuid

from django import forms

from templates_catalog.manifest import Manifest
from templates_catalog.manifest.schema import InputType
from templates_catalog.models import Publisher

from .forms import _field_for


class JobForm(forms.Form):
    # Generated when the page is shown: submitting the same page twice starts one job.
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput, error_messages={
        "required": "this form has expired: reload the page and press Run again",
        "invalid": "this form has expired: reload the page and press Run again",
    })

    def __init__(self, manifest: Manifest, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.file_inputs = [item.name for item in manifest.inputs if item.type is InputType.FILE]
        for item in manifest.inputs:
            if item.type is InputType.FILE:
                self.fields[item.name] = forms.FileField(label=item.label, help_text=item.help, required=item.required)
            else:
                self.fields[item.name] = _field_for(item)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4())

    def input_fields(self):
        return [self[name] for name in self.fields if name != "idempotency_key"]

    def values(self) -> dict:
        """The plain values; blank optional fields left out so the manifest's defaults apply."""
        return {name: value for name, value in self.cleaned_data.items()
                if name != "idempotency_key" and name not in self.file_inputs and value not in (None, "")}

    def uploads(self) -> dict:
        return {name: self.cleaned_data[name] for name in self.file_inputs if self.cleaned_data.get(name)}

    def add_service_errors(self, errors: list[tuple[str, str]]) -> None:
        for field, message in errors:
            name = field.removeprefix("inputs.")
            self.add_error(name if name in self.fields else None, message)


class PromoteForm(forms.Form):
    publisher = forms.ModelChoiceField(queryset=Publisher.objects.none(), empty_label=None,
                                       help_text="The new version is a private template of this publisher.")
    name = forms.SlugField(max_length=64, help_text="The template's name, e.g. support-ticket-classifier.")
    version = forms.CharField(max_length=64, initial="1.0.0", help_text="A semantic version, e.g. 1.0.0.")

    def __init__(self, publishers, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["publisher"].queryset = publishers

    def add_service_errors(self, errors: list[tuple[str, str]]) -> None:
        for field, message in errors:
            self.add_error(field if field in self.fields else None, message)
