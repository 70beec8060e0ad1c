"""Stops `nestor train` with a signal after its first checkpoint of the elastic phase, resumes
it, and checks that every step and evaluation record (losses, gradient norms, budgets, router
choices; not timings) equals that of an uninterrupted run of the same spec. SIGKILL kills it
outright; SIGINT asks it to checkpoint and stop (exit code 130).

usage: kill-resume.py NESTOR SPEC WORKDIR [KILL|INT]
"""
import json
import os
import signal
import subprocess
import sys
import time


def records(run):
    out = {}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["kind"] not in ("step", "eval"):
                continue
            r.pop("seconds", None)
            r.pop("tokens_per_s", None)
            key = (r["kind"], r["phase"], r["budget"], r["step"])
            if key in out:
                sys.exit(f"record {key} appears twice in {run}")
            out[key] = r
    return out


def main():
    nestor, spec, work = sys.argv[1:4]
    sig = signal.SIGINT if len(sys.argv) > 4 and sys.argv[4] == "INT" else signal.SIGKILL
    whole, killed = os.path.join(work, "whole"), os.path.join(work, "killed")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([nestor, "train", spec, "--out", whole], check=True, **quiet)

    proc = subprocess.Popen([nestor, "train", spec, "--out", killed], **quiet)
    state = os.path.join(killed, "state.json")
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            sys.exit("the run finished before it could be killed")
        if time.time() > deadline:
            proc.kill()
            sys.exit("no elastic checkpoint within 120 s")
        try:
            with open(state) as f:
                s = json.load(f)
            if s["phase"] == "elastic" and s["step"] > 0:
                break
        except (OSError, ValueError):
            pass  # not written yet (writes are atomic, so never half a file)
        time.sleep(0.005)
    proc.send_signal(sig)
    code = proc.wait()
    if sig == signal.SIGINT and code != 130:
        sys.exit(f"an interrupted run exits with 130, got {code}")
    with open(state) as f:
        s = json.load(f)
    print(f"{sig.name} in phase {s['phase']}, resuming from checkpoint {s['checkpoint']}")
    if os.path.exists(os.path.join(killed, "summary.json")):
        sys.exit("the killed run had already finished")

    subprocess.run([nestor, "train", spec, "--out", killed, "--resume"], check=True, **quiet)
    a, b = records(whole), records(killed)
    if a != b:
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                sys.exit(f"first difference at {key}:\n  uninterrupted {a.get(key)}\n"
                         f"  resumed       {b.get(key)}")
    steps = sum(1 for k in a if k[0] == "step")
    print(f"resumed: {len(a)} records ({steps} steps) identical to the uninterrupted run")
    for name in ("summary.json", "report.html", "model.safetensors", "parent.safetensors"):
        if not os.path.exists(os.path.join(killed, name)):
            sys.exit(f"the resumed run has no {name}")
    print("resumed run complete")


main()
