"""requirements.txt (the readable pins), requirements.lock (every package, with hashes, generated
from it by pip-compile) and environment.yml's pip section must agree; the environment the tests
run in must be the lock's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._\-]*)==([A-Za-z0-9.+!_\-]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class LockEntry:
    version: str
    hashes: tuple[str, ...]
    top_level: bool  # "# via -r requirements.txt": pip-compile took it from requirements.txt


def parse_requirements(text: str) -> dict[str, str]:
    """requirements.txt (or a list of pins): canonical name -> version. Anything but `name==version`
    is an error: the readable list holds exact pins only."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        match = PIN.fullmatch(line)
        if match is None:
            raise ValueError(f"not an exact pin: {raw!r}")
        name = canonicalize_name(match[1])
        if name in pins:
            raise ValueError(f"pinned twice: {name}")
        pins[name] = match[2]
    return pins


def parse_lock(text: str) -> dict[str, LockEntry]:
    """requirements.lock as pip-compile writes it: `name==version \\` then `--hash=sha256:...`
    continuation lines, then `# via` comments naming where the requirement came from."""
    entries: dict[str, LockEntry] = {}
    blocks = re.split(r"\n(?=\S)", text)  # an entry starts at column 0; hashes and vias are indented
    for block in blocks:
        first = block.splitlines()[0] if block.strip() else ""
        if not first or first.startswith("#"):
            continue
        if first.startswith("-"):
            raise ValueError(f"unexpected option in the lock: {first!r}")
        match = PIN.match(first)
        if match is None:
            raise ValueError(f"not an exact pin in the lock: {first!r}")
        name = canonicalize_name(match[1])
        if name in entries:
            raise ValueError(f"locked twice: {name}")
        code = "\n".join(line.split("#")[0] for line in block.splitlines())
        via = "\n".join(line for line in block.splitlines() if line.strip().startswith("#"))
        entries[name] = LockEntry(
            version=match[2],
            hashes=tuple(HASH.findall(code)),
            top_level=bool(re.search(r"#\s+(via\s+)?-r requirements\.txt\b", via)),
        )
    return entries


def environment_pins(text: str) -> dict[str, str]:
    """environment.yml's pip section, as pins."""
    env = yaml.safe_load(text)
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    if len(sections) != 1:
        raise ValueError(f"environment.yml has {len(sections)} pip sections, not 1")
    return parse_requirements("\n".join(sections[0]))


def disagreements(requirements: str, lock: str, environment: str) -> list[str]:
    """Every way the three files disagree, in words (empty when they agree)."""
    pins = parse_requirements(requirements)
    locked = parse_lock(lock)
    env = environment_pins(environment)
    problems: list[str] = []
    if not re.search(r"^#\s+pip-compile .*--generate-hashes.* requirements\.txt$", lock, re.M):
        problems.append("the lock's header does not give the pip-compile --generate-hashes command "
                        "that made it from requirements.txt")
    for name, version in pins.items():
        if name not in locked:
            problems.append(f"{name}=={version} is in requirements.txt but not in the lock")
        elif locked[name].version != version:
            problems.append(f"{name}: requirements.txt pins {version}, the lock {locked[name].version}")
        elif not locked[name].top_level:
            problems.append(f"{name}: the lock does not list it as coming from requirements.txt")
    for name, entry in locked.items():
        if entry.top_level and name not in pins:
            problems.append(f"{name}: the lock has it from requirements.txt, which no longer pins it")
        if not entry.hashes:
            problems.append(f"{name}=={entry.version} has no hash in the lock")
    if env != pins:
        for name in sorted(set(env) | set(pins)):
            if env.get(name) != pins.get(name):
                problems.append(f"{name}: environment.yml has {env.get(name)}, "
                                f"requirements.txt {pins.get(name)}")
    return problems


def read(name: str) -> str:
    return (ROOT / name).read_text()


# --- the project's own files ----------------------------------------------------------------

def test_requirements_lock_and_environment_agree() -> None:
    problems = disagreements(read("requirements.txt"), read("requirements.lock"), read("environment.yml"))
    assert not problems, "\n".join(problems)


def test_lock_is_complete() -> None:
    locked = parse_lock(read("requirements.lock"))
    pins = parse_requirements(read("requirements.txt"))
    # the ~150 packages jupyter-book, torch and papermill pull in, not only the top-level pins
    assert len(locked) > 5 * len(pins), len(locked)
    assert all(len(entry.hashes) >= 1 for entry in locked.values())


def test_installed_environment_is_the_lock() -> None:
    """`make setup` installed the lock: every locked package at its locked version."""
    wrong = []
    for name, entry in parse_lock(read("requirements.lock")).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != entry.version:
            wrong.append(f"{name}: locked {entry.version}, installed {installed}")
    assert not wrong, "run `make setup` (the lock changed?):\n" + "\n".join(wrong)


# --- the check itself fails on planted disagreements ----------------------------------------

@pytest.fixture
def files() -> dict[str, str]:
    return {name: read(name) for name in ("requirements.txt", "requirements.lock", "environment.yml")}


def check(files: dict[str, str]) -> list[str]:
    return disagreements(files["requirements.txt"], files["requirements.lock"], files["environment.yml"])


def test_a_pin_bumped_in_requirements_only_is_caught(files: dict[str, str]) -> None:
    files["requirements.txt"] = files["requirements.txt"].replace("\nnumpy==", "\nnumpy==0.0.1+")
    files["environment.yml"] = files["environment.yml"].replace("- numpy==", "- numpy==0.0.1+")
    problems = check(files)
    assert any(p.startswith("numpy: requirements.txt pins 0.0.1+") for p in problems), problems


def test_a_pin_missing_from_the_lock_is_caught(files: dict[str, str]) -> None:
    files["requirements.txt"] += "left-pad==1.0.0\n"
    files["environment.yml"] = files["environment.yml"].replace(
        "      - pytest==", "      - left-pad==1.0.0\n      - pytest==")
    assert "left-pad==1.0.0 is in requirements.txt but not in the lock" in check(files)


def test_a_pin_dropped_from_requirements_is_caught(files: dict[str, str]) -> None:
    files["requirements.txt"] = re.sub(r"(?m)^seaborn==.*\n", "", files["requirements.txt"])
    files["environment.yml"] = re.sub(r"(?m)^\s+- seaborn==.*\n", "", files["environment.yml"])
    problems = check(files)
    assert "seaborn: the lock has it from requirements.txt, which no longer pins it" in problems, problems


def test_an_entry_without_hashes_is_caught(files: dict[str, str]) -> None:
    lock = files["requirements.lock"]
    start = lock.index("\ntqdm==") + 1
    end = lock.index("\n    # via", start)
    files["requirements.lock"] = lock[:start] + lock[start:end].split(" \\")[0] + lock[end:]
    assert parse_lock(files["requirements.lock"])["tqdm"].hashes == ()
    problems = check(files)
    assert any(p.startswith("tqdm==") and p.endswith("has no hash in the lock") for p in problems), problems


def test_environment_yml_out_of_step_is_caught(files: dict[str, str]) -> None:
    files["environment.yml"] = files["environment.yml"].replace("- pandas==", "- pandas==0.0.1+")
    problems = check(files)
    assert any(p.startswith("pandas: environment.yml has 0.0.1+") for p in problems), problems


def test_a_hand_edited_lock_without_its_command_is_caught(files: dict[str, str]) -> None:
    files["requirements.lock"] = re.sub(r"(?m)^#\s+pip-compile .*\n", "", files["requirements.lock"])
    assert any("pip-compile --generate-hashes" in p for p in check(files))


def test_loose_pins_are_refused() -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        parse_requirements("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin in the lock"):
        parse_lock("numpy>=2 \\\n    --hash=sha256:" + "0" * 64 + "\n")
