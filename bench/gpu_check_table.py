#!/usr/bin/env python3
"""The table of bench/gpu-check.sh: reads its results.jsonl, prints the table, writes the JSON.

Usage: bench/gpu_check_table.py RESULTS.jsonl OUT.json
"""
import json
import sys


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main(results, out_json):
    recs = [json.loads(l) for l in open(results) if l.strip()]
    by = lambda part: [r for r in recs if r["part"] == part]
    lines = []
    for m in by("machine"):
        lines.append(f"machine: {m.get('gpu')} | torch {m.get('torch')} | {m.get('trm')} | commit {m.get('commit')} | device {m.get('device')}")
    lines.append("")
    lines.append("parity (float32)")
    for r in by("parity"):
        status = "ok  " if r.get("ok") else ("TIME" if r.get("exit_code") in (124, 137) else "FAIL")
        lines.append(f"  {status} {r['name']:<22} {r.get('device', ''):<13} {r.get('summary') or r.get('error', '')}")
    for r in by("fallback"):
        lines.append(f"  FALLBACK: the fused block failed parity on {', '.join(r.get('failed', []))}; the generic layers passed, "
                     f"so the rest of the check ran with {r.get('rest_of_check')}")
    lines.append("")
    ref = {r["name"]: r for r in by("reference")}
    head = f"  {'case':<46} {'blocks':<14} {'trm s':>8} {'ex/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'GPU MiB':>8} {'alloc MiB':>9} {'ref alloc':>9} {'ref eager':>9} {'ref comp':>9} {'/eager':>7} {'/comp':>7}"
    lines += ["step times (median; ratios = trm / reference, < 1 is faster)", head]
    for r in by("bench"):
        if r["name"].endswith(":profile"):
            continue  # one timed step beside the profiler: its profile is printed below
        case = ":".join(r["name"].split(":")[:4])  # a variant (":generic-block") against the same reference
        eager, comp = ref.get(case + ":eager", {}), ref.get(case + ":compile", {})
        t = r.get("median_step_s")
        te, tc = eager.get("median_step_s"), comp.get("median_step_s")
        mib = lambda b: b / 2**20 if isinstance(b, (int, float)) else None
        alloc = mib((r.get("device_memory") or {}).get("peak_allocated_bytes"))
        ref_alloc = mib(eager.get("peak_bytes")) if eager.get("peak_bytes_kind") == "cuda_max_memory_allocated" else None
        ratio = lambda a, b: a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None
        if "error" in r:
            lines.append(f"  {r['name']:<46} {r['error']}")
            continue
        lines.append(
            f"  {r['name']:<46} {r.get('block', '-'):<14} {fmt(t, '8.4f')} {fmt(r.get('examples_per_s'), '9.0f')} {fmt(r.get('achieved_tflops'), '8.2f')} "
            f"{fmt(r.get('mfu'), '6.3f')} {fmt(r.get('gpu_peak_mib'), '8.0f')} {fmt(alloc, '9.0f')} {fmt(ref_alloc, '9.0f')} {fmt(te, '9.4f')} {fmt(tc, '9.4f')} "
            f"{fmt(ratio(t, te), '7.2f')} {fmt(ratio(t, tc), '7.2f')}"
        )
    errs = [r for r in by("reference") if "error" in r]
    for r in errs:
        lines.append(f"  reference {r['name']}: {r['error']}")
    lines.append("")
    for r in by("train"):
        lines.append(
            f"training {r['name']}: exit {r.get('exit_code')}, {r.get('steps')} steps, lm_loss {fmt(r.get('first_lm_loss'), '.3f')} -> "
            f"{fmt(r.get('last_lm_loss'), '.3f')}, test exact accuracy {fmt(r.get('test_exact_accuracy'), '.4f')} "
            f"(token {fmt(r.get('test_token_accuracy'), '.4f')}, {r.get('test_count', '-')} puzzles), GPU MiB {fmt(r.get('gpu_peak_mib'), '.0f')} "
            f"(nvidia-smi; allocator's peak allocated {fmt(r.get('gpu_peak_allocated_mib'), '.0f')}, reserved {fmt(r.get('gpu_peak_reserved_mib'), '.0f')}), "
            f"median step {fmt(r.get('median_step_seconds'), '.4f')} s; "
            f"against the CPU run: {r.get('cpu_steps_compared', '-')} steps, max |lm_loss diff| {fmt(r.get('max_abs_lm_loss_diff'), '.4f')}, "
            f"curves agree {r.get('curves_agree', '-')}"
        )
    for r in by("reproducible"):
        lines.append(
            f"--deterministic, {r.get('steps')} steps (exits {r.get('exits')}): repeated run byte-identical {r.get('repeat_identical')}, "
            f"stopped halfway and resumed byte-identical {r.get('resume_identical')}"
        )
    for r in by("nccl"):
        lines.append(
            f"NCCL world 1 vs plain: exits {r.get('nccl_exit')}/{r.get('plain_exit')}, {r.get('steps_compared')} steps compared, "
            f"max |lm_loss diff| {fmt(r.get('max_lm_loss_diff'), '.2e')}; control (plain vs plain, exit {r.get('control_exit', '-')}): "
            f"max |lm_loss diff| {fmt(r.get('control_max_lm_loss_diff'), '.2e')} over {r.get('control_steps_compared', '-')} steps; "
            f"--deterministic NCCL world 1 (exit {r.get('deterministic_nccl_exit', '-')}) byte-identical to the plain deterministic run: "
            f"{r.get('deterministic_nccl_identical', '-')}"
        )
    for r in by("cubecl"):
        if "error" in r:
            lines.append(f"cubecl {r['name']}: {r['error']}")
        else:
            lines.append(f"cubecl {r['name']}: first step {fmt(r.get('first_step_s'), '.2f')} s, median {fmt(r.get('median_step_s'), '.4f')} s, "
                         f"MFU {fmt(r.get('mfu'), '.3f')}")
    for r in by("oom"):
        lines.append(f"out of memory ({r['name']}): exit {r.get('exit_code')}, clean error {r.get('clean')}: {(r.get('message') or '')[:300]}")
    for r in by("bench") + by("reference"):
        p = r.get("profile")
        who = "trm" if r["part"] == "bench" else "reference"
        if r.get("profile_error"):
            lines += ["", f"profile of {who} {r['name']}: {r['profile_error']}"]
        if not p:
            continue
        lines.append("")
        if "error" in p:
            lines.append(f"profile of {who} {r['name']}: {p['error']}")
            continue
        ops = f", {fmt(p.get('ops_per_step'), '.0f')} operators" if "ops_per_step" in p else ""
        lines.append(f"profile of {who} {r['name']}: {fmt(p.get('wall_s_per_step_profiled'), '.4f')} s/step profiled{ops}, "
                     f"kernels {fmt(p.get('kernel_s_per_step'), '.4f')} s/step ({fmt(p.get('kernels_per_step'), '.0f')} launches, "
                     f"GPU busy {fmt(p.get('gpu_busy_share'), '.2f')})")
        for kind, k in (p.get("kernel_kinds") or {}).items():
            lines.append(f"  {kind:<12} {fmt(k.get('s_per_step'), '.4f')} s/step  share {fmt(k.get('share'), '.3f')}  launches {fmt(k.get('launches_per_step'), '.0f')}")
    print("\n".join(lines))
    json.dump({"records": recs}, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
