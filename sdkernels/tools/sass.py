"""Read a kernel's SASS (`nvdisasm -c` output): the instruction mix of its main loop and of the whole kernel.

The main loop is the backward-branch loop (a label, then a `BRA` back to it) holding the most tensor-core MMAs
(for kernels without MMA: the longest loop). Its body, counted once, is what one warp issues per iteration: per
key tile in attention, per K step in GEGLU. A loop nested inside it (the dv-split attention kernel's QKᵀ slices)
is reported separately with its own body; `per_iteration()` adds it `trips - 1` more times.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Instruction classes of the report, matched on the opcode (the text before the first '.' or space).
CLASSES: dict[str, tuple[str, ...]] = {
    "mma": ("HGMMA", "HMMA", "IMMA", "QGMMA"),
    "mufu": ("MUFU",),
    "fp32": ("FMUL", "FFMA", "FADD", "FMNMX", "FSEL", "FSETP", "FSET", "FCHK", "FRND", "FMUL2", "FFMA2", "FADD2"),
    "convert": ("F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP"),
    "int": (
        "IMAD",
        "IADD3",
        "IADD",
        "VIADD",
        "LEA",
        "SHF",
        "LOP3",
        "ISETP",
        "IMNMX",
        "SEL",
        "MOV",
        "PRMT",
        "IABS",
        "SGXT",
        "CS2R",
        "S2R",
        "S2UR",
        "LDC",
        "IMUL",
        "BMSK",
        "PLOP3",
        "P2R",
        "R2P",
        "R2UR",
        "FLO",
        "POPC",
        "VIMNMX",
        "ULDC",
    ),
    "ldg": ("LDG",),
    "ldgsts": ("LDGSTS",),
    "lds": ("LDS", "LDSM"),
    "tma": ("UTMALDG", "UBLKCP", "UTMAPF", "UTMACCTL", "UTMASTG"),
    "sts": ("STS",),
    "stg": ("STG", "STSM"),
    "shfl": ("SHFL",),
    "barrier": (
        "BAR",
        "SYNCS",
        "WARPGROUP",
        "DEPBAR",
        "LDGDEPBAR",
        "MEMBAR",
        "FENCE",
        "ARRIVES",
        "WARPSYNC",
        "BSYNC",
        "BSSY",
    ),
    "branch": ("BRA", "EXIT", "RET", "CALL", "JMP"),
}
_CLASS_OF = {opcode: name for name, opcodes in CLASSES.items() for opcode in opcodes}
_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z][A-Za-z0-9_.]*)(.*)$")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # e.g. "HGMMA.64x64x16.F32"
    label: str | None  # the label right before it, if any
    target: str | None  # the label a BRA jumps to


def parse(sass: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: str | None = None
    for line in sass.splitlines():
        if found := _LABEL.match(line.strip()):
            pending = found.group(1)
            continue
        if not (found := _LINE.match(line)):
            continue
        address, opcode, rest = int(found.group(1), 16), found.group(2), found.group(3)
        target = _BRANCH_TARGET.search(rest) if opcode.startswith("BRA") else None
        instructions.append(Instruction(address, opcode, pending, target.group(1) if target else None))
        pending = None
    return instructions


def instruction_class(opcode: str) -> str:
    base = opcode.split(".")[0]
    if base.startswith("U") and base not in _CLASS_OF:  # uniform-datapath twins of the vector ops: UIADD3, UMOV...
        base = base[1:]
    return _CLASS_OF.get(base, "other")


def mix(instructions: list[Instruction]) -> dict[str, int]:
    """Counts per class (plus "total" and the MMA shapes as "mma:<opcode>"); trailing NOP padding excluded."""
    body = [i for i in instructions if i.opcode != "NOP"]
    counts = Counter(instruction_class(i.opcode) for i in body)
    counts.update(f"mma:{i.opcode}" for i in body if instruction_class(i.opcode) == "mma")
    return {"total": len(body), **dict(sorted(counts.items()))}


def loops(instructions: list[Instruction]) -> list[tuple[int, int]]:
    """(first, last) instruction index of every backward-branch loop."""
    index_of_label = {i.label: n for n, i in enumerate(instructions) if i.label}
    found = []
    for n, instruction in enumerate(instructions):
        start = index_of_label.get(instruction.target or "")
        if start is not None and start < n:  # `BRA` to itself (the trap after EXIT) is not a loop
            found.append((start, n))
    return found


def main_loop_report(sass: str) -> dict[str, object]:
    """{"kernel": mix of the whole kernel, "loop": mix of the main loop body (one iteration), "inner": mix of a
    loop nested in it or {}, "after": mix of what follows the main loop (the epilogue)}; "loop" is {} for a kernel
    without loops."""
    instructions = parse(sass)
    candidates = loops(instructions)
    report: dict[str, object] = {"kernel": mix(instructions), "loop": {}, "inner": {}, "after": {}}
    if not candidates:
        return report

    def weight(span: tuple[int, int]) -> tuple[int, int]:
        body = instructions[span[0] : span[1] + 1]
        return sum(instruction_class(i.opcode) == "mma" for i in body), len(body)

    # The loop with the most MMAs, the shortest of those (a nested loop's MMAs are in its parent's span too, and the
    # out-of-line retry blocks of mbarrier waits branch back into the loop from the end of the kernel).
    main = max(candidates, key=lambda span: (weight(span)[0], -weight(span)[1]))
    report["loop"] = mix(instructions[main[0] : main[1] + 1])
    report["after"] = mix(instructions[main[1] + 1 :])  # the epilogue (and any out-of-line blocks after it)
    nested = [s for s in candidates if main[0] <= s[0] and s[1] <= main[1] and s != main]
    if nested:
        inner = max(nested, key=weight)
        report["inner"] = mix(instructions[inner[0] : inner[1] + 1])
    return report


def per_iteration(report: dict[str, object], inner_trips: int = 1) -> dict[str, int]:
    """The main loop's mix per iteration when a nested loop in it runs `inner_trips` times (its body is in the
    outer span once)."""
    loop, inner = dict(report["loop"]), dict(report["inner"])  # type: ignore[arg-type]
    for key, count in inner.items():
        loop[key] = loop.get(key, 0) + (inner_trips - 1) * count
    return loop


def whole_run(loop: dict[str, int], kernel: dict[str, int], epilogue: dict[str, int], trips: int) -> dict[str, float]:
    """Instructions one warp issues over a whole program when the main loop runs `trips` times: the loop body ×
    trips + the rest of the kernel (counted once), and the epilogue's (after the loop) share of that total."""
    total = loop["total"] * trips + kernel["total"] - loop["total"]
    return {
        "trips": trips,
        "total": total,
        "epilogue": epilogue["total"],
        "epilogue_share": round(epilogue["total"] / total, 4),
    }
