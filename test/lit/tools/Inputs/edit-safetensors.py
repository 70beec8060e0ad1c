"""Edits a float32 safetensors file as a hostile or careless user would, for the weight-policy
tests: `edit-safetensors.py IN OUT nan NAME INDEX`, `... add NAME` (an extra [2] tensor), or
`... transpose NAME` (swaps a matrix's two extents in the header)."""
import json
import struct
import sys

src, dst, op, name = sys.argv[1:5]
with open(src, "rb") as f:
    blob = f.read()
(n,) = struct.unpack("<Q", blob[:8])
header = json.loads(blob[8:8 + n])
data = bytearray(blob[8 + n:])
if op == "nan":
    begin = header[name]["data_offsets"][0] + 4 * int(sys.argv[5])
    data[begin:begin + 4] = struct.pack("<f", float("nan"))
elif op == "add":
    end = len(data)
    data += struct.pack("<2f", 1.0, 2.0)
    header[name] = {"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}
elif op == "transpose":
    header[name]["shape"] = header[name]["shape"][::-1]
else:
    sys.exit("unknown edit " + op)
text = json.dumps(header).encode()
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + bytes(data))
