#!/usr/bin/env python3
"""Regenerates supervisor/hot-text.ld, the linker script that gathers the
functions an idle lwsysd runs into one block of text (issue 19,
docs/footprint.md "Hot text").

The kernel maps 64 KiB of page cache around every page fault in a file
mapping, so a function run once at start-up makes its whole neighbourhood
resident. Scattered through 3.5 MB of text, the ~1300 functions run from
exec to an idle OPERATIONAL made 3.0 MB of it resident; placed side by
side they are ~0.65 MB.

This runs the given release lwsysd under callgrind (valgrind) on an empty
state dir at the default log level, with `--stdio`: one `state.wait
OPERATIONAL` on stdin and one `state.get` from a client on the socket,
two idle seconds, then EOF. Every function callgrind saw that is a text
symbol of the binary becomes one input-section pattern. A symbol's hash
(legacy mangling's `17h<16 hex>E`, v0's crate disambiguator `Cs<..>_`)
changes with the toolchain, the profile and a crate's features; where
the name without it is unique in the binary, the pattern leaves it out,
so a rebuild with other hashes (the Debian package's redb-import build)
still finds those functions. Generic instances share a name up to the
hash and keep it: a wildcard would gather every cold instance too (0.45
MB more). Their hashes differ between the default build and the Debian
package's (feature redb-import), so give it both binaries: the script
lists the union, and a name that is not in a build matches nothing.

Run it after a change that moves the idle path or renames generic
instances (a new toolchain, dependency or feature; the idle peak RSS in
scripts/bench climbs back towards 5.6 MiB as patterns go stale):
    cargo build --release -p lwsys-supervisor -p lwsys-ctl --bins \
        --features lwsys-supervisor/redb-import
    cp target/release/lwsysd /tmp/lwsysd.deb
    cargo build --release -p lwsys-supervisor --bin lwsysd
    bench/hot-text.py target/release/lwsysd /tmp/lwsysd.deb > supervisor/hot-text.ld

With `--check LD EXE` it regenerates nothing: it runs EXE the same way and
fails when LD no longer lists nearly every function it ran (.ci/run does
this on the release build, so a stale list fails CI rather than only
raising the idle figure in scripts/bench).
"""
import collections
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

# `--check` fails below this share of the idle path's functions listed. A
# fresh list covers 99.5-100% (start-ups differ by a few functions); one
# 26 functions stale (98%) already raised the idle peak RSS by 0.25 MiB.
CHECK_LEAST = 0.99

LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E$")
V0_CRATE = re.compile(r"Cs[0-9A-Za-z]+_")


def unhashed(name):
    """The symbol's name with its build-dependent hashes as `*`."""
    if name.startswith("_R"):
        return V0_CRATE.sub("Cs*_", name)
    return LEGACY_HASH.sub("17h*", name)


def text_symbols(exe):
    out = subprocess.run(["nm", exe], check=True, capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.add(parts[2])
    return syms


def ran_functions(exe, workdir):
    state = os.path.join(workdir, "state")
    out = os.path.join(workdir, "callgrind.out")
    p = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
         exe, "--stdio", "--state-dir", state],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdin.write(b'{"id":1,"op":"state.wait","state":"OPERATIONAL"}\n')
    p.stdin.flush()
    line = p.stdout.readline()
    if b'"ok":true' not in line:
        sys.exit(f"hot-text: lwsysd did not reach OPERATIONAL: {line!r}")
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(60)
    c.connect(os.path.join(state, "lwsys.sock"))
    c.sendall(b'{"id":1,"op":"state.get"}\n')
    reply = c.makefile("rb").readline()
    if b'"ok":true' not in reply:
        sys.exit(f"hot-text: state.get failed: {reply!r}")
    c.close()
    time.sleep(2)
    p.stdin.close()
    p.wait(timeout=120)
    names = set()
    for path in glob.glob(out + "*"):
        with open(path) as f:
            for line in f:
                m = re.match(r"^c?fn=\(\d+\) (.+)$", line)
                if m:
                    names.add(m.group(1).strip())
    return names


def listed_patterns(ld):
    """The input-section patterns of a hot-text.ld, without `.text.`."""
    pats = set()
    with open(ld) as f:
        for line in f:
            m = re.match(r"^\s*\*\(\.text\.(\S+) ", line)
            if m:
                pats.add(m.group(1))
    return pats


def check(ld, exe, least):
    """Whether the list still covers what the idle daemon `exe` runs: at
    least `least` of its functions must match a listed pattern. A rename or
    a new function on the idle path goes unlisted and is laid out among the
    cold code again, which the idle peak RSS only shows in scripts/bench."""
    pats = listed_patterns(ld)
    with tempfile.TemporaryDirectory() as d:
        hot = ran_functions(exe, d) & text_symbols(exe)
    missing = sorted(s for s in hot if s not in pats and unhashed(s) not in pats)
    covered = 1 - len(missing) / max(len(hot), 1)
    print(json.dumps({"functions": len(hot), "unlisted": len(missing),
                      "covered": round(covered, 4), "least": least}), file=sys.stderr)
    for name in missing[:40]:
        print(f"  unlisted: {name}", file=sys.stderr)
    if covered < least:
        sys.exit(f"hot-text: {ld} is stale: {len(missing)} of the {len(hot)} functions an idle "
                 f"lwsysd runs are not listed (covered {covered:.1%}, need {least:.0%}); "
                 "regenerate it as bench/hot-text.py says")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--check":
        if len(sys.argv) != 4:
            sys.exit("usage: bench/hot-text.py --check supervisor/hot-text.ld target/release/lwsysd")
        check(sys.argv[2], sys.argv[3], CHECK_LEAST)
        return
    patterns, functions = set(), 0
    for exe in sys.argv[1:]:
        syms = text_symbols(exe)
        # Two runs: a function that only some start-ups run (a timer that
        # fired, a thread scheduled early) is listed too.
        hot = set()
        for _ in range(2):
            with tempfile.TemporaryDirectory() as d:
                hot |= ran_functions(exe, d) & syms
        functions = max(functions, len(hot))
        by_pattern = collections.Counter(unhashed(s) for s in syms)
        patterns |= {unhashed(s) if by_pattern[unhashed(s)] == 1 else s for s in hot}
    print("/* Generated by bench/hot-text.py from an idle lwsysd under callgrind;")
    print("   see docs/footprint.md, \"Hot text\". The functions an idle daemon")
    print("   runs, side by side, so start-up faults in little cold code. */")
    print("SECTIONS")
    print("{")
    print("  .text.lwsys_idle :")
    print("  {")
    for p in sorted(patterns):
        # LLVM puts #[cold] functions in .text.unlikely.<name>.
        print(f"    *(.text.{p} .text.unlikely.{p})")
    print("  }")
    print("}")
    print("INSERT BEFORE .text;")
    print(json.dumps({"functions": functions, "patterns": len(patterns),
                      "unhashed": sum(1 for p in patterns if "*" in p)}), file=sys.stderr)


if __name__ == "__main__":
    main()
