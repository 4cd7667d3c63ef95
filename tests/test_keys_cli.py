"""`tradeguard keys` end to end on a temporary SQLite store: create, list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tradeguard.adapters.store import Store
from tradeguard.cli import keys, main


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if keys not in main.COMMANDS:
        monkeypatch.setattr(main, "COMMANDS", (*main.COMMANDS, keys))
    monkeypatch.delenv(keys.STORE_URL_ENV, raising=False)
    return f"sqlite:///{tmp_path / 'var' / 'tradeguard.db'}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "create", "--account", "fleet", "--scope", "bot", "--description", "ft 1", "--db", db
    )
    assert code == 0
    token = out.strip()
    assert out.count("\n") == 1 and token.startswith("tg_")
    assert "not be shown again" in err and token not in err
    with Store.open(db) as store:
        record = store.verify_key(token, datetime.now(UTC))
    assert record is not None and (record.account, record.scope) == ("fleet", "bot")

    code, out, _ = run(capsys, "list", "--db", db)
    header, row = out.splitlines()
    assert header.split()[:3] == ["key_id", "account", "scope"] and "last used" in header
    assert row.split()[:3] == [record.key_id, "fleet", "bot"] and row.endswith("ft 1")
    assert token.split("_", 2)[2] not in out

    code, out, _ = run(capsys, "revoke", record.key_id, "--db", db)
    assert code == 0 and record.key_id in out
    with Store.open(db) as store:
        assert store.verify_key(token, datetime.now(UTC)) is None
    _, out, _ = run(capsys, "list", "--db", db)
    assert out.splitlines()[1].split()[4] != "-"  # revoked column filled


def test_unknown_key_id_exits_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "revoke", "nosuchkey123", "--db", db)
    assert code == 2 and out == ""
    assert "no key with id 'nosuchkey123'" in err and err.count("\n") == 1


def test_store_url_from_environment(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keys.STORE_URL_ENV, db)
    code, _, _ = run(capsys, "create", "--account", "ops", "--scope", "admin")
    assert code == 0
    with Store.open(db) as store:
        assert [k.account for k in store.list_keys()] == ["ops"]


def test_invalid_scope_is_refused(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "create", "--account", "x", "--scope", "root", "--db", db)
    assert exit_info.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err
