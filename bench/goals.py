#!/usr/bin/env python3
"""scripts/bench's output filter: every JSON metric line that has a goal
(issue 19's table and the goals of the issues before it) leaves with
`goal` and `better` ("lower" or "higher"); figures derived from several
lines are added at the end: the marginal cost of one actor consent, the
OTA pipeline's ratio to its baseline, and with --vs-lws each figure's
ratio to the C original measured in the same run (`<metric>_vs_lws`,
unit `x`). Lines that are not metrics pass through untouched.

Usage: scripts/bench ... | bench/goals.py [--vs-lws]
"""
import json
import sys

# metric -> (goal, better); goals in the metric's own unit.
GOALS = {
    "lwsysd_idle_peak_rss": (4, "lower"),                       # MiB, issue 19
    "lwsysd_exec_to_operational": (20, "lower"),                # ms
    "boot_walk/inline/1": (2, "lower"),                         # us, issue 19
    "actor_consent_each": (0.5, "lower"),                       # us, issue 19
    "attach_callbacks_per_s_untimed_t4": (8e6, "higher"),       # issue 19
    "attach_sustained_p99_t4": (1000, "lower"),                 # us at 1 M/s offered
    "attach_idle_wake_p50": (20, "lower"),                      # us, issue 6
    "protocol_state_get_rate_8_clients": (100000, "higher"),    # issue 3
    "protocol_state_get_p99_8_clients": (1000, "lower"),        # us
    "ota_pipeline_ratio": (1, "higher"),                        # x curl|gunzip|sha512sum
}
# Figures without a goal of their own, but with a direction.
BETTER = {
    "boot_walk/inline/10": "lower",
    "boot_walk/inline/100": "lower",
    "boot_walk/actor/1": "lower",
    "boot_walk/actor/10": "lower",
    "boot_walk/actor/100": "lower",
    "attach_burst_drain": "lower",
    "lwsysd_stripped_size": "lower",
    "ota_pipeline_throughput": "higher",
    # The daemon's CPU per state.get: steadier than the rate on a shared
    # machine (tests/benches/protocol.rs).
    "protocol_state_get_daemon_cpu_1_clients": "lower",
    "protocol_state_get_daemon_cpu_8_clients": "lower",
}
# Ours -> the C program's figure, the ratio's goal (None: the goal
# for it is absolute), and which way is better.
VS_LWS = {
    "boot_walk/inline/100": ("lws_boot_walk_100", 2, "lower"),
    "boot_walk/inline/1": ("lws_boot_walk_1", None, "lower"),
    "attach_callbacks_per_s_untimed_t4": ("lws_attach_callbacks_per_s_t4", None, "higher"),
    "lwsysd_idle_peak_rss": ("lws_idle_peak_rss", None, "lower"),
}

vs_lws = "--vs-lws" in sys.argv[1:]
seen = {}


def emit(m):
    print(json.dumps(m), flush=True)


for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        m = None
    if not isinstance(m, dict) or "metric" not in m:
        sys.stdout.write(line)
        sys.stdout.flush()
        continue
    name = m["metric"]
    seen[name] = m
    goal, better = GOALS.get(name, (None, BETTER.get(name)))
    if goal is not None:
        m.setdefault("goal", goal)
    if better is not None:
        m.setdefault("better", better)
    if name == "attach_burst_p99" and "attach_burst_drain" in seen:
        # FIFO under a burst: no item waits longer than the burst takes.
        m.setdefault("goal", seen["attach_burst_drain"]["value"])
        m.setdefault("better", "lower")
    emit(m)


def value(name):
    m = seen.get(name)
    return m["value"] if m else None


# One actor consent, marginal: the 100-actor walk minus the 1-actor walk,
# over the 99 extra notifiers asked at each of the 14 boot transitions.
a100, a1 = value("boot_walk/actor/100"), value("boot_walk/actor/1")
if a100 is not None and a1 is not None:
    goal, better = GOALS["actor_consent_each"]
    emit({"metric": "actor_consent_each", "value": round((a100 - a1) / (14 * 99), 3),
          "unit": "us", "goal": goal, "better": better,
          "from": "(boot_walk/actor/100 - boot_walk/actor/1) / (14 * 99)"})

ours, base = value("ota_pipeline_throughput"), value("ota_baseline_curl_gunzip_sha512sum")
if ours and base:
    goal, better = GOALS["ota_pipeline_ratio"]
    emit({"metric": "ota_pipeline_ratio", "value": round(ours / base, 2), "unit": "x",
          "goal": goal, "better": better})

if vs_lws:
    for name, (lws, goal, better) in VS_LWS.items():
        a, b = value(name), value(lws)
        if a is None or not b:
            emit({"metric": f"{name}_vs_lws", "value": None, "unit": "x", "better": better,
                  "missing": name if a is None else lws})
            continue
        m = {"metric": f"{name}_vs_lws", "value": round(a / b, 2), "unit": "x", "better": better,
             "ours": a, "lws": b}
        if goal is not None:
            m["goal"] = goal
        emit(m)
