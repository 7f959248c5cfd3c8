"""The pure parts of `parse --ray`, without a cluster: the registry's restart and crash accounting,
the level an actor starts at after each death, and the per-actor summary lines."""

from __future__ import annotations

from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, make_report
from mineru_fit.scale.hardware import model_levels
from mineru_fit.scale.registry import Registry
from mineru_fit.scale.stats import actor_stats


def test_a_restarted_actor_learns_how_often_it_died_and_which_pages_it_held() -> None:
    registry = Registry()
    assert registry.register("a1", {"pid": 10}) == (0, {})
    registry.planned("a1", {"label": "node GPU 0", "summary": "level none"})
    registry.begin("a1", [(0, 3), (0, 4)])
    assert registry.register("a1", {"pid": 11}) == (1, {(0, 3): 1, (0, 4): 1})
    registry.begin("a1", [(0, 4)])  # the same page in flight at a second death: a poison page
    assert registry.register("a1", {"pid": 12}) == (2, {(0, 4): 2})
    registry.begin("a1", [(0, 5)])
    registry.end("a1", 1, 0.5)
    assert registry.register("a1", {"pid": 13}) == (3, {})  # a finished batch is nobody's loss
    state = registry.read(0)
    assert state["actors"]["a1"]["starts"] == 4 and state["actors"]["a1"]["pages"] == 1
    assert sum("restarted by Ray" in line for line in state["events"]) == 3
    assert registry.read(state["next"])["events"] == []


def test_each_death_starts_the_actor_one_level_lower_down_to_the_last() -> None:
    report = make_report(default_spec(), Hardware.from_vram(80), PlanRequest(engine="builtin"))
    models = [p.level for p in report.levels if p.level != "flash"]
    start = models.index(report.chosen_level)
    assert [p.level for p in model_levels(report)] == models[start:]
    assert [p.level for p in model_levels(report, 1)] == models[start + 1:]
    assert [p.level for p in model_levels(report, 99)] == models[-1:]
    tiny = make_report(default_spec(), Hardware.from_vram(0.5), PlanRequest(engine="builtin"))
    assert tiny.chosen_level == "flash" and model_levels(tiny) == ()


def test_pages_per_second_per_actor_and_the_flash_tasks_as_one_row() -> None:
    actors = {"a2": {"label": "n2 GPU 0", "summary": "level basic", "pages": 30, "busy_s": 10.0, "starts": 2},
              "a1": {"label": "n1 GPU 0", "summary": "level none", "pages": 10, "busy_s": 4.0, "starts": 1}}
    rows = actor_stats(actors, {"flash (CPU task)": 8}, wall_s=4.0)
    assert [(r.label, r.pages, r.restarts) for r in rows] == [
        ("n1 GPU 0", 10, 0), ("n2 GPU 0", 30, 1), ("flash (CPU task)", 8, 0)]
    assert rows[0].pages_per_s == 2.5 and rows[2].pages_per_s == 2.0
    assert rows[1].line() == "n2 GPU 0: 30 page(s), 3.00 pages/s, restarted 1× — level basic"
