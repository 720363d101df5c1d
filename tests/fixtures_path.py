"""Where the parity fixtures made with the official PyTorch code live."""

import os

_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures")


def fixtures_dir(*parts: str) -> str:
    """`$EDITMGT_FIXTURES/parts...` (default `<repo>/../shared/fixtures`); raises when absent."""
    root = os.path.abspath(os.environ.get("EDITMGT_FIXTURES", _DEFAULT))
    path = os.path.join(root, *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Parity fixture {path!r} not found; set EDITMGT_FIXTURES to the fixtures folder"
        )
    return path
