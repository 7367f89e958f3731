#!/usr/bin/env python3
"""Generates the man page and the shell completions of caris-backup from its --help text.

usage: gen-docs.py man|bash|zsh BINARY OUTPUT
       gen-docs.py subst PREFIX INPUT OUTPUT

The build runs this (dist/meson.build) with the binary it has just built, so the man page
and the completions say what `caris-backup --help` and every `caris-backup COMMAND --help`
say: one text, written once, in src/cli. The commands are the entries of the "Commands:"
section of `--help`; a command's options are the --options its own `--help` names.

`subst` rewrites the /usr/local paths of a systemd unit for another installation prefix.
"""
import os
import re
import subprocess
import sys

ID_COMMANDS = {"verify", "show", "ls", "dump", "diff", "test-restore", "restore files", "restore database"}


def run_help(binary, words, required=True):
    # A clean environment: no .env.local or configuration of the build's caller matters.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    p = subprocess.run([binary] + words + ["--help"], capture_output=True, env=env, cwd="/", check=False)
    if p.returncode != 0 or not p.stdout.strip():
        if not required:
            return None
        sys.exit(f"gen-docs: `{' '.join(['caris-backup'] + words)} --help` failed (exit {p.returncode}): "
                 f"{p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode("utf-8")


def sections(text):
    """The top-level help as [(title, [lines])]: a title is an unindented line ending in ':'."""
    out = [("", [])]
    for line in text.rstrip("\n").split("\n"):
        if line and not line[0].isspace() and line.endswith(":"):
            out.append((line[:-1], []))
        else:
            out[-1][1].append(line)
    return out


def section(top, title):
    for t, lines in sections(top):
        if t == title:
            return lines
    sys.exit(f"gen-docs: `caris-backup --help` has no \"{title}:\" section (the man page and the "
             "completions are generated from it: dist/gen-docs.py)")


def commands(top):
    """The command invocations of the Commands section, in order: ['init', 'backup files', ...]."""
    body = section(top, "Commands")
    cmds = []
    for line in body:
        m = re.match(r"^  ([a-z][a-z-]*)(?: ([a-z][a-z|-]*)(?=\s|$))?", line)
        if not m:
            continue
        first = m.group(1)
        names = [first] if not m.group(2) else [first + " " + s for s in m.group(2).split("|")]
        # `key list | key add ... | key remove ID`, `audit [--since T] | audit verify`
        for alt in re.findall(r"\| %s ([a-z][a-z-]*)" % re.escape(first), line):
            names.append(first + " " + alt)
        for name in names:
            if name not in cmds:
                cmds.append(name)
    return cmds


def options_of(text):
    seen = []
    for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text):
        if o not in seen:
            seen.append(o)
    return seen


def collect(binary):
    top = run_help(binary, [])
    cmds = commands(top)
    helps = {}
    for c in cmds:
        # `token list --help` is `token --help`: a subcommand may not take --help itself
        w = c.split()
        helps[c] = run_help(binary, w, required=len(w) == 1)
        if helps[c] is None:
            helps[c] = run_help(binary, w[:1])
    return top, cmds, helps


# --- man -------------------------------------------------------------------------------

def roff_text(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    s = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in s)
    if s[:1] in (".", "'"):
        s = "\\&" + s
    return s


def roff_block(lines):
    """Help text as roff: unindented paragraphs are filled, indented lines kept as they are."""
    out = []
    para = []
    pre = []

    def flush():
        if para:
            out.append(".PP")
            out.extend(roff_text(l) for l in para)
            para.clear()
        if pre:
            out.append(".PP")
            out.append(".nf")
            out.extend(roff_text(l) for l in pre)
            out.append(".fi")
            pre.clear()

    usage = False  # a usage block (to the next blank line) keeps its line breaks
    for line in lines:
        if not line.strip():
            flush()
            usage = False
        elif usage or line.startswith("usage:"):
            if para:
                flush()
            usage = True
            pre.append(line)
        elif line[0].isspace():
            if para:
                flush()
            pre.append(line)
        else:
            if pre:
                flush()
            para.append(line)
    flush()
    return out


def gen_man(binary, version):
    top, cmds, helps = collect(binary)
    secs = sections(top)
    out = [
        '.TH CARIS\\-BACKUP 1 "" "caris\\-backup %s" "User Commands"' % roff_text(version),
        ".SH NAME",
        "caris\\-backup \\- encrypted, deduplicating, verifiable backups of files and PostgreSQL",
        ".SH SYNOPSIS",
    ]
    intro = secs[0][1]
    usage = [l for l in intro if l.startswith("usage:")]
    out.append(".nf")
    out.extend(roff_text(l[len("usage: "):]) for l in usage)
    out.append(".fi")
    out.append(".SH DESCRIPTION")
    out.extend(roff_block([l for l in intro if not l.startswith("usage:")]))
    titles = {"Commands": "COMMANDS", "Options": "OPTIONS", "Exit codes": "EXIT STATUS"}
    for title, lines in secs[1:]:
        name = titles.get(title)
        if name is None and title.startswith("Environment"):
            name = "ENVIRONMENT"
            rest = title[len("Environment"):].strip()
            lines = ([rest.strip("()").capitalize() + "."] if rest else []) + [""] + lines
        if name is None:
            name = title.upper()
        out.append(".SH " + roff_text(name))
        out.extend(roff_block(lines))
        if name == "COMMANDS":
            out.append(".PP")
            out.append("Each command is described below, as `caris\\-backup COMMAND \\-\\-help` prints it.")
            seen = {}
            for c in cmds:
                h = helps[c]
                if h in seen:  # e.g. `schedule --help` prints `schedule next --help`
                    continue
                seen[h] = c
                # `key list`, `key add`, `key remove` share one help: its title is `key`
                first = c.split()[0]
                same = all(helps[d] == h for d in cmds if d.split()[0] == first)
                out.append(".SS " + roff_text(first if same else c))
                out.extend(roff_block(h.rstrip("\n").split("\n")))
    out += [
        ".SH FILES",
        ".TP",
        ".I /etc/caris\\-backup/env",
        "the configuration of the installed service and timers (mode 0600, root); an example "
        "is installed beside it as env.example",
        ".TP",
        ".I ./.env.local",
        "variables read when \\-\\-env\\-file is not given",
        ".TP",
        ".I /var/backups/caris",
        "the default BACKUP_DIR: repository/, metadata/, temp/",
        ".SH SEE ALSO",
        "README.md and BACKUP_RECOVERY.md in the documentation directory "
        "(/usr/local/share/doc/caris\\-backup);",
        "the systemd units caris\\-backup.service, caris\\-backup\\-run@.service and "
        "caris\\-backup\\-{daily,weekly,monthly}.timer;",
        ".BR systemctl (1),",
        ".BR journalctl (1)",
    ]
    return "\n".join(out) + "\n"


# --- completions -----------------------------------------------------------------------

def global_options(top):
    body = section(top, "Options")
    return [o for o in options_of("\n".join(l for l in body if re.match(r"^  -", l))) if o != "--help"] + ["--help"]


def completion_table(binary):
    top, cmds, helps = collect(binary)
    first = []
    subs = {}
    for c in cmds:
        w = c.split()
        if w[0] not in first:
            first.append(w[0])
        if len(w) == 2:
            subs.setdefault(w[0], []).append(w[1])
    opts = {}
    for c in cmds:
        opts[c] = options_of(helps[c]) + (["--help"] if "--help" not in options_of(helps[c]) else [])
    # a command with subcommands also takes the options of its own --help (e.g. `key`)
    return global_options(top), first, subs, opts


def gen_bash(binary):
    gopts, first, subs, opts = completion_table(binary)
    lines = [
        "# bash completion for caris-backup (generated from its --help by dist/gen-docs.py)",
        "# shellcheck shell=bash",
        "",
        "# _caris_backup_ids: backup ids (and latest) from `caris-backup --json list`, with the",
        "# --env-file and --repo given on the command line; nothing when no repository answers.",
        "_caris_backup_ids() {",
        "    local args=() i",
        "    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do",
        '        case ${COMP_WORDS[i]} in',
        '        --env-file | --repo) args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;',
        '        --env-file=* | --repo=*) args+=("${COMP_WORDS[i]}") ;;',
        "        esac",
        "    done",
        '    printf "%s\\n" latest latest:files latest:database',
        '    timeout 5 "${COMP_WORDS[0]}" "${args[@]}" --quiet --json list 2>/dev/null |',
        "        grep -o '\"\\(backupId\\|id\\)\": *\"[^\"]*\"' | sed 's/.*\"\\([^\"]*\\)\"$/\\1/'",
        "}",
        "",
        "_caris_backup() {",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}',
        "    COMPREPLY=()",
        '    case $prev in',
        "    --env-file | --exclude-file)",
        '        mapfile -t COMPREPLY < <(compgen -f -- "$cur")',
        "        return",
        "        ;;",
        "    --repo | --target)",
        '        mapfile -t COMPREPLY < <(compgen -d -- "$cur")',
        "        return",
        "        ;;",
        "    --type)",
        '        mapfile -t COMPREPLY < <(compgen -W "files database" -- "$cur")',
        "        return",
        "        ;;",
        "    --scratch)",
        '        mapfile -t COMPREPLY < <(compgen -W "database local" -- "$cur")',
        "        return",
        "        ;;",
        "    esac",
        "    # the command: the first word that is not an option (or an option's value)",
        "    local i w cmd='' sub='' nargs=0",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        w=${COMP_WORDS[i]}',
        '        case $w in',
        "        --env-file | --repo | --threads | --lock-wait) ((i++)); continue ;;",
        "        -*) continue ;;",
        "        esac",
        '        if [[ -z $cmd ]]; then',
        '            cmd=$w',
        '        elif [[ -z $sub ]] && case $cmd in %s) true ;; *) false ;; esac; then' % (" | ".join(sorted(subs)) or "''"),
        '            sub=$w',
        "        else",
        "            ((nargs++))",
        "        fi",
        "    done",
        '    if [[ -z $cmd ]]; then',
        '        if [[ $cur == -* ]]; then',
        '            mapfile -t COMPREPLY < <(compgen -W "%s" -- "$cur")' % " ".join(gopts),
        "        else",
        '            mapfile -t COMPREPLY < <(compgen -W "%s" -- "$cur")' % " ".join(first),
        "        fi",
        "        return",
        "    fi",
        '    local key=$cmd',
        '    [[ -n $sub ]] && key="$cmd $sub"',
        '    case $key in',
    ]
    for c in sorted(subs):
        lines.append('    "%s")' % c)
        lines.append('        if [[ $cur != -* ]]; then')
        lines.append('            mapfile -t COMPREPLY < <(compgen -W "%s" -- "$cur")' % " ".join(subs[c]))
        lines.append("            return")
        lines.append("        fi")
        lines.append("        ;;")
    lines.append("    esac")
    lines.append('    if [[ $cur == -* ]]; then')
    lines.append('        case $key in')
    for c, o in opts.items():
        lines.append('        "%s") mapfile -t COMPREPLY < <(compgen -W "%s %s" -- "$cur") ;;' % (c, " ".join(o), " ".join(x for x in gopts if x not in o)))
    lines.append('        *) mapfile -t COMPREPLY < <(compgen -W "%s" -- "$cur") ;;' % " ".join(gopts))
    lines.append("        esac")
    lines.append("        return")
    lines.append("    fi")
    lines.append('    case $key in')
    lines.append('    %s)' % " | ".join('"%s"' % c for c in sorted(ID_COMMANDS)))
    lines.append('        mapfile -t COMPREPLY < <(compgen -W "$(_caris_backup_ids)" -- "$cur")')
    lines.append("        ;;")
    lines.append('    "backup files" | mount)')
    lines.append('        mapfile -t COMPREPLY < <(compgen -d -- "$cur")')
    lines.append("        ;;")
    lines.append("    esac")
    lines.append("}")
    lines.append("complete -F _caris_backup caris-backup")
    return "\n".join(lines) + "\n"


def zsh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def gen_zsh(binary):
    gopts, first, subs, opts = completion_table(binary)
    top = run_help(binary, [])
    # one-line descriptions of the commands, from the Commands section
    desc = {}
    body = section(top, "Commands")
    pending = None
    for line in body:
        m = re.match(r"^  ([a-z][a-z-]*)", line)
        if m:
            pending = m.group(1)
            d = re.search(r"\S\s{2,}(\S.*)$", line)
            if d and pending not in desc:
                desc[pending] = d.group(1)
                pending = None
        elif pending and re.match(r"^\s{20,}\S", line) and not line.strip().startswith("["):
            desc.setdefault(pending, line.strip())
            pending = None
    lines = [
        "#compdef caris-backup",
        "# zsh completion for caris-backup (generated from its --help by dist/gen-docs.py)",
        "",
        "_caris_backup() {",
        "  local -a cmds words_left",
        "  cmds=(",
    ]
    for c in first:
        lines.append("    %s" % zsh_quote("%s:%s" % (c, desc.get(c, c).replace(":", "\\:"))))
    lines += [
        "  )",
        "  local i cmd sub",
        "  for ((i = 2; i < CURRENT; i++)); do",
        "    case ${words[i]} in",
        "    --env-file|--repo|--threads|--lock-wait) ((i++)); continue ;;",
        "    -*) continue ;;",
        "    esac",
        "    if [[ -z $cmd ]]; then cmd=${words[i]}",
        "    elif [[ -z $sub ]]; then sub=${words[i]}; fi",
        "  done",
        "  if [[ -z $cmd ]]; then",
        "    if [[ ${words[CURRENT]} == -* ]]; then",
        "      compadd -- %s" % " ".join(gopts),
        "    else",
        "      _describe -t commands 'caris-backup command' cmds",
        "    fi",
        "    return",
        "  fi",
        "  case $cmd in",
    ]
    for c in sorted(subs):
        lines.append("  %s)" % c)
        lines.append("    if [[ -z $sub && ${words[CURRENT]} != -* ]]; then compadd -- %s; return; fi" % " ".join(subs[c]))
        lines.append("    ;;")
    lines += [
        "  esac",
        "  local key=$cmd",
        "  [[ -n $sub && -n ${subs_of[$cmd]-} ]] && key=\"$cmd $sub\"",
        "  if [[ ${words[CURRENT]} == -* ]]; then",
        "    case $key in",
    ]
    for c, o in opts.items():
        lines.append("    %s) compadd -- %s ;;" % (zsh_quote(c), " ".join(o + [x for x in gopts if x not in o])))
    lines += [
        "    *) compadd -- %s ;;" % " ".join(gopts),
        "    esac",
        "    return",
        "  fi",
        "  case $key in",
        "  %s)" % "|".join(zsh_quote(c) for c in sorted(ID_COMMANDS)),
        "    # backup ids from `caris-backup --json list`, with the --env-file and --repo given",
        "    local -a args ids",
        "    for ((i = 2; i < CURRENT; i++)); do",
        "      case ${words[i]} in",
        "      --env-file|--repo) args+=(${words[i]} ${words[i+1]}) ;;",
        "      --env-file=*|--repo=*) args+=(${words[i]}) ;;",
        "      esac",
        "    done",
        "    ids=(latest latest:files latest:database ${(f)\"$(timeout 5 ${words[1]} $args --quiet --json list 2>/dev/null |",
        "      grep -o '\"\\(backupId\\|id\\)\": *\"[^\"]*\"' | sed 's/.*\"\\([^\"]*\\)\"$/\\1/')\"})",
        "    compadd -- ${ids:#}",
        "    ;;",
        "  'backup files'|mount) _files -/ ;;",
        "  *) _files ;;",
        "  esac",
        "}",
        "",
        "typeset -gA subs_of",
        "subs_of=(%s)" % " ".join("%s 1" % c for c in sorted(subs)),
        "",
        '_caris_backup "$@"',
    ]
    return "\n".join(lines) + "\n"


def subst(prefix, src, dst):
    with open(src, encoding="utf-8") as f:
        text = f.read()
    if prefix.rstrip("/") != "/usr/local":
        text = text.replace("/usr/local/", prefix.rstrip("/") + "/")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "subst":
        subst(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if len(sys.argv) != 4 or sys.argv[1] not in ("man", "bash", "zsh"):
        sys.exit(__doc__)
    mode, binary, output = sys.argv[1:]
    binary = os.path.abspath(binary)
    if mode == "man":
        v = subprocess.run([binary, "version"], capture_output=True, cwd="/", check=False).stdout.decode()
        m = re.search(r"caris-backup (\S+)", v)
        text = gen_man(binary, m.group(1) if m else "")
    elif mode == "bash":
        text = gen_bash(binary)
    else:
        text = gen_zsh(binary)
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)


if __name__ == "__main__":
    main()
