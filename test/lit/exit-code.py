"""Runs `nestor ARGS...` (or `--exe PROGRAM ARGS...`) with stderr merged into stdout, then
prints "exit <code>" so lit tests can check the exact exit status. Exits 0 unless the program
was killed by a signal (a crash)."""
import subprocess
import sys

args = sys.argv[1:]
command = args[1:] if args[:1] == ["--exe"] else ["nestor"] + args
proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
print("exit %d" % proc.returncode)
sys.stdout.write(proc.stdout.decode(errors="replace"))
sys.exit(1 if proc.returncode < 0 else 0)
