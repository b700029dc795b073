"""Shared pytest fixtures: paths of the repository, the fixtures and the
build folder whose binaries the tests run (GS_BUILD_DIR, default
build/test-native)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def fixtures():
    return ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def build_dir():
    return pathlib.Path(os.environ.get("GS_BUILD_DIR", ROOT / "build" / "test-native"))


def built(build_dir, *parts):
    """The program build_dir/parts...; the test fails (not skips) when it
    is not built."""
    p = build_dir.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"{p} not built (set GS_BUILD_DIR to the build folder)")
    return p


@pytest.fixture(scope="session")
def run_bin(build_dir):
    return built(build_dir, "worker", "glmserve-run")


def prompt_of(case):
    """The text of a fixture case's first message (its text parts joined)."""
    content = case["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p["type"] == "text")
