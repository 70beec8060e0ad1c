"""Prints the generated text of each model in `nestor generate` output (stdin), one block per
model, so it can be compared byte for byte with a built executable's output."""
import sys

lines = sys.stdin.read().split("\n")
out, text = [], None
for line in lines:
    if line.startswith("[") and "] " in line and " parameters (" in line:
        text = []
    elif text is not None and line.startswith("  prompt ") and " tokens in " in line:
        out.append("\n".join(text))
        text = None
    elif text is not None:
        text.append(line)
sys.stdout.write("\n".join(out) + "\n")
