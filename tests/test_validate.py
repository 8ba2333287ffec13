"""Text checks shared by every name: a token can never be stored as (part of) a name, nor echoed in an error."""

import pytest

from kbai import errors
from kbai.errors import KbaiError
from kbai.tokenformat import mint
from kbai.validate import clean_name


def test_a_name_holding_a_token_is_refused_without_echoing_it() -> None:
    token = mint()
    with pytest.raises(KbaiError) as info:
        clean_name(f"my {token}")
    assert info.value.code == "validation_error"
    leaked = token[8:] in info.value.message
    assert not leaked


def test_error_messages_redact_tokens_they_quote() -> None:
    token = mint()
    err = KbaiError(errors.UNKNOWN_SCOPE, scope=token)
    leaked = token[8:] in err.message or token[8:] in str(err)
    assert not leaked
    assert token[:12] in err.message


@pytest.mark.parametrize("name", ["Zapier production", "n8n nightly sync", "Local dev", "Ünïcode ✓ name"])
def test_ordinary_names_pass(name: str) -> None:
    assert clean_name(f"  {name}  ") == name
