# shellcheck shell=bash
# cg_cpu_ns DIR: the CPU nanoseconds cgroup DIR has used (v1: cpuacct.usage; v2: cpu.stat's
# usage_usec) in CG_NS, empty when DIR has neither. Builtins only, no process per call: lib.sh
# calls it at every result (CARIS_TEST_CPU=1), run.sh at every test's end.
# shellcheck disable=SC2034 # CG_NS is read by the caller
cg_cpu_ns() {
    CG_NS=""
    local k v
    if [[ -e $1/cpuacct.usage ]]; then
        read -r CG_NS <"$1/cpuacct.usage"
    elif [[ -e $1/cpu.stat ]]; then
        while read -r k v; do
            [[ $k == usage_usec ]] && { CG_NS=$((v * 1000)); break; }
        done <"$1/cpu.stat"
    fi
    return 0
}
