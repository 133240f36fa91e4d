from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.validators import validate_email

from .models import Membership


class SignupForm(UserCreationForm):
    email = forms.EmailField(help_text="For password resets and invitations.")
    invitation = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ["username", "email"]


class PublisherForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Shown on the catalog's cards, e.g. “Acme AI”.")
    slug = forms.CharField(
        max_length=64, help_text="Its address: /publishers/<slug>/. Lowercase letters, digits and hyphens, e.g. acme-ai."
    )


class InviteForm(forms.Form):
    who = forms.CharField(
        max_length=254,
        label="Email address or username",
        help_text="A username adds that account now; an email address gets a one-time invitation link.",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)
    user: User | None = None

    def clean_who(self) -> str:
        who = self.cleaned_data["who"].strip()
        if "@" in who:
            validate_email(who)
            return who
        self.user = User.objects.filter(username=who, is_active=True).first()
        if self.user is None:
            raise forms.ValidationError(
                f"No account is named “{who}”. To invite someone without an account, enter their email address."
            )
        return who

    @property
    def is_email(self) -> bool:
        return "@" in self.cleaned_data["who"]


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)
