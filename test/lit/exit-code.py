"""Runs `nestor ARGS...` with stderr merged into stdout, then prints "exit <code>" so lit tests
can check the exact exit status. Exits 0 unless nestor was killed by a signal (a crash)."""
import subprocess
import sys

proc = subprocess.run(["nestor"] + sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
print("exit %d" % proc.returncode)
sys.stdout.write(proc.stdout.decode(errors="replace"))
sys.exit(1 if proc.returncode < 0 else 0)
