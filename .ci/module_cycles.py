#!/usr/bin/env python3
"""Import cycles between the files of a crate; exits 1 on one (see ARCHITECTURE.md).

Usage: module_cycles.py SRC_DIR...

Edges are the `crate::a::b` and `super::` paths of each file's non-test code (the text
after the first `#[cfg(test)]` and files named tests.rs are skipped); a parent's `mod`
declaration is not an edge. Written by hand because cargo-modules, which can check this,
builds rust-analyzer's crates: minutes of CI for what a hundred lines do here."""
import os, re, sys
from collections import defaultdict

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'): continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel in (['lib'], ['main']): rel = []
            elif rel[-1] == 'mod': rel = rel[:-1]
            mods[tuple(rel)] = p
    return mods

def strip_tests(text):
    i = text.find('#[cfg(test)]')
    return text if i < 0 else text[:i]

def resolve(path, mods):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods: return tuple(path[:n])
    return None

def main(src):
    mods = modules(src)
    g = defaultdict(set)
    for m, p in mods.items():
        if m and m[-1] == 'tests': continue
        text = strip_tests(open(p).read())
        text = re.sub(r'//[^\n]*', '', text)
        # expand `use crate::{a, b::c}` roughly: take every crate::/super:: path token and brace groups
        for mt in re.finditer(r'\b(crate|super(?:::super)*)::((?:\{[^;]*?\}|[A-Za-z_][A-Za-z0-9_]*)(?:::(?:\{[^;]*?\}|[A-Za-z_][A-Za-z0-9_]*))*)', text):
            head, rest = mt.group(1), mt.group(2)
            base = [] if head == 'crate' else list(m[:len(m) - head.count('super')])
            def expand(prefix, s):
                s = s.strip()
                if not s: return []
                if s.startswith('{'):
                    inner = s[1:-1]; parts=[]; depth=0; cur=''
                    for ch in inner:
                        if ch=='{': depth+=1
                        if ch=='}': depth-=1
                        if ch==',' and depth==0: parts.append(cur); cur=''
                        else: cur+=ch
                    parts.append(cur)
                    out=[]
                    for q in parts: out+=expand(prefix, q)
                    return out
                seg, _, tail = s.partition('::')
                seg = seg.strip().split(' ')[0]
                if seg in ('self',): return [prefix]
                if tail: return expand(prefix+[seg], tail)
                return [prefix+[seg]]
            for path in expand(base, rest):
                t = resolve(path, mods)
                if t is not None and t != m and not (len(t) < len(m) and m[:len(t)] == t and len(path) == len(t)+1 and False):
                    g[m].add(t)
    # Tarjan SCC
    index = {}; low = {}; stack=[]; on=set(); sccs=[]; c=[0]
    def sc(v):
        index[v]=low[v]=c[0]; c[0]+=1; stack.append(v); on.add(v)
        for w in g[v]:
            if w not in index: sc(w); low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],index[w])
        if low[v]==index[v]:
            comp=[]
            while True:
                w=stack.pop(); on.discard(w); comp.append(w)
                if w==v: break
            if len(comp)>1: sccs.append(comp)
    sys.setrecursionlimit(10000)
    for v in list(mods):
        if v not in index: sc(v)
    name = lambda m: '/'.join(m) or 'lib'
    if not sccs: print(f'{src}: no import cycles between files'); return 0
    for comp in sccs:
        print(f'{src}: cycle: ' + ', '.join(sorted(name(x) for x in comp)))
        for a in comp:
            for b in g[a]:
                if b in comp: print(f'    {name(a)} -> {name(b)}')
    return 1

if __name__ == '__main__':
    rc = 0
    for s in sys.argv[1:]: rc |= main(s)
    sys.exit(rc)
