"""The README's and the docs pages' examples and the example scripts run as a user would run
them; every link between the pages resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: The documentation pages: the README (the front page), docs/ and the benchmarks' README.
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
]


def _python_block(page: str, section: str) -> str:
    """The first Python block under the heading ``## {section}`` of ``page``."""
    text = (ROOT / page).read_text()
    after = text.split(f"\n## {section}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def _readme_python_block(section: str) -> str:
    return _python_block("README.md", section)


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "keep the README a front page: move detail to docs/"
    for page in PAGES[1:]:
        assert f"]({page.relative_to(ROOT)})" in readme, f"README does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves_and_every_python_block_compiles(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name} links {target}, which does not exist"
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        compile(block, str(page), "exec")


def test_readme_usage_example_runs():
    namespace: dict = {}
    exec(compile(_readme_python_block("Usage"), "README.md", "exec"), namespace)
    info = namespace["info"]
    assert namespace["done"]
    assert info["score"] == namespace["reward_fn"]([""], [info["response"]])[0]


@pytest.mark.long
def test_quickstart_example_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- episode") == 2
    assert "sum KL" in result.stdout


def test_readme_states_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_vector_env_example_runs():
    namespace: dict = {}
    exec(compile(_readme_python_block("Usage"), "README.md", "exec"), namespace)
    exec(
        compile(
            _python_block("docs/environment.md", "Batched: the vector environment"),
            "docs/environment.md",
            "exec",
        ),
        namespace,
    )
    # Each of the 4 sub-envs ends its first response by step 8 (EOS or max_new_tokens=8).
    finished = namespace["finished"]
    assert len(finished) >= 4
    responses = [response for response, _ in finished]
    expected = namespace["reward_fn"]([""] * len(responses), responses)
    assert [score for _, score in finished] == pytest.approx(expected)


@pytest.mark.long
def test_readme_agents_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves to runs/ppo
    namespace: dict = {}
    exec(compile(_readme_python_block("Usage"), "README.md", "exec"), namespace)
    block = _python_block("docs/agents.md", "Agents: PPO and RLOO")
    exec(compile(block, "docs/agents.md", "exec"), namespace)
    assert namespace["trained"].score > namespace["baseline"].score
    assert (tmp_path / "runs" / "ppo" / "latest").is_file()


@pytest.mark.long
def test_sb3_example_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sb3_ppo.py"), "--timesteps", "2048",
         "--num-envs", "16"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "after SB3 PPO:" in result.stdout and "KL to the reference" in result.stdout


def test_readme_sb3_example_runs():
    namespace: dict = {}
    exec(compile(_readme_python_block("Usage"), "README.md", "exec"), namespace)
    block = _python_block("docs/agents.md", "stable-baselines3").replace("16_000", "256")  # short
    exec(compile(block, "docs/agents.md", "exec"), namespace)
    assert namespace["model"].num_timesteps >= 256
    assert namespace["model"].policy.model is namespace["vector_env"].policy


def test_the_docs_arguments_table_is_the_one_generated_from_the_env_config():
    from rlhf_env.config import VectorEnvConfig, options_table

    page = (ROOT / "docs" / "environment.md").read_text()
    table = page.split("<!-- env-options:start -->\n")[1].split("\n<!-- env-options:end -->")[0]
    assert table == options_table(VectorEnvConfig), (
        "docs/environment.md's arguments table is out of date; paste the output of: "
        'python -c "from '
        "rlhf_env.config import VectorEnvConfig, options_table; "
        'print(options_table(VectorEnvConfig))"'
    )
