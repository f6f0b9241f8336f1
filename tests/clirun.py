"""Run the archiver's command line in-process, as a user would from a shell."""

from __future__ import annotations

import dataclasses

import pytest

from archiver.cli import main


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, monkeypatch, args: list[str], env: dict[str, str] | None = None) -> Result:
    for name in ("XPLENTY_ACCOUNT_ID", "XPLENTY_API_KEY", "XPLENTY_API_KEY_FILE", "XPLENTY_API_URL",
                 "ARCHIVER_DATABASE_URL", "ARCHIVER_DATABASE_URL_FILE", "ARCHIVER_LOG_LEVEL",
                 "ARCHIVER_SCORING_WORKER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    code = exit_info.value.code
    return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)
