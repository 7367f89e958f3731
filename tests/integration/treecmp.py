#!/usr/bin/env python3
"""Compare two directory trees the way a restore must reproduce them.

usage: treecmp.py [--skip-special] [--no-root-mtime] SRC DST
       treecmp.py --snapshot FILE DIR

SRC is a directory or @FILE written earlier by --snapshot (the tree as it was then).
Compared per entry: presence, type, permission bits (with setuid/setgid/sticky), uid,
gid, mtime in nanoseconds, size and SHA-256 of regular files, symlink targets, device
numbers, xattrs (names and values), and sparseness (DST may not allocate more than SRC
plus a little slack). Across entries: paths that share an inode in SRC share one in DST,
and no others do.

Works on names as bytes (non-UTF-8 names) and through directory descriptors, so paths
longer than PATH_MAX are fine. Exits 0 when the trees match, 1 otherwise, printing one
line per difference and a summary line last.
"""
import hashlib
import json
import os
import stat
import sys

SPARSE_SLACK_BLOCKS = 2048  # 1 MiB in 512-byte blocks: filesystem preallocation, tails


def show(rel):
    """A printable, unambiguous rendering of a byte path."""
    s = rel.decode("utf-8", "backslashreplace").replace("\n", "\\n")
    if len(s) > 120:
        s = s[:50] + "...(%d bytes)..." % len(rel) + s[-50:]
    return s


def hash_fd(fd):
    h = hashlib.sha256()
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return h.hexdigest()
        h.update(b)


def describe(dirfd, name, rel):
    """Metadata of one entry, as a JSON-friendly dict."""
    st = os.lstat(name, dir_fd=dirfd)
    e = {
        "type": stat.S_IFMT(st.st_mode),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "ino": [st.st_dev, st.st_ino],
        "nlink": st.st_nlink,
        "blocks": st.st_blocks,
    }
    # xattrs through /proc/self/fd: short path, works for any entry type and length
    via = b"/proc/self/fd/%d/%s" % (dirfd, name) if name != b"." else b"/proc/self/fd/%d" % dirfd
    x = {}
    try:
        for k in sorted(os.listxattr(via, follow_symlinks=False)):
            x[k] = os.getxattr(via, k, follow_symlinks=False).hex()
    except OSError as ex:
        x = {"<error>": str(ex)}
    e["xattrs"] = x
    if stat.S_ISREG(st.st_mode):
        e["size"] = st.st_size
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
        try:
            e["sha256"] = hash_fd(fd)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        e["target"] = os.fsdecode(os.readlink(name, dir_fd=dirfd))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        e["rdev"] = st.st_rdev
    return e


def scan(root):
    """{relative path (str, surrogateescape): entry} for root and everything below."""
    root = os.fsencode(root)
    tree = {}
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        tree["."] = describe(top, b".", b".")
    finally:
        os.close(top)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        reldir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = name if reldir == b"." else reldir + b"/" + name
            tree[os.fsdecode(rel)] = describe(dirfd, name, rel)
    return tree


def load(arg):
    if arg.startswith("@"):
        with open(arg[1:]) as f:
            return json.load(f)
    return scan(arg)


def kind(t):
    return {
        stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
        stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
        stat.S_IFBLK: "blockdev",
    }.get(t, "type %o" % t)


def is_special(e):
    return e["type"] in (stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


def compare(src, dst, skip_special, root_mtime):
    diffs = []

    def d(path, msg):
        diffs.append("%s: %s" % (show(os.fsencode(path)), msg))

    for path in sorted(src):
        s = src[path]
        if skip_special and is_special(s):
            if path in dst:
                d(path, "%s was restored; it must be skipped" % kind(s["type"]))
            continue
        if path not in dst:
            d(path, "missing in DST (%s)" % kind(s["type"]))
            continue
        t = dst[path]
        if s["type"] != t["type"]:
            d(path, "type %s, want %s" % (kind(t["type"]), kind(s["type"])))
            continue
        if s["mode"] != t["mode"]:
            d(path, "mode %04o, want %04o" % (t["mode"], s["mode"]))
        if (s["uid"], s["gid"]) != (t["uid"], t["gid"]):
            d(path, "owner %d:%d, want %d:%d" % (t["uid"], t["gid"], s["uid"], s["gid"]))
        if s["mtime_ns"] != t["mtime_ns"] and (root_mtime or path != "."):
            d(path, "mtime_ns %d, want %d" % (t["mtime_ns"], s["mtime_ns"]))
        if s["xattrs"] != t["xattrs"]:
            d(path, "xattrs %s, want %s" % (t["xattrs"], s["xattrs"]))
        if s["type"] == stat.S_IFREG:
            if s["size"] != t["size"]:
                d(path, "size %d, want %d" % (t["size"], s["size"]))
            elif s["sha256"] != t["sha256"]:
                d(path, "content differs (sha256 %s, want %s)" % (t["sha256"][:16], s["sha256"][:16]))
            if t["blocks"] > s["blocks"] + SPARSE_SLACK_BLOCKS:
                d(path, "not sparse: %d blocks allocated, source has %d" % (t["blocks"], s["blocks"]))
        if s["type"] == stat.S_IFLNK and s["target"] != t["target"]:
            d(path, "symlink to %r, want %r" % (t["target"], s["target"]))
        if "rdev" in s and s["rdev"] != t.get("rdev"):
            d(path, "device %s, want %s" % (t.get("rdev"), s["rdev"]))
    for path in sorted(dst):
        if path not in src:
            d(path, "extra in DST (%s)" % kind(dst[path]["type"]))

    # hard links: group non-directories by inode, compare the groups
    def groups(tree, keep):
        g = {}
        for path, e in tree.items():
            if e["type"] != stat.S_IFDIR and path in keep:
                g.setdefault(tuple(e["ino"]), set()).add(path)
        return {frozenset(v) for v in g.values() if len(v) > 1}

    common = set(src) & set(dst)
    sg, dg = groups(src, common), groups(dst, common)
    for grp in sorted(sg - dg, key=sorted):
        diffs.append("hard links not preserved: %s" % ", ".join(show(os.fsencode(p)) for p in sorted(grp)))
    for grp in sorted(dg - sg, key=sorted):
        diffs.append("unexpected hard links: %s" % ", ".join(show(os.fsencode(p)) for p in sorted(grp)))
    return diffs


def main(argv):
    args = argv[1:]
    if args[:1] == ["--snapshot"]:
        if len(args) != 3:
            sys.exit(__doc__)
        with open(args[1], "w") as f:
            json.dump(scan(args[2]), f)
        return 0
    skip_special = "--skip-special" in args
    root_mtime = "--no-root-mtime" not in args
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 2:
        sys.exit(__doc__)
    src, dst = load(paths[0]), load(paths[1])
    diffs = compare(src, dst, skip_special, root_mtime)
    for line in diffs[:60]:
        print(line)
    if len(diffs) > 60:
        print("... and %d more differences" % (len(diffs) - 60))
    nlinks = sum(1 for e in src.values() if e["type"] != stat.S_IFDIR and e["nlink"] > 1)
    print("%d entries compared, %d hard-linked, %d differences" % (len(src), nlinks, len(diffs)))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
