from datetime import timedelta

from django import forms
from django.contrib.auth.models import User
from django.utils import timezone

from .access import publishers_of
from .manifest.schema import ONE_LINE_HINT, PATTERN_HINTS, is_one_line
from .models import ApiToken, Publisher

NAME_PATTERN = next(pattern for pattern, hint in PATTERN_HINTS.items() if "minilm-embeddings" in hint)


class ApiTokenForm(forms.Form):
    publisher = forms.ModelChoiceField(queryset=Publisher.objects.none(), empty_label=None)
    name = forms.CharField(max_length=64, help_text="What the token is for, e.g. “CI of the embeddings repo”.")
    permission = forms.ChoiceField(
        choices=[(ApiToken.Permission.READ, "Read only"), (ApiToken.Permission.PUBLISH, "Read and publish")],
        initial=ApiToken.Permission.READ,
    )
    template_names = forms.CharField(
        required=False,
        label="Only these templates",
        help_text="Comma-separated template names. Empty: every template of the publisher.",
        max_length=1000,
    )
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires after (days)", help_text="Empty: never."
    )

    def __init__(self, *args, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["publisher"].queryset = publishers_of(user)

    def clean_template_names(self) -> list[str]:
        import re

        names = [name.strip() for name in self.cleaned_data["template_names"].split(",") if name.strip()]
        bad = [name for name in names if not re.fullmatch(NAME_PATTERN.strip("^$"), name)]
        if bad:
            raise forms.ValidationError(f"Not template names: {', '.join(bad)}. Use lowercase letters, digits and hyphens.")
        return names

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


class PersonalTokenForm(forms.Form):
    """A personal token with the deploy permission: it acts for its creator alone."""

    name = forms.CharField(max_length=64, help_text="What the token is for, e.g. “deploy script”.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires after (days)", help_text="Empty: never."
    )

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


class YankForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        help_text="One line that people deploying it will read, e.g. “wrong tokenizer: use 1.2.1”.",
    )
    confirm = forms.BooleanField(
        label="I understand: new deploys can no longer use this version, and yanking cannot be undone here.",
        error_messages={"required": "Tick the box to confirm the yank."},
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"]
        if not is_one_line(reason):
            raise forms.ValidationError(f"Write the reason as one line, {ONE_LINE_HINT}.")
        return reason
