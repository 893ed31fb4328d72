#!/bin/bash
# mapdirect emulated persistent-memory test tier (issue 6).
#
# Boots Debian's own kernel under QEMU (TCG) with emulated persistent memory,
# runs mapdirect's static test binaries on a real DAX (or non-DAX) file system
# and reports the results here, then runs a power-loss test: QEMU is killed
# with SIGKILL while examples/durable_log appends records, the guest is booted
# again and a checker verifies that no acknowledged record was lost.
#
#   tests/vm/run.sh --bin-dir DIR --config ext4-nfit-memctrl
#   tests/vm/run.sh --bin-dir DIR --all
#   tests/vm/run.sh --list
#   tests/vm/run.sh --image-only            # build/cache the guest image only
#
# DIR holds the static binaries mapdirect_tests, durable_log, mapdirect-info
# and nc_writer, and the dynamically linked mapdirect_pmem2_tests (carried
# into the guest with its shared libraries); the CMake target
# mapdirect_vm_binaries builds them into BUILD/tests/vm/bin when configured
# with -DMAPDIRECT_VM_TESTS=ON.
#
# Options:
#   --config NAME       run one configuration (repeatable)
#   --all               run every configuration
#   --bin-dir DIR       static binaries (default: $MAPDIRECT_VM_BIN_DIR)
#   --work-dir DIR      images and logs (default: BIN_DIR/../work)
#   --cache-dir DIR     guest image cache
#                       (default: ${XDG_CACHE_HOME:-$HOME/.cache}/mapdirect-vm)
#   --kills N           power-loss kills per configuration (default 6, min 5)
#   --jobs N            configurations run at once with --all (default: nproc)
#   --seed N            seed for the kill moments (default: random, printed)
#   --no-suite          skip the test-suite boot
#   --no-powerloss      skip the power-loss cycles
#   --extra FILE        another static binary to run in every configuration
#                       (repeatable; must exit 0)
#   --steps FILE        run FILE in the guest instead of the suite (a busybox sh
#                       script calling `step NAME COMMAND...`; /payload/bin is
#                       on PATH, the file system is mounted on /mnt, cwd /mnt);
#                       implies --no-powerloss. With --extra, for debugging.
#   --negative-control  power-loss cycles only, with a writer that acknowledges
#                       records that are not durable (nc_writer: MAP_SHARED
#                       without MAP_SYNC plus a CPU cache flush on the pmem
#                       configurations, pwrite without fdatasync on
#                       virtio-blk); passes only if the checker catches lost
#                       acknowledged records. Every configuration has one.
#   --nc-method M       nc_writer method for --negative-control: mmap | pwrite
#                       (default: pwrite on virtio-blk, mmap elsewhere)
#   --self-test         check the tier's own checks: one boot that breaks each
#                       rule (a filter matching nothing, a kernel WARNING:, a
#                       step that never runs) plus canned recoveries with a
#                       wrong stop= or a lost record; passes if all are caught
#
# Environment: MAPDIRECT_VM_EXCLUDE (Catch2 tag expression appended to every
# test filter, e.g. '~[async]'), MAPDIRECT_VM_REQUIRE_TAGS (0: a missing
# required group, [async] [seal] [locks] and on NFIT [poison], is a note
# instead of a failure), MAPDIRECT_VM_STEP_TIMEOUT (seconds per guest step,
# default 300; MAPDIRECT_VM_GROUP_TIMEOUT, default 180, for the groups),
# MAPDIRECT_VM_SMP (vCPUs, default 1), MAPDIRECT_VM_KILLS, MAPDIRECT_VM_SEED,
# MAPDIRECT_VM_BIN_DIR, MAPDIRECT_VM_WORK_DIR, MAPDIRECT_VM_CACHE_DIR,
# MAPDIRECT_VM_SQLITE (0: no SQLite power cuts, tests/vm/lib/powerloss-sqlite.sh),
# MAPDIRECT_VM_SQLITE_BENCH (its benchmark's options; 0: none).
# MAPDIRECT_VM_ROCKSDB (0: no RocksDB power cuts, tests/vm/lib/powerloss-rocksdb.sh).
#
# Besides the steps' exit statuses, a configuration fails when the guest
# kernel console shows BUG:, WARNING:, Oops or a general protection fault,
# when a generated step did not run, when a recovery stops for a reason other
# than end/torn/full, or when the libpmem2 differential skipped on NFIT.
# Skipped tests (Catch2 warnings "skipped: ...") are listed with a count.
#
# Exit status: 0 when every selected configuration passed, 1 otherwise, 2 on a
# usage error. The tier never skips: if QEMU, the kernel package or the
# binaries are missing and cannot be installed, it fails.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQUIRED_BINS="mapdirect_tests durable_log mapdirect-info nc_writer"
# Linked dynamically (static libpmem2 needs ndctl archives Debian lacks).
PMEM2_BIN=mapdirect_pmem2_tests
PAYLOAD_BINS=            # what the next boot's initramfs carries (empty: all of BIN_DIR)
ALL_CONFIGS="ext4-nfit-memctrl xfs-nfit-cpu ext4-virtio-pmem ext4-virtio-blk devdax-nfit"

configs=()
bin_dir=${MAPDIRECT_VM_BIN_DIR:-}
work_dir=${MAPDIRECT_VM_WORK_DIR:-}
cache_dir=${MAPDIRECT_VM_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/mapdirect-vm}
kills=${MAPDIRECT_VM_KILLS:-6}
jobs=$(nproc 2>/dev/null || echo 2)
seed=${MAPDIRECT_VM_SEED:-}
do_suite=1
do_powerloss=1
image_only=0
negative=0
nc_method=
self_test=0
custom_steps=
extras=()

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "vm: FATAL: $*" >&2; exit 1; }
log() { echo "vm[${cfg:-*}] $(date +%H:%M:%S) $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --config) configs+=("$2"); shift 2 ;;
    --config=*) configs+=("${1#*=}"); shift ;;
    --all) configs=($ALL_CONFIGS); shift ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --cache-dir) cache_dir=$2; shift 2 ;;
    --kills) kills=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --no-suite) do_suite=0; shift ;;
    --no-powerloss) do_powerloss=0; shift ;;
    --extra) extras+=("$2"); shift 2 ;;
    --steps) custom_steps=$2; do_powerloss=0; shift 2 ;;
    --negative-control) negative=1; shift ;;
    --nc-method) nc_method=$2; shift 2 ;;
    --self-test) self_test=1; shift ;;
    --image-only) image_only=1; shift ;;
    --list) echo $ALL_CONFIGS | tr ' ' '\n'; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "vm: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------
# Configurations: what QEMU emulates, which file system, and what mapdirect
# must report there.
# ---------------------------------------------------------------------------
config_vars() {
    DEVDAX=0
    case "$1" in
    ext4-nfit-memctrl)
        DEVICE=nfit FS=ext4 DAX=1 EXPECT_MODE=sync EXPECT_GRAN=cache_line POISON=1
        PERSISTENCE=mem-ctrl EXPECT_DOMAIN=memory_controller ;;
    xfs-nfit-cpu)
        DEVICE=nfit FS=xfs DAX=1 EXPECT_MODE=sync EXPECT_GRAN=byte POISON=1
        PERSISTENCE=cpu EXPECT_DOMAIN=cpu_cache ;;
    ext4-virtio-pmem)
        DEVICE=virtio-pmem FS=ext4 DAX=1 EXPECT_MODE=shared EXPECT_GRAN=page POISON=0
        PERSISTENCE= EXPECT_DOMAIN= ;;
    ext4-virtio-blk)
        DEVICE=virtio-blk FS=ext4 DAX=0 EXPECT_MODE=shared EXPECT_GRAN=page POISON=0
        PERSISTENCE= EXPECT_DOMAIN=none ;;
    # The NFIT namespace as device DAX (/dev/daxX.Y), no file system: the
    # [devdax] and host-translatable [badblocks] tests and mapdirect-info on
    # the raw device; power-loss cycles with durable_log on /dev/dax0.0.
    devdax-nfit)
        DEVICE=nfit FS=none DAX=1 EXPECT_MODE=sync EXPECT_GRAN=cache_line POISON=0
        PERSISTENCE=mem-ctrl EXPECT_DOMAIN=memory_controller DEVDAX=1 ;;
    *) return 1 ;;
    esac
}

# ---------------------------------------------------------------------------
# Host prerequisites, installed from Debian's archive when missing.
# ---------------------------------------------------------------------------
ensure_host_tools() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    [ -x /bin/busybox ] && file_is_static /bin/busybox || need+=(busybox-static)
    command -v mke2fs >/dev/null && command -v e2fsck >/dev/null || need+=(e2fsprogs)
    command -v mkfs.xfs >/dev/null && command -v xfs_repair >/dev/null || need+=(xfsprogs)
    command -v cpio >/dev/null || need+=(cpio)
    command -v xz >/dev/null || need+=(xz-utils)
    command -v depmod >/dev/null || need+=(kmod)
    command -v flock >/dev/null || need+=(util-linux)
    command -v apt-get >/dev/null || die "no apt-get: this tier needs a Debian host"
    if [ ${#need[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing packages ${need[*]} and not root to install them"
        echo "vm: installing ${need[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >&2 ||
            { apt-get update -q >&2 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >&2; } ||
            die "apt-get install ${need[*]} failed"
    fi
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
}
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# The real package behind linux-image-amd64 (e.g. linux-image-6.1.0-56-amd64).
kernel_package() {
    local p
    p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$p" ]; then
        apt-get update -q >&2 || true
        p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
    [ -n "$p" ] || die "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends)"
    echo "$p"
}

# Build (or reuse) the cached guest image; sets IMAGE_DIR.
ensure_image() {
    local kpkg key
    kpkg=$(kernel_package)
    key=$( { echo "$kpkg"; cat "$HERE/lib/build-image.sh" "$HERE/guest/init";
             dpkg-query -W busybox-static e2fsprogs xfsprogs 2>/dev/null; } | sha256sum | cut -c1-16)
    IMAGE_DIR="$cache_dir/image-$key"
    mkdir -p "$cache_dir" || die "cannot create $cache_dir"
    (
        flock 9
        if [ ! -f "$IMAGE_DIR/stamp" ]; then
            rm -rf "$IMAGE_DIR"
            "$HERE/lib/build-image.sh" "$IMAGE_DIR" "$kpkg" || exit 1
            date > "$IMAGE_DIR/stamp"
            # Older images (other kernel or guest scripts) are dead weight.
            for old in "$cache_dir"/image-*; do
                [ "$old" = "$IMAGE_DIR" ] || rm -rf "$old"
            done
        fi
    ) 9>"$cache_dir/lock" || die "building the guest image failed"
    KERNEL="$IMAGE_DIR/vmlinuz"
    [ -f "$IMAGE_DIR/vmlinux" ] && KERNEL="$IMAGE_DIR/vmlinux"
    log "guest image $IMAGE_DIR ($kpkg, kernel $(basename "$KERNEL"))"
}

# ---------------------------------------------------------------------------
# Booting
# ---------------------------------------------------------------------------
# put_bin FILE DIR: without debug information (nobody symbolizes in the
# guest; the initramfs stays in guest RAM and is unpacked at every boot).
put_bin() {
    strip --strip-debug -o "$2/$(basename "$1")" "$1" 2>/dev/null || cp "$1" "$2"
}

# make_initrd OUT ENVFILE STEPSFILE: the cached base image plus a payload.
make_initrd() {
    local out=$1 env=$2 steps=$3 p="$cfgdir/payload"
    rm -rf "$p"
    mkdir -p "$p/payload/bin"
    cp "$env" "$p/payload/env"
    cp "$steps" "$p/payload/steps"
    local b e
    if [ -n "$PAYLOAD_BINS" ]; then
        for b in $PAYLOAD_BINS; do put_bin "$bin_dir/$b" "$p/payload/bin/"; done
    else
        for b in "$bin_dir"/*; do [ -f "$b" ] && [ -x "$b" ] && put_bin "$b" "$p/payload/bin/"; done
        for e in "${extras[@]}"; do cp "$e" "$p/payload/bin/"; done
    fi
    # A dynamically linked binary brings its shared libraries (ldd) at their
    # own paths; the base image has ld.so and a few libraries already.
    for b in "$p"/payload/bin/*; do
        file_is_static "$b" && continue
        ldd "$b" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
            mkdir -p "$p$(dirname "$lib")" && cp -L "$lib" "$p$(dirname "$lib")/"
        done
    done
    (cd "$p" && find . -print0 | cpio --null -o -H newc --quiet) > "$cfgdir/payload.cpio" || return 1
    cat "$IMAGE_DIR/base.cpio" "$cfgdir/payload.cpio" > "$out"
}

qemu_args() {
    local img=$1
    local a=(-accel tcg -cpu max -smp "${MAPDIRECT_VM_SMP:-1}" -m 1G,slots=4,maxmem=4G -nodefaults
             -display none -no-reboot -kernel "$KERNEL")
    case "$DEVICE" in
    nfit)
        a+=(-machine "pc,nvdimm=on,nvdimm-persistence=$PERSISTENCE"
            -object "memory-backend-file,id=mem1,share=on,mem-path=$img,size=1G"
            -device nvdimm,id=nv1,memdev=mem1) ;;
    virtio-pmem)
        a+=(-machine pc
            -object "memory-backend-file,id=mem1,share=on,mem-path=$img,size=1G"
            -device virtio-pmem-pci,memdev=mem1,id=vp1) ;;
    virtio-blk)
        # cache=writeback: what the guest wrote reaches the host file (page
        # cache), which survives a SIGKILL of QEMU; what the guest kept in
        # its own page cache does not.
        a+=(-machine pc -drive "file=$img,format=raw,if=virtio,cache=writeback") ;;
    esac
    printf '%s\n' "${a[@]}"
}

# boot NAME ENV STEPS [KILL]: boot once; results in $cfgdir/NAME.results,
# console in $cfgdir/NAME.console. With KILL=1 the host kills QEMU (SIGKILL) at
# a random moment after the first acknowledged record.
# Sets BOOT_STATUS to exited|killed|timeout.
boot() {
    local name=$1 env=$2 steps=$3 kill=${4:-0} timeout_s=${5:-900}
    local res="$cfgdir/$name.results" con="$cfgdir/$name.console"
    rm -f "$res" "$con"
    make_initrd "$cfgdir/initrd" "$env" "$steps" || die "cannot make the initramfs"
    local args
    mapfile -t args < <(qemu_args "$cfgdir/disk.img")
    local t0=$SECONDS
    qemu-system-x86_64 "${args[@]}" -initrd "$cfgdir/initrd" \
        -serial "file:$con" -serial "file:$res" \
        -append "console=ttyS0 panic=-1 loglevel=5 no_timer_check" \
        >"$cfgdir/$name.qemu" 2>&1 &
    local pid=$!
    # (no_timer_check: on a busy host a TCG guest's IO-APIC timer check can
    # miss its window and panic "IO-APIC + timer doesn't work!"; KVM guests
    # skip that check the same way.)
    BOOT_STATUS=exited
    if [ "$kill" = 1 ]; then
        # Wait for the writer's first ack, then kill at a random moment.
        local waited=0
        while kill -0 $pid 2>/dev/null && ! grep -q '^ack ' "$res" 2>/dev/null; do
            sleep 0.2
            waited=$((waited + 1))
            [ $waited -gt 900 ] && break
        done
        if kill -0 $pid 2>/dev/null; then
            # 0.05 s .. 2.5 s after the first ack.
            local ms=$(( (RANDOM % 2450) + 50 ))
            sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
            if kill -9 $pid 2>/dev/null; then
                BOOT_STATUS=killed
                KILL_DELAY_MS=$ms
            fi
        fi
        wait $pid 2>/dev/null
    else
        local deadline=$((SECONDS + timeout_s))
        while kill -0 $pid 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then
                kill -9 $pid 2>/dev/null
                BOOT_STATUS=timeout
                break
            fi
            sleep 0.5
        done
        wait $pid 2>/dev/null
        local rc=$?
        if [ "$BOOT_STATUS" = exited ] && [ $rc -ne 0 ]; then
            log "qemu exited with status $rc:"
            sed 's/^/    qemu: /' "$cfgdir/$name.qemu"
        fi
    fi
    sed -i 's/\r$//' "$res" 2>/dev/null
    BOOT_SECONDS=$((SECONDS - t0))
    scan_console "$name"
}

# scan_console NAME: the guest kernel must not report a bug. loglevel=5 puts
# KERN_WARNING (WARN_ON's "WARNING: CPU: ...") and everything more severe on
# the console; a killed boot's console is scanned as far as it got.
# Sets CONSOLE_BAD=1 (sticky for the configuration) on a hit.
CONSOLE_BAD=0
CONSOLE_PATTERN='BUG:|WARNING:|Oops|general protection|Kernel panic|kernel BUG at|UBSAN:'
scan_console() {
    local con="$cfgdir/$1.console" hits
    hits=$(grep -E -n -- "$CONSOLE_PATTERN" "$con" 2>/dev/null | head -n 20)
    [ -n "$hits" ] || return 0
    CONSOLE_BAD=1
    log "FAIL kernel console ($1): the guest kernel reported a problem:"
    echo "$hits" | sed 's/^/    console: /'
    local first
    first=$(echo "$hits" | head -n1 | cut -d: -f1)
    log "---- console around it ($con) ----"
    sed -n "$((first > 5 ? first - 5 : 1)),$((first + 40))p" "$con" | sed 's/^/    console: /'
}

# section RESULTS STEP: the output of one step.
# Always succeeds: under pipefail, `section ... | grep -q` would otherwise
# fail whenever grep matched early and awk met the closed pipe (SIGPIPE); a
# CI run failed on that ("no comparison of byte" with the line right there).
section() {
    awk -v s="$2" '$0 == "@@MD BEGIN " s { on = 1; next }
                   on && index($0, "@@MD END " s " rc=") == 1 { exit }
                   on { print }' "$1" || true
}
step_rc() { sed -n "s/^@@MD END $2 rc=\([0-9]*\)\( .*\)\{0,1\}\$/\1/p" "$1" | tail -n1; }

show_console() {
    if [ -s "$cfgdir/$1.qemu" ]; then
        log "---- qemu's own output ($1) ----"
        sed 's/^/    qemu: /' "$cfgdir/$1.qemu"
    fi
    log "---- guest kernel console ($1) ----"
    tail -n 60 "$cfgdir/$1.console" 2>/dev/null | sed 's/^/    console: /'
}

# ---------------------------------------------------------------------------
# One configuration
# ---------------------------------------------------------------------------
write_env() { # write_env FILE MKFS [LOOP]
    cat > "$1" <<EOF
MD_DEVICE=$DEVICE
MD_FS=$FS
MD_MKFS=$2
MD_LOOP=${3:-0}
MD_DAX=$DAX
MD_DEVDAX=$DEVDAX
MD_CONFIG=$cfg
MD_STEP_TIMEOUT=${MAPDIRECT_VM_STEP_TIMEOUT:-300}
EOF
}

new_disk() {
    rm -f "$cfgdir/disk.img"
    truncate -s 1G "$cfgdir/disk.img" || die "cannot create $cfgdir/disk.img"
}

# Power-loss cycles: each boot recovers the log left by the previous one,
# checks it against what the host saw acknowledged, and appends again until
# the host pulls the plug.
PL_MAX_ACK=0       # highest sequence number acknowledged on the console so far
PL_TOTAL_ACKS=0
PL_KILLS=0
PL_FAIL=0
PL_LOST=0          # set when acknowledged records were lost
PL_LOG_INDEX=1
PL_LOG=/mnt/plog/wal.1
PL_LOG_FULL=0      # the writer of the log being recovered filled it
# The writer and the checker: durable_log, or nc_writer for the negative
# controls (same "ack N" and "recovered ... last_seq=N stop=WHY" lines).
PL_BIN=durable_log
PL_VERIFY="durable_log verify"
PL_SETUP=          # guest shell lines run before the recovery step
pl_writer_cmd() { # pl_writer_cmd BOOT GROUP
    echo "durable_log write $PL_LOG --size 768M --group $2 --print-acks --seed $1"
}
pl_check_recovery() { # pl_check_recovery RESULTS STEP BOOTNAME
    local res=$1 st=$2 what=$3 out rc last stop
    out=$(section "$res" "$st")
    rc=$(step_rc "$res" "$st")
    if [ -z "$rc" ]; then
        log "FAIL powerloss: $what: recovery step did not finish"; PL_FAIL=1; return 1
    fi
    echo "$out" | sed 's/^/    /'
    if [ "$rc" != 0 ]; then
        log "FAIL powerloss: $what: $PL_VERIFY exited $rc"; PL_FAIL=1; return 1
    fi
    last=$(echo "$out" | sed -n 's/^recovered .*last_seq=\([0-9]*\).*/\1/p' | tail -n1)
    stop=$(echo "$out" | sed -n 's/^recovered .*stop=\([a-z-]*\).*/\1/p' | tail -n1)
    if [ -z "$last" ] || [ -z "$stop" ]; then
        log "FAIL powerloss: $what: no 'recovered ... last_seq=N stop=WHY' line"; PL_FAIL=1; return 1
    fi
    if [ "$last" -lt "$PL_MAX_ACK" ]; then
        log "FAIL powerloss: $what: recovered up to seq $last (stop=$stop) but seq $PL_MAX_ACK was acknowledged ($((PL_MAX_ACK - last)) acknowledged records lost)"
        PL_LOST=1; PL_FAIL=1; return 1
    fi
    # Why the scan stopped: after a kill only at the end of what was written
    # (end: zeros; torn: the interrupted append), at the end of a log the
    # writer filled (full), or in a log never written (empty, nothing
    # acknowledged). content, bad-header, too-small or anything unknown
    # means recovery read something that was never written that way.
    case "$stop" in
    end|torn) ;;
    full) if [ "$PL_LOG_FULL" != 1 ]; then
              log "FAIL powerloss: $what: recovery says stop=full but the writer never filled the log"
              PL_FAIL=1; return 1
          fi ;;
    empty) if [ "$PL_MAX_ACK" != 0 ]; then
               log "FAIL powerloss: $what: recovery found an empty log after acknowledged records"
               PL_FAIL=1; return 1
           fi ;;
    *) log "FAIL powerloss: $what: recovery stopped with stop=$stop (expected end or torn): $(echo "$out" | grep '^recovered' | tail -n1)"
       PL_FAIL=1; return 1 ;;
    esac
    log "powerloss: $what: recovered last_seq=$last (acknowledged: $PL_MAX_ACK, stop=$stop): OK"
    RECOVERED_LAST=$last
}

# Power cuts, shared by run_powerloss and the SQLite and RocksDB cycles
# (lib/powerloss-*.sh). cut_boot WHAT PREFIX N CUTS BINS [CHECK]: the N-th
# boot (mkfs on the first) with PAYLOAD_BINS=BINS, the environment
# $cfgdir/PREFIX.env and the steps the caller wrote to $cfgdir/PREFIX.steps;
# the host SIGKILLs QEMU at a random moment after the first ack. Then the
# checks every such boot gets, each failure logged as "FAIL WHAT ...": at most
# kills + 4 boots for CUTS cuts so far, a clean kernel console, the guest's
# setup (no @@MD FATAL) and, from the second boot on, CHECK RESULTS "boot N"
# (the recovery steps; CHECK logs its own failures and returns 1, or 2 for a
# failure the console would not explain). Sets CUT_RES (the results file) and
# CUT_WRITE (the write step's output without a line the kill cut short: only
# complete ack lines count). Returns 0 when every check passed.
cut_boot() {
    local what=$1 prefix=$2 n=$3 cuts=$4 bins=$5 check=${6:-} rc
    CUT_RES="$cfgdir/$prefix$n.results" CUT_WRITE=
    if [ "$n" -gt $((kills + 4)) ]; then
        log "FAIL $what: $n boots but only $cuts cuts"; return 1
    fi
    write_env "$cfgdir/$prefix.env" "$([ "$n" = 1 ] && echo 1 || echo 0)"
    PAYLOAD_BINS=$bins boot "$prefix$n" "$cfgdir/$prefix.env" "$cfgdir/$prefix.steps" 1
    if [ "$CONSOLE_BAD" = 1 ]; then
        log "FAIL $what boot $n: kernel console"; return 1
    fi
    if grep -q '^@@MD FATAL' "$CUT_RES"; then
        log "FAIL $what boot $n: guest setup failed: $(grep '^@@MD FATAL' "$CUT_RES")"
        show_console "$prefix$n"; return 1
    fi
    if [ "$n" -gt 1 ] && [ -n "$check" ]; then
        "$check" "$CUT_RES" "boot $n"
        rc=$?
        if [ $rc != 0 ]; then
            [ $rc = 2 ] || show_console "$prefix$n"
            return 1
        fi
    fi
    CUT_WRITE=$(section "$CUT_RES" write)
    if [ -n "$(tail -c1 "$CUT_RES")" ]; then CUT_WRITE=$(echo "$CUT_WRITE" | sed '$d'); fi
    return 0
}

# cut_killed WHAT PREFIX N: the boot cut_boot made ended with the host's
# SIGKILL, not with the writers stopping by themselves.
cut_killed() {
    [ "$BOOT_STATUS" = killed ] && return 0
    log "FAIL $1 boot $3: not killed (status $BOOT_STATUS): the writers stopped before the kill"
    section "$CUT_RES" write | tail -n 20 | sed 's/^/    /'
    show_console "$2$3"
    return 1
}

# pl_check_boot RESULTS BOOTNAME: cut_boot's CHECK for the durable_log cycles.
# shellcheck disable=SC2317 # (called through cut_boot)
pl_check_boot() {
    pl_check_recovery "$1" recover "$2" && return 0
    # (a negative control's expected loss needs no console)
    [ "$PL_LOST" = 1 ] && [ "$negative" = 1 ] && return 2
    return 1
}

run_powerloss() {
    local steps="$cfgdir/pl.steps"
    local groups=(1 8 1 32 4 1 16 2 64 1)
    local boots=0 prev_log= group res
    new_disk
    while [ $PL_KILLS -lt $kills ]; do
        boots=$((boots + 1))
        group=${groups[$(( (boots - 1) % ${#groups[@]} ))]}
        {
            echo "mkdir -p /mnt/plog"
            [ -n "$PL_SETUP" ] && echo "$PL_SETUP"
            [ -n "$prev_log" ] && echo "step recover $PL_VERIFY $prev_log"
            echo "step write $(pl_writer_cmd $boots $group)"
        } > "$steps"
        RECOVERED_LAST=0
        cut_boot powerloss pl $boots $PL_KILLS "$PL_BIN" pl_check_boot || { PL_FAIL=1; return 1; }
        res=$CUT_RES
        if [ -n "$prev_log" ] && [ "$prev_log" != "$PL_LOG" ]; then
            # The previous log filled up; this boot started a new one.
            RECOVERED_LAST=0
            PL_MAX_ACK=0
            PL_LOG_FULL=0
        fi
        local acks first lastack n
        acks=$(echo "$CUT_WRITE" | awk '/^ack [0-9]+$/ { print $2 }')
        n=$(echo "$acks" | grep -c . || true)
        prev_log=$PL_LOG
        if [ "$BOOT_STATUS" != killed ] && section "$res" write | grep -q 'log full'; then
            # Not a kill: the writer filled its log and stopped by itself.
            # Verify it on the next boot and continue in a fresh log.
            PL_LOG_INDEX=$((PL_LOG_INDEX + 1))
            PL_LOG=/mnt/plog/wal.$PL_LOG_INDEX
            PL_LOG_FULL=1
            log "powerloss boot $boots: log full after seq $(echo "$acks" | tail -n1); continuing in $PL_LOG"
            [ "$n" -gt 0 ] && PL_MAX_ACK=$(echo "$acks" | tail -n1)
            continue
        fi
        if [ "$n" = 0 ]; then
            log "FAIL powerloss boot $boots: no record acknowledged before the kill (status $BOOT_STATUS)"
            section "$res" write | tail -n 20 | sed 's/^/    /'
            show_console "pl$boots"; PL_FAIL=1; return 1
        fi
        first=$(echo "$acks" | head -n1)
        lastack=$(echo "$acks" | tail -n1)
        if [ "$first" -ne $((RECOVERED_LAST + 1)) ]; then
            log "FAIL powerloss boot $boots: writer resumed at seq $first, expected $((RECOVERED_LAST + 1))"
            PL_FAIL=1; return 1
        fi
        cut_killed powerloss pl $boots || { PL_FAIL=1; return 1; }
        PL_KILLS=$((PL_KILLS + 1))
        PL_TOTAL_ACKS=$((PL_TOTAL_ACKS + n))
        PL_MAX_ACK=$lastack
        log "powerloss kill $PL_KILLS/$kills: group=$group, acknowledged seq $first..$lastack ($n records), SIGKILL ${KILL_DELAY_MS} ms after the first ack (boot ${BOOT_SECONDS}s)"
    done
    return 0
}

# Number of tests carrying [TAG] in the static unit-test binary.
tag_count() {
    "$bin_dir/mapdirect_tests" --list-test-names-only "[$1]" 2>/dev/null | grep -c . || true
}

# Groups run as steps of their own (a poison test may take its process down,
# an async test may hang on a kernel's io_uring, a lock test forks) with a
# shorter time limit, and each must exist: a missing group fails the step
# <tag>-missing (MAPDIRECT_VM_REQUIRE_TAGS=0: a note). [poison] only on NFIT.
VM_GROUPS="async seal poison locks"
suite_groups() {
    local tag
    for tag in $VM_GROUPS; do
        [ $tag = poison ] && [ "$POISON" != 1 ] && continue
        echo $tag
    done
}

suite_steps() { # suite_steps FILE
    local f=$1 tag exclude=
    for tag in $VM_GROUPS; do exclude+="~[$tag]"; done
    # --warn NoTests: a filter that matches nothing fails instead of passing.
    local catch="--use-colour no --durations yes --warn NoTests"
    {
        [ "$do_powerloss" = 1 ] && echo "step recover durable_log verify $PL_LOG"
        cat <<EOF
mkdir -p /mnt/mdtests /mnt/examples
export MAPDIRECT_TEST_DIR=/mnt/mdtests
export MAPDIRECT_EXPECT_MODE=$EXPECT_MODE
export MAPDIRECT_EXPECT_GRANULARITY=$EXPECT_GRAN
$( [ "$POISON" = 1 ] && echo "export MAPDIRECT_EXPECT_POISON=1" )
export ASAN_OPTIONS=handle_sigbus=0
step unit mapdirect_tests $catch '$exclude${MAPDIRECT_VM_EXCLUDE:-}'
EOF
        for tag in $(suite_groups); do
            if [ "$(tag_count $tag)" -gt 0 ]; then
                echo "step_t ${MAPDIRECT_VM_GROUP_TIMEOUT:-180} $tag mapdirect_tests $catch '[$tag]${MAPDIRECT_VM_EXCLUDE:-}'"
            else
                echo "step $tag-missing sh -c 'echo mapdirect_tests has no [$tag] tests; exit ${MAPDIRECT_VM_REQUIRE_TAGS:-1}'"
            fi
        done
        # The libpmem2 differential (dynamically linked, see PMEM2_BIN):
        # libpmem2's own granularity for the same files, on the real device.
        # -s: the compared values appear in the log (checked on NFIT).
        echo "step pmem2 $PMEM2_BIN $catch -s '[pmem2]'"
        cat <<EOF
dd if=/dev/zero of=/mnt/examples/info.dat bs=1M count=4 2>/dev/null
step info mapdirect-info /mnt/examples/info.dat
step example-durable_log-write durable_log write /mnt/examples/wal --size 16M --count 3000 --group 7 --seed 3
step example-durable_log-verify durable_log verify /mnt/examples/wal --expect-last 3000
step example-durable_log-append sh -c 'printf "first\nsecond\n" | durable_log append /mnt/examples/text.wal --size 1M --print-acks && durable_log dump /mnt/examples/text.wal'
EOF
        # Examples with a self-contained demo mode.
        if [ -x "$bin_dir/kv" ]; then
            echo "mkdir -p /mnt/examples/kv"
            echo "step example-kv kv selftest /mnt/examples/kv"
        fi
        if [ -x "$bin_dir/seal_broker" ]; then
            echo "mkdir -p /mnt/examples/seal_broker"
            echo "step example-seal_broker seal_broker /mnt/examples/seal_broker"
        fi
        local e
        for e in "${extras[@]}"; do echo "step extra-$(basename "$e") $(basename "$e")"; done
    } > "$f"
}

# The devdax-nfit suite: the device DAX tests on the real /dev/daxX.Y (init
# exports MD_DEVDAX_DEV), the bad-block translation tests, mapdirect-info.
devdax_steps() { # devdax_steps FILE
    local catch="--use-colour no --durations yes --warn NoTests"
    [ "$do_powerloss" = 1 ] && echo "step recover durable_log verify $PL_LOG" > "$1"
    cat >> "$1" <<EOF
mkdir -p /mnt/mdtests
export MAPDIRECT_TEST_DIR=/mnt/mdtests
export MAPDIRECT_TEST_DEVDAX=\$MD_DEVDAX_DEV
export MAPDIRECT_EXPECT_GRANULARITY=$EXPECT_GRAN
step sysfs sh -c 'd=\$(basename \$MD_DEVDAX_DEV); for a in size align resource; do echo "\$d \$a: \$(cat /sys/bus/dax/devices/\$d/\$a)"; done; echo "region0 resource: \$(cat /sys/bus/nd/devices/region0/resource)"; echo "region0 badblocks: [\$(cat /sys/bus/nd/devices/region0/badblocks)]"'
step devdax mapdirect_tests $catch -s '[devdax]'
step badblocks mapdirect_tests $catch '[badblocks]~[poison]'
step info mapdirect-info \$MD_DEVDAX_DEV
EOF
}

# devdax_checks RESULTS: mapdirect-info must say device DAX, sync, the granularity.
devdax_checks() {
    local info fail=0
    info=$(section "$1" info)
    info_expect "$info" "mode" "$EXPECT_MODE" || fail=1
    info_expect "$info" "store granularity" "$EXPECT_GRAN" || fail=1
    info_expect "$info" "file system" "device_dax" || fail=1
    info_expect "$info" "persistence domain" "$EXPECT_DOMAIN" || fail=1
    # The real-device test ran (not skipped).
    if section "$1" devdax | grep -q 'skipped: no device DAX' ||
       ! section "$1" devdax | grep -q 'device DAX: the real device of the VM tier'; then
        log "FAIL devdax: the real-device test did not run"; fail=1
    fi
    return $fail
}

# The step names a steps file runs (step NAME ... / step_t SECONDS NAME ...).
planned_steps() {
    sed -n 's/^step_t [0-9][0-9]* \([^ ]*\) .*/\1/p; s/^step \([^ ]*\) .*/\1/p' "$1"
}

# skip_report RESULTS: every Catch2 warning (the suite's "skipped: ..."
# messages) with its test case, so the reasons reach the CI log; sets
# SKIP_COUNT. A skipped test passes in Catch2 v2, so this is the only place
# it shows.
skip_report() {
    local lines
    lines=$(awk '
        /^@@MD BEGIN / { step = $3 }
        /^-+$/ && length($0) >= 70 { if (hdr == 1) { hdr = 2 } else { hdr = 1; name = ""; sect = "" } ; next }
        hdr == 1 { if (name == "") name = $0; else { sub(/^ +/, ""); sect = sect " / " $0 }; next }
        / warning:$/ { warn = 1; msg = ""; next }
        warn == 1 && /^  / { sub(/^ +/, ""); msg = msg (msg == "" ? "" : " ") $0; next }
        warn == 1 { if (msg != "") print step ": " name sect ": " msg; warn = 0 }
        END { if (warn == 1 && msg != "") print step ": " name sect ": " msg }
    ' "$1")
    SKIP_COUNT=$(echo "$lines" | grep -c 'skipped' || true)
    [ -n "$lines" ] || return 0
    log "Catch2 warnings ($SKIP_COUNT skipped):"
    echo "$lines" | sed 's/^/    WARN /'
    echo "$lines" > "$cfgdir/warnings.log"
}

# info_expect OUTPUT FIELD VALUE: mapdirect-info prints "FIELD<spaces>VALUE".
info_expect() {
    local got
    got=$(echo "$1" | awk -v f="$2" 'index($0, f) == 1 { v = substr($0, length(f) + 1); sub(/^ +/, "", v); print v; exit }')
    if [ "${got%% *}" != "$3" ]; then
        log "FAIL info: mapdirect-info reports '$2' as '${got:-nothing}', expected '$3'"
        return 1
    fi
    log "info: $2 = $got"
}

run_suite() {
    local env="$cfgdir/suite.env" steps="$cfgdir/suite.steps" res="$cfgdir/suite.results"
    local fail=0
    if [ "$do_powerloss" = 1 ]; then
        write_env "$env" 0 1
    else
        new_disk
        write_env "$env" 1 1
    fi
    if [ -n "$custom_steps" ]; then cp "$custom_steps" "$steps"
    elif [ "$DEVDAX" = 1 ]; then devdax_steps "$steps"
    else suite_steps "$steps"; fi
    boot suite "$env" "$steps" 0 900
    log "suite boot took ${BOOT_SECONDS}s (status $BOOT_STATUS)"
    sed 's/^/    | /' "$res"
    [ "$CONSOLE_BAD" = 1 ] && fail=1
    if grep -q '^@@MD FATAL' "$res"; then
        log "FAIL suite: guest setup failed"; show_console suite; return 1
    fi
    if ! grep -q '^@@MD DONE' "$res"; then
        log "FAIL suite: the guest did not finish (status $BOOT_STATUS)"; show_console suite; return 1
    fi
    local ready
    ready=$(grep '^@@MD READY' "$res")
    if [ -n "$EXPECT_DOMAIN" ] && ! echo "$ready" | grep -q "persistence_domain=$EXPECT_DOMAIN "; then
        log "FAIL suite: expected persistence_domain=$EXPECT_DOMAIN: $ready"; fail=1
    fi
    local st rc
    for st in $(sed -n 's/^@@MD BEGIN \(.*\)$/\1/p' "$res"); do
        rc=$(step_rc "$res" "$st")
        if [ "$rc" != 0 ]; then
            log "FAIL suite step $st: exit status ${rc:-none}"; fail=1
        else
            log "suite step $st: ok"
        fi
    done
    # Every step the steps file names must have run, in that order.
    local planned ran
    planned=$(planned_steps "$steps")
    ran=$(sed -n 's/^@@MD BEGIN \(.*\)$/\1/p' "$res")
    if [ "$planned" != "$ran" ]; then
        log "FAIL suite: the guest ran other steps than planned:"
        diff <(echo "$planned") <(echo "$ran") | sed -n 's/^</    planned, not run:/p; s/^>/    run, not planned:/p'
        fail=1
    fi
    SKIP_COUNT=0
    skip_report "$res"
    [ -n "$custom_steps" ] && { [ $fail = 0 ] || show_console suite; return $fail; }
    if [ "$DEVDAX" = 1 ]; then
        devdax_checks "$res" || fail=1
        if [ "$do_powerloss" = 1 ]; then
            pl_check_recovery "$res" recover "final boot" || fail=1
        fi
        [ $fail = 0 ] || show_console suite
        return $fail
    fi
    # The libpmem2 differential must really compare on the NFIT devices: a
    # "libpmem2 cannot map it" skip there is a failure.
    # And libpmem2's answer there must be the configuration's granularity
    # (cache_line or byte), not a page/page agreement.
    if [ "$DEVICE" = nfit ]; then
        # A Catch2 skip is a WARN ("warning:" then the reason); the ladder's
        # own "direct: skipped (not configured...)" text is not one.
        if grep -q 'skipped' <<<"$(section "$res" pmem2 | grep -A1 'warning:')"; then
            log "FAIL suite step pmem2: skipped on an NFIT device:"
            section "$res" pmem2 | grep -A1 'warning:' | sed 's/^/    /'
            fail=1
        elif ! section "$res" pmem2 | grep -q "\"$EXPECT_GRAN\" == \"$EXPECT_GRAN\""; then
            log "FAIL suite step pmem2: no comparison of $EXPECT_GRAN with libpmem2's answer in its output"
            fail=1
        else
            log "pmem2: libpmem2 and mapdirect agree on $EXPECT_GRAN"
        fi
    fi
    # mapdirect-info must report what the configuration promises.
    local info dax_word sync_word
    info=$(section "$res" info)
    dax_word=$([ "$DAX" = 1 ] && echo yes || echo no)
    sync_word=$([ "$EXPECT_MODE" = sync ] && echo yes || echo no)
    info_expect "$info" "mode" "$EXPECT_MODE" || fail=1
    info_expect "$info" "store granularity" "$EXPECT_GRAN" || fail=1
    info_expect "$info" "DAX (statx)" "$dax_word" || fail=1
    info_expect "$info" "MAP_SYNC" "$sync_word" || fail=1
    if [ "$do_powerloss" = 1 ]; then
        pl_check_recovery "$res" recover "final boot" || fail=1
    fi
    [ $fail = 0 ] || show_console suite
    return $fail
}

# Negative control: a writer that acknowledges records that are not durable
# (nc_writer), and the checker must report lost acknowledged records.
#   mmap:   MAP_SHARED without MAP_SYNC, CPU cache flush + fence, no msync:
#           the blocks the faults allocated in the sparse file stay in the
#           file system's uncommitted transaction (NFIT, virtio-pmem), or the
#           page stays dirty in the guest page cache (virtio-blk).
#   pwrite: no fdatasync; the data stays in the guest page cache, which dies
#           with QEMU (periodic writeback is off in the guest).
run_negative_control() {
    local method=$nc_method
    [ -n "$method" ] || method=$([ "$DEVICE" = virtio-blk ] && echo pwrite || echo mmap)
    PL_BIN=nc_writer
    PL_VERIFY="nc_writer verify"
    PL_LOG=/mnt/plog/nc.log
    NC_METHOD=$method
    pl_writer_cmd() { echo "nc_writer write $PL_LOG --method $NC_METHOD"; }
    log "negative control: nc_writer --method $method acknowledges records that are not durable; the loss must be detected"
    local t0=$SECONDS
    run_powerloss
    if [ "$PL_LOST" = 1 ]; then
        log "PASS in $((SECONDS - t0))s: negative control ($method): the checker caught lost acknowledged records, as it must"
        return 0
    fi
    if [ "$PL_FAIL" = 1 ]; then
        log "FAIL in $((SECONDS - t0))s: negative control: the cycles failed for another reason (logs in $cfgdir)"
        return 1
    fi
    # Also check the final state.
    local env="$cfgdir/final.env" steps="$cfgdir/final.steps"
    write_env "$env" 0
    echo "step recover $PL_VERIFY $PL_LOG" > "$steps"
    PAYLOAD_BINS=$PL_BIN boot final "$env" "$steps" 0 300
    pl_check_recovery "$cfgdir/final.results" recover "final boot"
    if [ "$CONSOLE_BAD" = 1 ]; then
        log "FAIL in $((SECONDS - t0))s: negative control: kernel console"; return 1
    fi
    if [ "$PL_LOST" = 1 ]; then
        log "PASS in $((SECONDS - t0))s: negative control ($method): the checker caught lost acknowledged records, as it must"
        return 0
    fi
    log "FAIL in $((SECONDS - t0))s: negative control ($method): no acknowledged record was lost in $PL_KILLS kills; the power-loss test of $cfg cannot tell a durable record from one that is not"
    return 1
}

# --self-test: the tier's own checks must fail when they should. One boot
# with a steps file that breaks each rule once (a Catch2 filter matching
# nothing, a WARNING: on the kernel console, a planned step that never runs),
# plus host-side recoveries that stop for the wrong reason or lose an
# acknowledged record. Passes only if every one of them is caught.
run_self_test() {
    local t0=$SECONDS bad=0 f="$cfgdir/selftest.steps"
    cat > "$f" <<'EOF'
step notests mapdirect_tests --use-colour no --warn NoTests '[no-such-tag-selftest]'
step kmsg sh -c 'echo "<4>WARNING: CPU: 0 PID: 1 at selftest.c:1 injected by run.sh --self-test" > /dev/kmsg'
[ -e /nonexistent ] &&
step never true
step ok true
EOF
    custom_steps=$f do_powerloss=0
    PAYLOAD_BINS=mapdirect_tests
    if run_suite > "$cfgdir/selftest.log" 2>&1; then
        log "FAIL self-test: the suite checks passed a run that breaks every rule"; bad=1
    fi
    PAYLOAD_BINS=
    expect_caught() { # expect_caught WHAT PATTERN
        if grep -q -- "$2" "$cfgdir/selftest.log"; then
            log "self-test: caught $1"
        else
            log "FAIL self-test: not caught: $1"; bad=1
        fi
    }
    expect_caught "a Catch2 filter that matches nothing (--warn NoTests)" 'FAIL suite step notests: exit status 2'
    expect_caught "WARNING: on the guest kernel console" 'FAIL kernel console (suite)'
    expect_caught "a planned step that did not run" 'planned, not run: never'
    grep -q 'FAIL suite step ok' "$cfgdir/selftest.log" && { log "FAIL self-test: a passing step was reported as failed"; bad=1; }
    CONSOLE_BAD=0
    # Recovery checks on canned verify output (no boot needed).
    local why out
    for why in "content lost 0" "bad-header lost 0" "end lost 1" "torn ok 0" "end ok 0" "full lost 0" "empty lost 1"; do
        set -- $why
        local stop=$1 expect=$2 short=$3 r="$cfgdir/selftest.recover"
        PL_MAX_ACK=10 PL_FAIL=0 PL_LOST=0 PL_LOG_FULL=0
        local last=10
        [ "$short" = 1 ] && last=9
        [ "$stop" = empty ] && last=0
        printf '@@MD BEGIN recover\nrecovered records=%s last_seq=%s end_offset=0 stop=%s\n@@MD END recover rc=0 uptime=1\n' \
            "$last" "$last" "$stop" > "$r"
        pl_check_recovery "$r" recover "self-test stop=$stop last_seq=$last" > "$cfgdir/selftest.pl" 2>&1
        out=$([ "$PL_FAIL" = 1 ] && echo lost || echo ok)
        if [ "$out" = "$expect" ]; then
            log "self-test: recovery with stop=$stop last_seq=$last of 10 acknowledged: ${expect/lost/rejected}, as it must"
        else
            log "FAIL self-test: recovery with stop=$stop last_seq=$last of 10 acknowledged was $out, expected $expect"
            sed 's/^/    /' "$cfgdir/selftest.pl"; bad=1
        fi
    done
    PL_MAX_ACK=0 PL_FAIL=0 PL_LOST=0
    # Every Catch2 run the suite plans carries --warn NoTests.
    custom_steps= do_powerloss=1
    suite_steps "$cfgdir/selftest.suite"
    local lax
    lax=$(grep -E "^step(_t [0-9]+)? [^ ]+ (mapdirect_tests|$PMEM2_BIN) " "$cfgdir/selftest.suite" |
          grep -v -- '--warn NoTests')
    if [ -n "$lax" ]; then
        log "FAIL self-test: suite steps without --warn NoTests:"; echo "$lax" | sed 's/^/    /'; bad=1
    else
        log "self-test: every planned Catch2 run has --warn NoTests"
    fi
    if [ $bad = 0 ]; then
        log "PASS in $((SECONDS - t0))s: self-test: every broken rule was caught"
    else
        log "FAIL in $((SECONDS - t0))s: self-test (log: $cfgdir/selftest.log)"
    fi
    return $bad
}

run_config() {
    cfg=$1
    config_vars "$cfg" || { echo "vm: unknown configuration '$cfg' (see --list)" >&2; return 2; }
    cfgdir="$work_dir/$cfg"
    rm -rf "$cfgdir"
    mkdir -p "$cfgdir"
    [ -n "$seed" ] || seed=$(( $(date +%s) % 100000 ))
    # Each configuration gets its own kill moments from the same seed.
    RANDOM=$(( (seed + $(echo "$cfg" | cksum | cut -d' ' -f1)) % 32768 ))
    if [ $negative = 1 ]; then
        run_negative_control
        return $?
    fi
    if [ $self_test = 1 ]; then
        run_self_test
        return $?
    fi
    # Device DAX: durable_log logs onto the raw device (no file system).
    [ "$DEVDAX" = 1 ] && PL_LOG=/dev/dax0.0
    log "device=$DEVICE fs=$FS dax=$DAX expect mode=$EXPECT_MODE granularity=$EXPECT_GRAN poison=$POISON kills=$kills seed=$seed"
    local t0=$SECONDS status=0 pl="skipped" su="skipped"
    if [ "$do_powerloss" = 1 ]; then
        if run_powerloss; then pl="ok"; else pl="FAILED"; status=1; fi
    fi
    if [ "$do_suite" = 1 ]; then
        # After the power-loss cycles the suite boot also does the final
        # recovery check of the log.
        if run_suite; then su="ok"; else su="FAILED"; status=1; fi
        [ "$PL_FAIL" = 0 ] || pl="FAILED"
    elif [ "$do_powerloss" = 1 ] && [ "$PL_FAIL" = 0 ]; then
        # No suite boot: one more boot just to recover and check.
        local env="$cfgdir/final.env" steps="$cfgdir/final.steps"
        write_env "$env" 0
        echo "step recover durable_log verify $PL_LOG" > "$steps"
        PAYLOAD_BINS=durable_log boot final "$env" "$steps" 0 300
        pl_check_recovery "$cfgdir/final.results" recover "final boot" || { pl="FAILED"; status=1; }
    fi
    # The databases need a file system: none on device DAX.
    local sq=0 rk=0
    [ "${MAPDIRECT_VM_SQLITE:-1}" = 1 ] && [ "$DEVDAX" != 1 ] && sq=1
    if [ $sq = 1 ]; then
        run_sqlite_powerloss || status=1
    fi
    [ "${MAPDIRECT_VM_ROCKSDB:-1}" = 1 ] && [ "$DEVDAX" != 1 ] && [ -x "$bin_dir/rocksdb_wal_driver" ] && rk=1
    if [ $rk = 1 ]; then
        run_rocksdb_powerloss || status=1
    fi
    [ "$CONSOLE_BAD" = 0 ] || status=1
    local summary="suite $su; powerloss $pl"
    [ "$do_powerloss" = 1 ] && summary+=" ($PL_KILLS kills, $PL_TOTAL_ACKS acknowledged records, highest seq $PL_MAX_ACK)"
    [ "$do_suite" = 1 ] && summary+="; ${SKIP_COUNT:-0} skipped tests (listed above, WARN lines)"
    [ $sq = 1 ] && summary+="; sqlite $SQ_SUMMARY"
    [ $rk = 1 ] && summary+="; rocksdb $RK_SUMMARY"
    [ "$CONSOLE_BAD" = 0 ] || summary+="; kernel console reported a problem"
    if [ $status = 0 ]; then
        log "PASS in $((SECONDS - t0))s: $summary"
    else
        log "FAIL in $((SECONDS - t0))s: $summary (logs in $cfgdir)"
    fi
    return $status
}

# SQLite power cuts (issue 14): run_sqlite_powerloss, SQ_SUMMARY.
. "$HERE/lib/powerloss-sqlite.sh"
# RocksDB power cuts (issue 13): run_rocksdb_powerloss, RK_SUMMARY.
. "$HERE/lib/powerloss-rocksdb.sh"

# ---------------------------------------------------------------------------
main() {
    [ "$(uname -m)" = x86_64 ] || die "this tier needs an x86_64 host"
    ensure_host_tools
    ensure_image
    [ $image_only = 1 ] && exit 0
    [ ${#configs[@]} -gt 0 ] || { usage >&2; exit 2; }
    [ "$kills" -ge 5 ] 2>/dev/null || die "--kills must be at least 5"
    [ -n "$bin_dir" ] || die "no --bin-dir (or MAPDIRECT_VM_BIN_DIR): build the mapdirect_vm_binaries target"
    bin_dir=$(cd "$bin_dir" 2>/dev/null && pwd) || die "bin dir $bin_dir missing"
    local b
    for b in $REQUIRED_BINS "${extras[@]}"; do
        local p=$b
        [ -f "$p" ] || p="$bin_dir/$b"
        [ -x "$p" ] || die "missing static binary $p"
        file_is_static "$p" || die "$p is not statically linked"
    done
    if [ $negative = 0 ] && [ $self_test = 0 ] && [ $do_suite = 1 ] && [ -z "$custom_steps" ]; then
        [ -x "$bin_dir/$PMEM2_BIN" ] || die "missing $bin_dir/$PMEM2_BIN (the libpmem2 differential; needs libpmem2-dev)"
        ldd "$bin_dir/$PMEM2_BIN" | grep -q 'not found' && die "$PMEM2_BIN: shared libraries missing: $(ldd "$bin_dir/$PMEM2_BIN" | grep 'not found')"
    fi
    [ -n "$work_dir" ] || work_dir="$bin_dir/../work"
    mkdir -p "$work_dir" && work_dir=$(cd "$work_dir" && pwd) || die "cannot create $work_dir"

    if [ ${#configs[@]} = 1 ]; then
        run_config "${configs[0]}"
        exit $?
    fi
    # Several configurations: run them as child processes, $jobs at a time.
    local c pids=() names=() passed=0 failed=0 i
    local self_args=(--bin-dir "$bin_dir" --work-dir "$work_dir" --cache-dir "$cache_dir" --kills "$kills")
    [ -n "$seed" ] && self_args+=(--seed "$seed")
    [ $do_suite = 0 ] && self_args+=(--no-suite)
    [ $do_powerloss = 0 ] && self_args+=(--no-powerloss)
    [ -n "$custom_steps" ] && self_args+=(--steps "$(cd "$(dirname "$custom_steps")" && pwd)/$(basename "$custom_steps")")
    [ $negative = 1 ] && self_args+=(--negative-control)
    [ -n "$nc_method" ] && self_args+=(--nc-method "$nc_method")
    [ $self_test = 1 ] && self_args+=(--self-test)
    for b in "${extras[@]}"; do self_args+=(--extra "$b"); done
    for c in "${configs[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
        "$0" "${self_args[@]}" --config "$c" > "$work_dir/$c.log" 2>&1 &
        pids+=($!); names+=("$c")
        echo "vm: started $c (log: $work_dir/$c.log)"
    done
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            passed=$((passed + 1)); echo "vm: ${names[$i]}: PASS"
        else
            failed=$((failed + 1)); echo "vm: ${names[$i]}: FAIL"
        fi
        cat "$work_dir/${names[$i]}.log"
    done
    echo "vm: $passed passed, $failed failed"
    local n=0
    for c in "${configs[@]}"; do
        [ -s "$work_dir/$c/warnings.log" ] || continue
        n=$((n + $(grep -c skipped "$work_dir/$c/warnings.log")))
    done
    echo "vm: $n skipped tests in the guests (Catch2 warnings: $work_dir/<config>/warnings.log)"
    [ $failed = 0 ]
}
main
exit $?
