"""Every advisor rule: a recorded moment where it fires (with its numbers) and one where it must not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mineru_fit.models import default_spec
from mineru_fit.monitor import RULES, AdvisorContext, Snapshot, advise
from mineru_fit.planner import Hardware, PlanRequest, make_report
from mineru_fit.runrecords import RunRecord
from mineru_fit.units import GIB
from fixtures.monitor import FakeClock, metrics_text, record, sampler

METRICS_URL = "http://127.0.0.1:30000/metrics"
SGLANG_ARGV = ["python", "-m", "sglang.launch_server", "--model-path", "opendatalab/MinerU2.5-2509-1.2B",
               "--port", "30000", "--mem-fraction-static", "0.3", "--max-total-tokens", "400000"]


def moment(nvml: str, metrics: str | None = None, rec: RunRecord | None = None, **kw) -> Snapshot:
    routes = {METRICS_URL: metrics_text(metrics)} if metrics else {}
    with sampler(nvml, routes=routes, records=[rec] if rec else [], **kw) as s:
        return s.sample()


def rules_fired(snapshot: Snapshot, history=(), ctx=None) -> dict[str, list]:
    out: dict[str, list] = {}
    for advice in advise(snapshot, history, ctx):
        out.setdefault(advice.rule, []).append(advice)
    return out


def over(nvml: str, seconds: list[float], metrics: str | None = None, rec: RunRecord | None = None):
    """Snapshots of one machine at the given offsets; returns (last, earlier ones)."""
    clock = FakeClock()
    routes = {METRICS_URL: metrics_text(metrics)} if metrics else {}
    with sampler(nvml, routes=routes, records=[rec] if rec else [], clock=clock) as s:
        snaps = []
        for offset in seconds:
            clock.now_s = FakeClock().now_s + offset
            snaps.append(s.sample())
        return snaps[-1], s.history_before(snaps[-1])


def test_there_are_eight_rules() -> None:
    assert list(RULES) == ["kv-headroom", "co-tenant", "near-limit", "gpu-hot", "cuda-launch-blocking",
                           "queue-with-room", "oom-events", "engine-unreachable"]


# 1. KV cache high with memory free
def test_kv_high_with_free_memory_raises_the_share_with_numbers() -> None:
    snap = moment("rtx4090_shared_sglang.json", "sglang_kv_high.prom", record("sglang", "basic", 5120, argv=SGLANG_ARGV))
    [advice] = rules_fired(snap)["kv-headroom"]
    # 6.0 GiB free less a 1 GiB reserve = 5 GiB; 5 GiB / 23.99 GiB = +0.208 -> 0.50; 5 GiB / 12 KiB = 436,906 tokens.
    assert advice.message.startswith("sglang basic (http://127.0.0.1:30000/metrics): KV cache 94% used, 6.0 GiB free on GPU 0")
    assert advice.action == ("raise --mem-fraction-static 0.3 -> 0.5 (about +436,906 KV tokens) "
                             "and --max-total-tokens 400000 -> 836906")
    assert "--mem-fraction-static 0.5" in advice.command and "--max-total-tokens 836906" in advice.command


def test_kv_high_on_vllm_raises_utilization_and_the_pinned_kv_bytes() -> None:
    argv = ["vllm", "serve", "m", "--gpu-memory-utilization", "0.5", "--kv-cache-memory-bytes", str(2 * GIB)]
    snap = moment("rtx4090_shared_sglang.json", "vllm_old_names.prom", record("vllm", "basic", 5120, argv=argv))
    [advice] = rules_fired(snap)["kv-headroom"]
    assert advice.action.startswith("raise --gpu-memory-utilization 0.5 -> 0.7")
    assert f"--kv-cache-memory-bytes {2 * GIB} -> {7 * GIB}" in advice.action


def test_kv_high_without_free_memory_or_kv_low_gives_no_kv_advice() -> None:
    full = moment("l4_nearly_full.json", "sglang_kv_high.prom", record("sglang", "basic", 4242, argv=SGLANG_ARGV))
    assert "kv-headroom" not in rules_fired(full)
    idle = moment("rtx4090_shared_sglang.json", "sglang_old_idle.prom", record("sglang", "basic", 5120, argv=SGLANG_ARGV))
    assert "kv-headroom" not in rules_fired(idle)


# 2. Another process holds memory
def test_co_tenant_gives_the_budget_now_and_autos_level_from_the_planner() -> None:
    snap = moment("h100_80gb_1gpu.json")
    [advice] = rules_fired(snap)["co-tenant"]
    gpu = snap.gpus[0]
    expected = make_report(default_spec(), Hardware.from_gpu(
        name=gpu.name, total_bytes=gpu.memory.total_bytes, free_bytes=gpu.memory.free_bytes, gpu_count=1,
        compute_capability=gpu.compute_capability), PlanRequest()).plan
    assert advice.message == "GPU 0: python3 (pid 48213) holds 5.1 GiB — budget now 74.0 GiB of 79.6 GiB"
    assert advice.action.startswith(f"auto picks {expected.level} for builtin on that budget")
    assert advice.command.endswith(" ".join(expected.argv)) and advice.severity == "info"


def test_co_tenant_warns_when_the_level_you_run_no_longer_fits() -> None:
    snap = moment("four_gpu_l4.json")
    none_plan = make_report(default_spec(), Hardware.from_vram(22), PlanRequest(level="none")).plan
    by_gpu = {a.gpu_index: a for a in rules_fired(snap, ctx=AdvisorContext(plan=none_plan))["co-tenant"]}
    assert set(by_gpu) == {1, 3}
    assert by_gpu[1].severity == "warn" and "you run none" in by_gpu[1].action
    assert "auto picks basic" in by_gpu[1].action and "budget now 4.6 GiB" in by_gpu[1].message
    assert by_gpu[1].command.startswith("CUDA_VISIBLE_DEVICES=GPU-5c8d1f2a")  # pinned to that GPU


def test_co_tenant_counts_our_engine_back_into_the_budget_and_sees_hidden_users() -> None:
    ours = moment("rtx4090_shared_sglang.json", "sglang_old_idle.prom", record("sglang", "basic", 5120, argv=SGLANG_ARGV))
    [advice] = rules_fired(ours)["co-tenant"]
    assert "python (pid 6001) holds 10.2 GiB" in advice.message and "budget now 13.5 GiB" in advice.message
    assert "for sglang" in advice.action and "sglang.launch_server" in advice.command
    hidden = moment("container_no_processes.json")
    assert "processes NVML cannot list" in rules_fired(hidden)["co-tenant"][0].message


@pytest.mark.parametrize("nvml", ["rtx3060_12gb.json", "rtx4060ti_16gb.json", "a100_40gb_mig.json"])
def test_no_co_tenant_for_a_desktop_compositor_an_idle_card_or_a_whole_mig_card(nvml: str) -> None:
    assert "co-tenant" not in rules_fired(moment(nvml))


# 3. Memory at the limit for a minute
def test_nearly_full_for_a_minute_steps_our_engine_down() -> None:
    snap, history = over("l4_nearly_full.json", [0, 30, 61], rec=record("builtin", "basic", 4242))
    [advice] = rules_fired(snap, history)["near-limit"]
    assert advice.severity == "critical"
    assert advice.message == "GPU 0: only 200.0 MiB of 22.5 GiB free (0.9%) for 61 s"
    assert advice.action.startswith("one large page from an OOM: step down basic -> aggressive (predicted peak")
    assert "--level aggressive" in advice.command


def test_nearly_full_for_less_than_a_minute_or_roomy_for_longer_is_no_advice() -> None:
    snap, history = over("l4_nearly_full.json", [0, 30])
    assert "near-limit" not in rules_fired(snap, history)
    snap, history = over("h100_80gb_1gpu.json", [0, 61, 120])
    assert "near-limit" not in rules_fired(snap, history)


def test_builtin_reserved_at_its_cap_for_a_minute_is_near_limit() -> None:
    rec = record("builtin", "basic", 48213)
    snap, history = over("h100_80gb_1gpu.json", [0, 40, 65], "builtin_oom.prom", rec)
    [advice] = rules_fired(snap, history)["near-limit"]
    assert "20.0 GiB reserved of its 20.2 GiB cap for 65 s" in advice.message
    snap, history = over("h100_80gb_1gpu.json", [0, 40, 65], "builtin_idle.prom", rec)
    assert "near-limit" not in rules_fired(snap, history)


# 4. Hot GPU
def test_hot_gpu_suggests_a_power_cap_with_its_watts() -> None:
    [advice] = rules_fired(moment("hot_rtx3090_87c.json"))["gpu-hot"]
    assert advice.severity == "warn" and "87 °C" in advice.message
    assert "cap power 350 -> 280 W" in advice.action and advice.command == "sudo nvidia-smi -i 0 -pl 280"
    assert "gpu-hot" not in rules_fired(moment("h100_80gb_1gpu.json"))


# 5. CUDA_LAUNCH_BLOCKING
def test_launch_blocking_in_the_shell_or_an_engine() -> None:
    shell = moment("h100_80gb_1gpu.json", environ={"CUDA_LAUNCH_BLOCKING": "1"})
    [advice] = rules_fired(shell)["cuda-launch-blocking"]
    assert "this shell" in advice.message and "a large slowdown meant for debugging" in advice.message
    engine_snap = moment("h100_80gb_1gpu.json", "builtin_idle.prom", record("builtin", "basic", 48213))
    tainted = replace(engine_snap, engines=(replace(engine_snap.engines[0], environ={"CUDA_LAUNCH_BLOCKING": "1"}),))
    assert "builtin engine (pid 48213)" in rules_fired(tainted)["cuda-launch-blocking"][0].message
    clean = moment("h100_80gb_1gpu.json", environ={"CUDA_LAUNCH_BLOCKING": "0"})
    assert "cuda-launch-blocking" not in rules_fired(clean)


# 6. Requests waiting with room
def test_queue_with_kv_room_raises_the_batch() -> None:
    argv = ["vllm", "serve", "m", "--max-num-seqs", "8"]
    snap = moment("h100_80gb_1gpu.json", "vllm_queue.prom", record("vllm", "basic", 48213, argv=argv))
    [advice] = rules_fired(snap)["queue-with-room"]
    assert advice.message.endswith("5 waiting, 8 running, KV 35% used")
    assert advice.action.startswith("raise --max-num-seqs 8 -> 13") and advice.command.endswith("--max-num-seqs 13")


def test_no_queue_advice_when_kv_is_full_nothing_waits_or_slots_are_free() -> None:
    full = moment("rtx4090_shared_sglang.json", "sglang_kv_high.prom", record("sglang", "basic", 5120, argv=SGLANG_ARGV))
    assert "queue-with-room" not in rules_fired(full)  # 3 queued, but KV is 94% used
    idle = moment("h100_80gb_1gpu.json", "vllm_old_names.prom", record("vllm", "basic", 48213))
    assert "queue-with-room" not in rules_fired(idle)
    slots = moment("h100_80gb_1gpu.json", "vllm_queue.prom",
                   record("vllm", "basic", 48213, argv=["vllm", "serve", "m", "--max-num-seqs", "16"]))
    assert "queue-with-room" not in rules_fired(slots)


# 7. OOM events in the built-in server
def test_oom_events_step_down_with_the_planners_command() -> None:
    snap = moment("l4_nearly_full.json", "builtin_oom.prom", record("builtin", "basic", 4242))
    [advice] = rules_fired(snap)["oom-events"]
    assert advice.severity == "critical"
    assert "14 out-of-memory events (rejected 2, shrink 3, split 9) — 2 requests rejected" in advice.message
    assert advice.action.startswith("step down basic -> aggressive") and "--level aggressive" in advice.command
    assert "oom-events" not in rules_fired(moment("l4_nearly_full.json", "builtin_idle.prom", record("builtin", "basic", 4242)))


# 8. Engine unreachable
def test_unreachable_engines_say_what_to_check() -> None:
    refused = moment("h100_80gb_1gpu.json", engine_urls=["http://127.0.0.1:39999"])
    [advice] = rules_fired(refused)["engine-unreachable"]
    assert "unreachable: connection refused" in advice.message and advice.command == "curl -s http://127.0.0.1:39999/metrics"
    with sampler("h100_80gb_1gpu.json", routes={METRICS_URL: 404}, records=[record("sglang", "none", 48213)]) as s:
        no_metrics = s.sample()
    assert "--enable-metrics" in rules_fired(no_metrics)["engine-unreachable"][0].action
    ok = moment("h100_80gb_1gpu.json", "sglang_old_idle.prom", record("sglang", "none", 48213))
    assert "engine-unreachable" not in rules_fired(ok)


def test_advice_comes_most_urgent_first() -> None:
    snap = moment("l4_nearly_full.json", "builtin_oom.prom", record("builtin", "basic", 4242),
                  environ={"CUDA_LAUNCH_BLOCKING": "1"})
    severities = [a.severity for a in advise(snap)]
    assert severities == sorted(severities, key=["critical", "warn", "info"].index) and severities[0] == "critical"


def test_builtin_queue_advice_follows_its_live_batch_cap() -> None:
    rec = record("builtin", "basic", 48213, argv=["mineru-fit", "serve", "--max-batch-size", "4"])
    base = moment("h100_80gb_1gpu.json", "builtin_idle.prom", rec)
    busy = replace(base.engines[0], requests_running=4, requests_waiting=6, kv_cache_usage=0.3, batch_limit=4)
    [advice] = rules_fired(replace(base, engines=(busy,)))["queue-with-room"]
    assert advice.action.startswith("raise --max-batch-size 4 -> 10")
    lowered = replace(busy, requests_running=2, batch_limit=2)  # the engine shrank its batch after an OOM
    assert "queue-with-room" not in rules_fired(replace(base, engines=(lowered,)))


def test_builtin_kv_high_grows_its_batch_with_its_share() -> None:
    argv = ["mineru-fit", "serve", "--engine", "builtin", "--max-model-len", "8192", "--max-batch-size", "4",
            "--mem-fraction-static", "0.2"]
    base = moment("rtx4090_shared_sglang.json", "builtin_idle.prom", record("builtin", "basic", 5120, argv=argv))
    full = replace(base.engines[0], kv_cache_usage=0.96)
    [advice] = rules_fired(replace(base, engines=(full,)))["kv-headroom"]
    # 5 GiB more = 436,906 tokens = 53 more requests of 8192 tokens (the info gauge's max_model_len).
    assert advice.action == "raise --mem-fraction-static 0.2 -> 0.4 (about +436,906 KV tokens) and --max-batch-size 4 -> 57"
    assert advice.command.endswith("--max-batch-size 57 --mem-fraction-static 0.4")
