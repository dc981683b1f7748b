#!/usr/bin/env python3
"""Samples the GPU and trm's threads every half second while the GPU check runs, so that even a
stall ends with a diagnosis: GPU utilisation and memory (nvidia-smi), and for every process whose
command is trm (or the reference's Python), the state of each thread (R running, S sleeping,
D waiting on I/O or the driver) with its name and kernel wait channel.

Usage: gpu_sampler.py OUT.jsonl [--interval 0.5]   (stops on SIGTERM)
"""
import json, os, signal, subprocess, sys, time

out_path = sys.argv[1]
interval = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--interval" else 0.5
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)


def gpu():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,power.draw", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=2)
        u, m, p = [x.strip() for x in r.stdout.splitlines()[0].split(",")]
        return {"util": float(u), "mem_mib": float(m), "power_w": float(p) if p not in ("[N/A]", "") else None}
    except Exception:
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def processes():
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        cmd = read(f"/proc/{pid}/cmdline").split("\0")
        if not cmd or not cmd[0]:
            continue
        exe = os.path.basename(cmd[0])
        if exe != "trm" and not any(os.path.basename(c) == "reference_step.py" for c in cmd[:3]):
            continue
        threads = {}
        busy = []
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
            stat = read(f"/proc/{pid}/task/{tid}/stat")
            if not stat:
                continue
            name = stat[stat.find("(") + 1:stat.rfind(")")]
            state = stat[stat.rfind(")") + 2]
            threads[state] = threads.get(state, 0) + 1
            if state in "RD":
                busy.append(f"{name}:{state}:{read(f'/proc/{pid}/task/{tid}/wchan') or '-'}")
        rss = 0
        for line in read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
        found.append({"pid": int(pid), "cmd": " ".join(cmd[:4])[:120], "threads": threads, "busy": busy[:16], "rss_mib": rss})
    return found


t0 = time.time()
with open(out_path, "a") as out:
    while running:
        rec = {"t": round(time.time() - t0, 2), "gpu": gpu(), "procs": processes()}
        out.write(json.dumps(rec) + "\n")
        out.flush()
        time.sleep(interval)
