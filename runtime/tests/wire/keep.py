#!/usr/bin/env python3
"""Adds recorded payloads to the golden encodings of a wire version.

    TROUPE_TEST_RECORD_WIRE=/tmp/rec troupe-node demo      # or any run of nodes
    python3 runtime/tests/wire/keep.py /tmp/rec runtime/tests/wire/v1.jsonl

Keeps, per type, the three largest distinct payloads of at most 8 KiB (the most fields
filled in; the smallest one if all are larger). A type
already in the file keeps its payloads: the encodings of a version that shipped never
change, since older nodes send exactly those bytes. New types are added.
"""
import json
import pathlib
import sys

PER_TYPE = 3
MAX_BYTES = 8192


def main():
    rec, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    kept = {}
    if out.exists():
        for line in out.read_text().splitlines():
            e = json.loads(line)
            kept.setdefault(e["type"], []).append(e["hex"])
    found = {}
    for f in sorted(rec.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            found.setdefault(e["type"], set()).add(e["hex"])
    added = 0
    for t, hexes in found.items():
        if t in kept:
            continue
        small = [h for h in hexes if len(h) <= 2 * MAX_BYTES]
        kept[t] = (
            sorted(small, key=lambda h: (-len(h), h))[:PER_TYPE]
            if small
            else [min(hexes, key=len)]
        )
        added += 1
    with out.open("w") as o:
        for t in sorted(kept):
            for h in kept[t]:
                o.write(json.dumps({"type": t, "hex": h}) + "\n")
    print(f"{out}: {len(kept)} types ({added} new)")


if __name__ == "__main__":
    main()
