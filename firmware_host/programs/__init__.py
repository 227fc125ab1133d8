"""The example programs shipped with the package (one per target mechanism), found by name from
anywhere: `estim run --program dense_disperse_2_100hz` needs no source folder."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped() -> dict[str, Path]:
    """Name (the file's stem) -> path of every shipped program."""
    folder = Path(str(files(__name__)))
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def find(text: str | Path) -> Path:
    """A program file: `text` itself when it is a file, else the shipped program of that name
    (with or without .toml); ProgramError naming the shipped ones when neither."""
    path = Path(text)
    if path.is_file():
        return path
    found = shipped().get(path.name.removesuffix(".toml")) if path.parent == Path(".") or \
        path.parent.name == "programs" else None
    if found is not None:
        return found
    from ..waveforms.program_errors import Problem, ProgramError

    raise ProgramError([Problem(str(text), None, "(file)", str(text), "no such file here, and no shipped program "
                                "of that name (shipped: " + ", ".join(shipped()) + ")")])
