#!/usr/bin/env python3
"""Deterministic test-tree generator for the file-backup benchmark.

    gen-tree.py gen    DIR SIZE [--seed N]           # e.g. gen /tmp/t 2G
    gen-tree.py mutate DIR      [--seed N] [--round R] [--fraction F]

`gen` writes a nested tree of roughly SIZE bytes (K/M/G/T suffixes are
binary: 200M = 200 MiB) into DIR (created; must be empty or absent).
The same seed and size always give byte-identical contents and paths
(same Python minor version; stdlib only, no os.urandom).

Byte budget (scaled to SIZE):
  ~30 %  small files   1-64 KiB   (log-uniform; the bulk of the file count)
  ~35 %  medium files  100 KiB-5 MiB
  ~35 %  large files   50-300 MiB (x min(1, SIZE/2G), so a 300M tree gets
                        a couple of ~10-45 MiB files instead of one huge one)
Content classes: word-level "text" (source/docs/logs, compresses ~2.5-3x
with zstd), "json" records (compresses well), "random" bytes
(media/archives, incompressible) and, for some large files, "mixed" 1 MiB
blocks of text/random/zeros (disk-image-like).  ~2 % of small and medium
files are exact duplicates of another file, plus a few empty files and
relative symlinks, as in real home directories.

`mutate` changes about FRACTION (default 1 %) of the regular files,
deterministically from (seed, round): rewrites some small files, appends
to some files, adds a few new small files and inserts a few bytes in the
middle of one large file (everything after the insertion point shifts,
which defeats fixed-size chunking but not content-defined chunking).
"""

import argparse
import itertools
import os
import random
import sys
import time

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

POOL_TEXT = 16 * MiB   # text pool; files are stitched from random slices
POOL_JSON = 8 * MiB    # JSON-record pool
BLOCK = 4 * MiB        # write granularity for big files

SMALL_MAX = 64 * KiB
LARGE_MIN_SCALED = 8 * MiB


def parse_size(s):
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suf, m in (("K", KiB), ("M", MiB), ("G", GiB), ("T", 1024 * GiB)):
        if s.endswith(suf):
            s, mult = s[:-1], m
            break
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return int(v * mult)


def human(n):
    for unit, m in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= m:
            return f"{n / m:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------
# Content pools (derived from the seed only)
# --------------------------------------------------------------------------

SYLLABLES = ("ka te ri mo lu sa ne vi to pa re di no ba ge fu li ma so ku "
             "ra en an in on or ar st th er al de co pro con trans ex").split()


class Pools:
    def __init__(self, seed):
        rng = random.Random(f"{seed}:pools")
        vocab = set()
        while len(vocab) < 6000:
            vocab.add("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))))
        vocab = sorted(vocab)
        rng.shuffle(vocab)
        # Zipf-like weights; a newline token makes lines of ~12 words and a
        # few punctuation tokens make it look like prose/code.
        toks = vocab + ["\n", "\n", ".", ",", "=", "{", "}", "(", ")", ";"]
        weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]
        weights += [0.55, 0.55, 0.3, 0.3, 0.15, 0.08, 0.08, 0.1, 0.1, 0.12]
        cum = list(itertools.accumulate(weights))
        self.vocab = vocab
        self.vocab_cum = list(itertools.accumulate(weights[:len(vocab)]))
        out, n = [], 0
        while n < POOL_TEXT:
            part = " ".join(rng.choices(toks, cum_weights=cum, k=200_000))
            part = part.replace(" \n ", "\n").encode()
            out.append(part)
            n += len(part)
        self.text = b"".join(out)[:POOL_TEXT]

        levels = ["DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"]
        recs, n, t0, rid = [], 0, 1_700_000_000, 100_000
        words = vocab[:800]
        while n < POOL_JSON:
            t0 += rng.randint(0, 5000)
            rid += rng.randint(1, 20)
            r = ('{"id":%d,"ts":%d.%03d,"level":"%s","user":"%s","host":"node-%02d",'
                 '"latency_ms":%.2f,"ok":%s,"tags":["%s","%s"],"msg":"%s"}\n' % (
                     rid, t0, rng.randint(0, 999), rng.choice(levels),
                     rng.choice(words), rng.randint(1, 40), rng.expovariate(0.05),
                     "true" if rng.random() < 0.93 else "false",
                     rng.choice(words), rng.choice(words),
                     " ".join(rng.choices(words, k=rng.randint(3, 12)))))
            r = r.encode()
            recs.append(r)
            n += len(r)
        self.json = b"".join(recs)

    def word(self, rng):
        return rng.choices(self.vocab, cum_weights=self.vocab_cum, k=1)[0]

    def _stitch(self, rng, pool, n, lo, hi, align_nl):
        parts, got, plen = [], 0, len(pool)
        while got < n:
            ln = min(rng.randint(lo, hi), n - got)
            off = rng.randrange(0, plen - ln)
            if align_nl:
                nl = pool.find(b"\n", off, off + 4096)
                if nl >= 0 and nl + 1 + ln <= plen:
                    off = nl + 1
            parts.append(pool[off:off + ln])
            got += ln
        return b"".join(parts)

    def text_bytes(self, rng, n):
        return self._stitch(rng, self.text, n, 512, 16 * KiB, True)

    def json_bytes(self, rng, n):
        return self._stitch(rng, self.json, n, 2 * KiB, 32 * KiB, True)


def content_chunks(pools, rng, cls, size):
    """Yield the file's bytes in blocks of at most BLOCK."""
    left = size
    while left > 0:
        n = min(BLOCK, left)
        if cls == "random":
            yield rng.randbytes(n)
        elif cls == "text":
            yield pools.text_bytes(rng, n)
        elif cls == "json":
            yield pools.json_bytes(rng, n)
        elif cls == "mixed":
            out, m = [], 0
            while m < n:
                k = min(MiB, n - m)
                r = rng.random()
                if r < 0.45:
                    out.append(pools.text_bytes(rng, k))
                elif r < 0.9:
                    out.append(rng.randbytes(k))
                else:
                    out.append(bytes(k))
                m += k
            yield b"".join(out)
        else:
            raise ValueError(cls)
        left -= n


EXT = {"text": (".txt", ".c", ".md", ".log", ".csv", ".html"),
       "json": (".json", ".jsonl", ".ndjson"),
       "random": (".jpg", ".png", ".bin", ".gz", ".pdf", ".mp3"),
       "mixed": (".img", ".qcow2", ".tar")}


def class_of(path):
    ext = os.path.splitext(path)[1]
    for cls, exts in EXT.items():
        if ext in exts:
            return cls
    return "random"


# --------------------------------------------------------------------------
# gen
# --------------------------------------------------------------------------

def plan(seed, total):
    rng = random.Random(f"{seed}:plan:{total}")
    files = []  # (size, cls, kind)

    # large files
    scale = min(1.0, total / (2 * GiB))
    lo = max(LARGE_MIN_SCALED, int(50 * MiB * scale))
    hi = max(lo, int(300 * MiB * scale))
    budget = int(total * 0.35)
    large_classes = ["random", "mixed", "text", "random", "json", "mixed"]
    i = 0
    while budget >= lo:
        sz = min(rng.randint(lo, hi), budget)
        if budget - sz < lo:
            sz = budget  # absorb the remainder
        files.append((sz, large_classes[i % len(large_classes)], "large"))
        budget -= sz
        i += 1
    leftover = budget

    # medium files, log-uniform in [100 KiB, 5 MiB]
    budget = int(total * 0.35) + leftover
    while budget >= 100 * KiB:
        sz = min(int(100 * KiB * (50 ** rng.random())), budget)
        r = rng.random()
        cls = "text" if r < 0.35 else "json" if r < 0.50 else "random"
        files.append((sz, cls, "medium"))
        budget -= sz

    # small files, log-uniform in [1 KiB, 64 KiB]
    budget = total - sum(f[0] for f in files)
    while budget > 0:
        sz = min(int(KiB * (64 ** rng.random())), budget)
        r = rng.random()
        cls = "text" if r < 0.5 else "json" if r < 0.7 else "random"
        files.append((sz, cls, "small"))
        budget -= sz

    rng.shuffle(files)
    return rng, files


def make_dirs(rng, pools, nfiles):
    ndirs = max(6, nfiles // 35)
    dirs = [""]
    depth = {"": 0}
    for i in range(ndirs):
        # prefer shallow parents a bit, cap depth at 7
        while True:
            parent = dirs[int(len(dirs) * rng.random() ** 1.5)]
            if depth[parent] < 7:
                break
        name = f"{pools.word(rng)}-{i:04d}"
        d = os.path.join(parent, name) if parent else name
        dirs.append(d)
        depth[d] = depth[parent] + 1
    return dirs


def write_file(path, chunks):
    with open(path, "wb") as f:
        for c in chunks:
            f.write(c)


def cmd_gen(a):
    total = a.size
    out = os.path.abspath(a.dir)
    if os.path.exists(out) and os.listdir(out):
        sys.exit(f"gen-tree: {out} exists and is not empty")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    pools = Pools(a.seed)
    rng, files = plan(a.seed, total)
    dirs = make_dirs(rng, pools, len(files))
    for d in dirs[1:]:
        os.makedirs(os.path.join(out, d), exist_ok=True)

    stats = {}
    written = 0
    small_medium = []
    prev = {"small": [], "medium": []}
    ndup = 0
    deficit = 0
    for idx, (size, cls, kind) in enumerate(files):
        d = dirs[int(len(dirs) * rng.random() ** 1.2)]
        ext = rng.choice(EXT[cls])
        name = f"{pools.word(rng)}_{idx:06d}{ext}"
        path = os.path.join(out, d, name)
        frng = random.Random(f"{a.seed}:file:{idx}")
        if kind != "large" and prev[kind] and rng.random() < 0.02:
            # exact duplicate of an earlier file of the same kind
            src = prev[kind][rng.randrange(len(prev[kind]))]
            with open(src, "rb") as f:
                data = f.read()
            write_file(path, [data])
            deficit += size - len(data)
            size = len(data)
            ndup += 1
        else:
            if kind == "small" and deficit > 0:
                # make up for duplicates that were smaller than planned
                extra = min(deficit, SMALL_MAX - size)
                size += extra
                deficit -= extra
            write_file(path, content_chunks(pools, frng, cls, size))
            if kind != "large":
                small_medium.append(path)
                prev[kind].append(path)
        k = stats.setdefault((kind, cls), [0, 0])
        k[0] += 1
        k[1] += size
        written += size

    # a few empty files and relative symlinks
    nlinks = 0
    for i in range(8):
        d = dirs[rng.randrange(len(dirs))]
        open(os.path.join(out, d, f"empty-{i}.lock"), "wb").close()
    for i in range(6):
        src = small_medium[rng.randrange(len(small_medium))] if small_medium else None
        if src is None:
            break
        d = os.path.join(out, dirs[rng.randrange(len(dirs))])
        os.symlink(os.path.relpath(src, d), os.path.join(d, f"link-{i}"))
        nlinks += 1

    dt = time.time() - t0
    print(f"gen-tree: {out}: {len(files)} files + 8 empty + {nlinks} symlinks in "
          f"{len(dirs)} dirs, {human(written)} ({written} B), seed {a.seed}, "
          f"{ndup} duplicates, {dt:.1f}s")
    for kind in ("small", "medium", "large"):
        row = [(cls, v) for (k, cls), v in sorted(stats.items()) if k == kind]
        n = sum(v[0] for _, v in row)
        b = sum(v[1] for _, v in row)
        detail = ", ".join(f"{cls} {v[0]}/{human(v[1])}" for cls, v in row)
        print(f"  {kind:6s}: {n:6d} files {human(b):>10s} ({100 * b / max(written, 1):4.1f}%)"
              f"  [{detail}]")
    comp = sum(v[1] for (k, cls), v in stats.items() if cls in ("text", "json"))
    print(f"  compressible (text/json) bytes: {100 * comp / max(written, 1):.0f}% "
          f"(+ ~half of 'mixed')")


# --------------------------------------------------------------------------
# mutate
# --------------------------------------------------------------------------

def cmd_mutate(a):
    root = os.path.abspath(a.dir)
    t0 = time.time()
    rng = random.Random(f"{a.seed}:mutate:{a.round}")
    pools = Pools(a.seed)
    regular = []
    dirs = []
    for dp, dn, fn in os.walk(root):
        dn.sort()
        dirs.append(dp)
        for f in sorted(fn):
            p = os.path.join(dp, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            regular.append((p, os.path.getsize(p)))
    if not regular:
        sys.exit(f"gen-tree: no files under {root}")
    n = max(3, round(len(regular) * a.fraction))
    small = [p for p, s in regular if 0 < s <= SMALL_MAX]
    appendable = [p for p, s in regular if 0 < s <= 5 * MiB]
    large = sorted(((s, p) for p, s in regular), reverse=True)

    n_rewrite = max(1, int(n * 0.5))
    n_append = max(1, int(n * 0.4))
    n_new = max(1, n - n_rewrite - n_append - 1)

    rewrite = rng.sample(small, min(n_rewrite, len(small)))
    rest = sorted(set(appendable) - set(rewrite))
    append = rng.sample(rest, min(n_append, len(rest)))
    changed_bytes = 0

    for p in rewrite:
        size = max(1, int(os.path.getsize(p) * rng.uniform(0.8, 1.25)))
        frng = random.Random(f"{a.seed}:mutate:{a.round}:{p[len(root):]}")
        write_file(p, content_chunks(pools, frng, class_of(p), size))
        changed_bytes += size
    for p in append:
        cls = class_of(p)
        k = rng.randint(256, 16 * KiB)
        frng = random.Random(f"{a.seed}:append:{a.round}:{p[len(root):]}")
        with open(p, "ab") as f:
            for c in content_chunks(pools, frng, "random" if cls == "random" else "text", k):
                f.write(c)
        changed_bytes += k
    new = []
    for i in range(n_new):
        d = dirs[rng.randrange(len(dirs))]
        cls = rng.choice(["text", "json", "random"])
        p = os.path.join(d, f"new-r{a.round}-{i:03d}{rng.choice(EXT[cls])}")
        size = int(KiB * (64 ** rng.random()))
        frng = random.Random(f"{a.seed}:new:{a.round}:{i}")
        write_file(p, content_chunks(pools, frng, cls, size))
        new.append(p)
        changed_bytes += size

    # insert a few bytes in the middle of the largest (or 2nd largest) file
    lsize, lpath = large[rng.randrange(min(2, len(large)))]
    off = int(lsize * rng.uniform(0.4, 0.6))
    ins = rng.randbytes(rng.randint(1, 64))
    tmp = lpath + ".gen-tree-tmp"
    with open(lpath, "rb") as src, open(tmp, "wb") as dst:
        left = off
        while left > 0:
            buf = src.read(min(BLOCK, left))
            if not buf:
                break
            dst.write(buf)
            left -= len(buf)
        dst.write(ins)
        while True:
            buf = src.read(BLOCK)
            if not buf:
                break
            dst.write(buf)
    os.chmod(tmp, os.stat(lpath).st_mode & 0o7777)
    os.replace(tmp, lpath)

    print(f"gen-tree mutate: {root} round {a.round}: of {len(regular)} files rewrote "
          f"{len(rewrite)} small, appended to {len(append)}, added {len(new)} new, "
          f"inserted {len(ins)} B at offset {off} of {os.path.relpath(lpath, root)} "
          f"({human(lsize)}); ~{human(changed_bytes)} new data, {time.time() - t0:.1f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="generate a tree")
    g.add_argument("dir")
    g.add_argument("size", type=parse_size, help="total bytes, e.g. 300M, 2G")
    g.add_argument("--seed", type=int, default=42)
    m = sub.add_parser("mutate", help="change ~1%% of the files")
    m.add_argument("dir")
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--round", type=int, default=1,
                   help="mutation round (different rounds change different files)")
    m.add_argument("--fraction", type=float, default=0.01)
    a = ap.parse_args()
    if a.cmd == "gen":
        cmd_gen(a)
    else:
        cmd_mutate(a)


if __name__ == "__main__":
    main()
