#!/usr/bin/env python3
"""A flame graph (SVG) of a heap profile: each box a function, as wide as the bytes (or
objects) allocated under it, callers below their callees. Reads the profile through
`go tool pprof -traces`, which symbolizes it from the binary.

    python3 scripts/flamegraph.py PROGRAM PROFILE [--sample inuse_space] > heap.svg

PROGRAM is the binary the profile came from (for symbols); --sample is one of inuse_space
(default), inuse_objects, alloc_space, alloc_objects. Needs Go (`go tool pprof`).
"""
import argparse
import html
import subprocess
import sys

UNITS = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def traces(program, profile, sample):
    """(value, frames from the root to the leaf) of every stack in the profile."""
    text = subprocess.run(["go", "tool", "pprof", "-traces", f"-sample_index={sample}", program,
                           profile], capture_output=True, text=True, check=True).stdout
    out = []
    for block in text.split("-----------+-------------------------------------------------------")[1:]:
        lines = [l for l in block.splitlines() if l.strip()]
        if not lines:
            continue
        first = lines[0].split(None, 1)
        if len(first) < 2:
            continue
        number = first[0]
        unit = number.lstrip("0123456789.")
        value = float(number[: len(number) - len(unit)]) * UNITS.get(unit, 1)
        frames = [first[1].strip()] + [l.strip() for l in lines[1:]]
        out.append((value, list(reversed(frames))))
    return out


def tree(stacks):
    root = {"name": "all", "value": 0.0, "children": {}}
    for value, frames in stacks:
        root["value"] += value
        node = root
        for frame in frames:
            node = node["children"].setdefault(frame, {"name": frame, "value": 0.0, "children": {}})
            node["value"] += value
    return root


def render(root, title, unit_is_bytes, width=1200, row=17):
    def depth(node):
        return 1 + max((depth(c) for c in node["children"].values()), default=0)

    height = depth(root) * row + 40
    boxes = []

    def place(node, x, level):
        w = width * node["value"] / root["value"] if root["value"] else 0
        if w < 0.5:
            return
        y = height - (level + 1) * row - 5
        amount = (f"{node['value'] / (1 << 20):.2f} MiB" if unit_is_bytes
                  else f"{node['value']:.0f} objects")
        share = 100 * node["value"] / root["value"]
        hue = 20 + (hash(node["name"]) % 30)
        label = html.escape(node["name"] if w > 7 * len(node["name"]) else node["name"][: int(w / 7)])
        boxes.append(
            f'<g><title>{html.escape(node["name"])}: {amount} ({share:.1f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{max(w - 0.5, 0.5):.1f}" height="{row - 1}" '
            f'fill="hsl({hue},85%,60%)"/><text x="{x + 3:.1f}" y="{y + row - 5}">{label}</text></g>')
        cx = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            place(child, cx, level + 1)
            cx += width * child["value"] / root["value"]

    place(root, 0.0, 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11">'
            f'<text x="4" y="16" font-size="14">{html.escape(title)}</text>' + "".join(boxes) + "</svg>\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program")
    parser.add_argument("profile")
    parser.add_argument("--sample", default="inuse_space",
                        choices=["inuse_space", "inuse_objects", "alloc_space", "alloc_objects"])
    args = parser.parse_args()
    stacks = traces(args.program, args.profile, args.sample)
    if not stacks:
        sys.exit("no samples in the profile")
    sys.stdout.write(render(tree(stacks), f"{args.sample} of {args.program}",
                            args.sample.endswith("space")))


if __name__ == "__main__":
    main()
