import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from templates_catalog.models import Membership, Publisher


def test_it_creates_a_publisher_owned_by_the_user(user_factory, capsys):
    user = user_factory("scripted")

    call_command("createpublisher", "scripted-ai", "--owner", "scripted", "--name", "Scripted AI")

    publisher = Publisher.objects.get(slug="scripted-ai")
    assert publisher.name == "Scripted AI"
    assert Membership.objects.get(publisher=publisher, user=user).role == "owner"
    assert "Created publisher scripted-ai" in capsys.readouterr().out


def test_the_name_defaults_to_the_slug(user_factory):
    user_factory("scripted")
    call_command("createpublisher", "plain", "--owner", "scripted")
    assert Publisher.objects.get(slug="plain").name == "plain"


@pytest.mark.django_db
def test_an_unknown_owner_is_a_clear_error():
    with pytest.raises(CommandError, match="No user is named “ghost”"):
        call_command("createpublisher", "lonely", "--owner", "ghost")
    assert not Publisher.objects.exists()


def test_a_taken_or_bad_slug_is_a_clear_error(publisher, user_factory):
    user_factory("scripted")
    with pytest.raises(CommandError, match="The slug “acme” is taken"):
        call_command("createpublisher", "acme", "--owner", "scripted")
    with pytest.raises(CommandError, match="not a valid slug"):
        call_command("createpublisher", "Bad_Slug", "--owner", "scripted")
    assert Publisher.objects.count() == 1


def test_it_exits_non_zero_with_the_reason_on_stderr(publisher, capsys):
    # The way a shell script runs it: through the command line, not call_command.
    with pytest.raises(SystemExit) as exit_:
        execute_from_command_line(["manage.py", "createpublisher", "acme", "--owner", "nobody"])
    assert exit_.value.code == 1
    assert "No user is named “nobody”" in capsys.readouterr().err
