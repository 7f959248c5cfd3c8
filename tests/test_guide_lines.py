"""Every command and environment line of the guide has a test (tests/guide/GUIDE.md is the guide's text).

A line added to the guide — in the committed copy, which must equal ../shared/GUIDE.md where that
exists — fails here until a test names it with @covers.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from guide.lines import COVERED, GUIDE, extract, guide_lines

HERE = Path(__file__).parent
SHARED_GUIDE = HERE.parent.parent / "shared" / "GUIDE.md"


def _load_guide_tests() -> None:
    for path in sorted(HERE.glob("test_guide_*.py")):
        if path.stem != Path(__file__).stem:
            importlib.import_module(path.stem)


def test_every_guide_line_has_a_test_and_every_test_names_a_guide_line() -> None:
    _load_guide_tests()
    texts = [g.text for g in guide_lines()]
    untested = [t for t in texts if t not in COVERED]
    assert not untested, f"guide lines without a test (add one and mark it @covers(...)): {untested}"
    stale = sorted(set(COVERED) - set(texts))
    assert not stale, f"tests name lines the guide does not have: {stale}"


def test_the_committed_copy_is_the_guide() -> None:
    if not SHARED_GUIDE.is_file():
        pytest.skip("no ../shared/GUIDE.md next to this checkout (CI): the committed copy is the spec")
    assert GUIDE.read_bytes() == SHARED_GUIDE.read_bytes(), "tests/guide/GUIDE.md differs from ../shared/GUIDE.md — copy it"


def test_lines_are_read_as_a_shell_would_run_them() -> None:
    text = "intro\n\n## 8GB显存\n```bash\n# a comment\nexport A=1\nmineru-sglang-server \\\n    --mem-fraction-static 0.4 \\\n" \
           "    --max-model-len 1024  # 更短\n```\n\n```python\nprint('not a shell line')\n```\n"
    first, second = extract(text)
    assert (first.text, first.export, first.env) == ("export A=1", ("A", "1"), {})
    assert second.text == "mineru-sglang-server --mem-fraction-static 0.4 --max-model-len 1024"
    assert second.env == {"A": "1"} and second.card_gib == 8 and second.block == 0
    assert len(guide_lines()) >= 30  # the guide as committed: 16 blocks, 35 lines


def test_the_planners_guide_profiles_are_the_guides_own_lines() -> None:
    from mineru_fit.planner.profiles import GUIDE_PROFILES

    found = []
    for g in guide_lines():
        if re.fullmatch(r"\d+GB\+?显存", g.heading):
            found.append(f"{g.card_gib}: {g.text.removeprefix('mineru-sglang-server ')}")
    assert found == [f"{p.vram_gib}: {p.flags}" for p in GUIDE_PROFILES]


def test_every_command_that_takes_vram_takes_gpus() -> None:
    import typer

    import mineru_fit.cli.commands  # noqa: F401
    from mineru_fit.cli.app import app
    from mineru_fit.cli.guide_cmd import guide_app

    def commands(group, prefix: str = ""):
        if hasattr(group, "commands"):  # a group (typer ships its own click)
            for name, sub in group.commands.items():
                yield from commands(sub, f"{prefix} {name}")
        else:
            yield prefix.strip() or group.name, group

    found = list(commands(typer.main.get_command(app), "mineru-fit"))
    found.append(("mineru-sglang-server", typer.main.get_command(guide_app)))
    with_vram = [(name, {o for p in cmd.params for o in p.opts}) for name, cmd in found
                 if any("--vram" in p.opts for p in cmd.params)]
    assert len(with_vram) >= 5  # plan, serve, api, ui, start api, start gradio, mineru-sglang-server
    assert [name for name, opts in with_vram if "--gpus" not in opts] == []
