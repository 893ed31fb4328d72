# SQLite power-cut cycles for tests/vm/run.sh (sourced; uses its boot,
# section, step_rc, write_env, new_disk, cut_boot, cut_killed and log). Issue 14.
#
# Every boot runs one writer per mode at once (tests/sqlite/driver.cpp
# powercut-write, its own database in /mnt/sq, each acknowledgement printed as
# "ack MODE N" only after COMMIT returned) until the host SIGKILLs QEMU; the
# next boot first checks every database (powercut-verify: PRAGMA
# integrity_check, rows 1..K without a gap, K >= the last N the host saw
# acknowledged for that mode). Modes:
#   rollback-full  journal_mode=DELETE, synchronous=FULL   at most the last
#                  acknowledged transaction lost: SQLite documents that only
#                  EXTRA syncs the directory after unlinking the journal (the
#                  commit point in DELETE mode), "additional durability if the
#                  commit is followed closely by a power loss"; an unlink lost
#                  with the cut resurrects a hot journal and rolls it back
#   rollback-extra journal_mode=DELETE, synchronous=EXTRA  0 lost required
#   wal-full       journal_mode=WAL, synchronous=FULL      0 lost required
#   wal-normal     journal_mode=WAL, synchronous=NORMAL    integrity required;
#                  lost transactions are counted, not failed: SQLite documents
#                  that such a commit "might roll back following a power loss"
#                  (https://sqlite.org/pragma.html#pragma_synchronous)
#   control-off    the negative control: journal_mode=DELETE, synchronous=OFF,
#                  i.e. acknowledged without ever being persisted (the database
#                  is deleted after each check, so each boot starts afresh).
#                  It must be caught losing transactions (or corrupted) at
#                  least once on virtio-blk, where what the guest did not
#                  persist stays in its page cache and dies with QEMU. On the
#                  pmem devices the mapping is QEMU's memory backend file
#                  itself, so a store survives a SIGKILL of QEMU whether or not
#                  it was flushed; loss there is counted, not required.
# The boot after the last cut checks once more and runs mapdirect_vfs_bench
# (unix vs mapdirect VFS, same guest) into $cfgdir/sqlite-bench.md.
#
# Environment: MAPDIRECT_VM_SQLITE=0 skips these cycles;
# MAPDIRECT_VM_SQLITE_BENCH (default "-t 60 -s 5000 -r 3", 0 skips it).

SQ_MODES="rollback-full rollback-extra wal-full wal-normal control-off"
SQ_SUMMARY="skipped"

# sq_check_verify RESULTS BOOTNAME: checks each mode's verify step; updates
# the per-mode counters. Returns 1 on a failure of a mode that must not fail.
sq_check_verify() {
    local res=$1 what=$2 m out rc lost bad=0
    for m in $SQ_MODES; do
        out=$(section "$res" "verify-$m")
        rc=$(step_rc "$res" "verify-$m")
        echo "$out" | sed 's/^/    /'
        if [ -z "$rc" ]; then
            log "FAIL sqlite: $what: verify-$m did not finish"; bad=1; continue
        fi
        lost=$(echo "$out" | sed -n 's/^verify .* lost=\([0-9]*\)$/\1/p' | tail -n1)
        SQ_CUTS[$m]=$(( ${SQ_CUTS[$m]} + 1 ))
        case "$m" in
        control-off)
            if [ "$rc" != 0 ] || [ "${lost:-0}" -gt 0 ]; then
                SQ_LOST[$m]=$(( ${SQ_LOST[$m]} + ${lost:-0} ))
                SQ_CAUGHT=$((SQ_CAUGHT + 1))
                log "sqlite: $what: negative control caught (rc=$rc lost=${lost:-?}), as it may"
            fi ;;
        *)
            if [ "$rc" != 0 ] || [ -z "$lost" ]; then
                log "FAIL sqlite: $what: $m: powercut-verify exited $rc"; bad=1; continue
            fi
            SQ_LOST[$m]=$(( ${SQ_LOST[$m]} + lost ))
            # The writer resumes after what survived: a loss is counted once.
            case "$m" in wal-normal|rollback-full)
                SQ_LAST[$m]=$(echo "$out" | sed -n 's/^verify .* max=\([0-9]*\) .*/\1/p' | tail -n1) ;;
            esac
            if [ "$m" = rollback-full ] && [ "$lost" -gt 0 ]; then
                log "sqlite: $what: rollback-full: the last acknowledged transaction rolled back (SQLite documents this window for FULL in DELETE mode; EXTRA closes it)"
                [ "$lost" -gt 1 ] && { log "FAIL sqlite: $what: rollback-full: $lost acknowledged transactions lost (at most 1 allowed)"; bad=1; }
            elif [ "$m" != wal-normal ] && [ "$lost" -gt 0 ]; then
                log "FAIL sqlite: $what: $m: $lost acknowledged transactions lost"; bad=1
            fi ;;
        esac
    done
    return $bad
}

run_sqlite_powerloss() {
    local env="$cfgdir/sq.env" steps="$cfgdir/sq.steps" res m boots=0 cuts=0 t0=$SECONDS
    declare -gA SQ_LAST SQ_CUTS SQ_LOST SQ_ACKS
    SQ_CAUGHT=0
    for m in $SQ_MODES; do SQ_LAST[$m]=0 SQ_CUTS[$m]=0 SQ_LOST[$m]=0 SQ_ACKS[$m]=0; done
    local b
    for b in sqlite_vfs_driver mapdirect_vfs_bench; do
        if [ ! -x "$bin_dir/$b" ] || ldd "$bin_dir/$b" 2>/dev/null | grep -q 'not found'; then
            log "FAIL sqlite: $bin_dir/$b missing or its libraries are (build mapdirect_vm_binaries; needs libsqlite3-dev)"
            SQ_SUMMARY="FAILED"; return 1
        fi
    done
    log "sqlite: power cuts with writers in modes $SQ_MODES (one guest, one database each)"
    new_disk
    while [ $cuts -lt $kills ]; do
        boots=$((boots + 1))
        {
            echo "mkdir -p /mnt/sq"
            if [ $boots -gt 1 ]; then
                for m in $SQ_MODES; do
                    echo "step verify-$m sqlite_vfs_driver powercut-verify /mnt/sq/$m.db $m ${SQ_LAST[$m]}"
                done
            fi
            echo "rm -f /mnt/sq/control-off.db /mnt/sq/control-off.db-journal"
            echo "step write sh -c 'for m in $SQ_MODES; do sqlite_vfs_driver powercut-write /mnt/sq/\$m.db \$m & done; wait'"
        } > "$steps"
        cut_boot sqlite sq $boots $cuts sqlite_vfs_driver sq_check_verify || { SQ_SUMMARY="FAILED"; return 1; }
        local w=$CUT_WRITE acks line=""
        if echo "$w" | grep -q -- ' -> '; then
            log "FAIL sqlite boot $boots: a writer failed:"; echo "$w" | grep -- ' -> ' | sed 's/^/    /'
            SQ_SUMMARY="FAILED"; return 1
        fi
        for m in $SQ_MODES; do
            acks=$(echo "$w" | awk -v m="$m" '$1 == "ack" && $2 == m && $3 ~ /^[0-9]+$/ && NF == 3 { print $3 }')
            local n top
            n=$(echo "$acks" | grep -c . || true)
            SQ_ACKS[$m]=$(( ${SQ_ACKS[$m]} + n ))
            if [ "$n" -gt 0 ]; then
                top=$(echo "$acks" | sort -n | tail -n1)
                SQ_LAST[$m]=$top
            elif [ "$m" = control-off ]; then
                SQ_LAST[$m]=0   # its database was deleted before this boot's writer
            fi
            line+=" $m=$n(last ${SQ_LAST[$m]})"
        done
        cut_killed sqlite sq $boots || { SQ_SUMMARY="FAILED"; return 1; }
        cuts=$((cuts + 1))
        log "sqlite boot $boots (${BOOT_SECONDS}s): killed ${KILL_DELAY_MS} ms after the first ack; acks:$line"
    done
    # The check after the last cut, and the benchmark in the same guest.
    local bench=${MAPDIRECT_VM_SQLITE_BENCH:--t 60 -s 5000 -r 3}
    write_env "$env" 0
    {
        for m in $SQ_MODES; do
            echo "step verify-$m sqlite_vfs_driver powercut-verify /mnt/sq/$m.db $m ${SQ_LAST[$m]}"
        done
        [ "$bench" != 0 ] && echo "mkdir -p /mnt/sqbench" && echo "step bench mapdirect_vfs_bench $bench /mnt/sqbench"
    } > "$steps"
    PAYLOAD_BINS="sqlite_vfs_driver mapdirect_vfs_bench" boot sqfinal "$env" "$steps" 0 900
    res="$cfgdir/sqfinal.results"
    local fail=0
    [ "$CONSOLE_BAD" = 1 ] && fail=1
    grep -q '^@@MD DONE' "$res" || { log "FAIL sqlite final boot: did not finish (status $BOOT_STATUS)"; show_console sqfinal; fail=1; }
    sq_check_verify "$res" "final boot" || fail=1
    if [ "$bench" != 0 ]; then
        if [ "$(step_rc "$res" bench)" = 0 ]; then
            { echo "$cfg (QEMU TCG guest, $(date -u +%Y-%m-%d)):"; section "$res" bench; } > "$cfgdir/sqlite-bench.md"
            log "sqlite bench (unix vs mapdirect VFS, same guest; TCG: ratios only):"
            sed 's/^/    /' "$cfgdir/sqlite-bench.md"
        else
            log "FAIL sqlite bench: exit status $(step_rc "$res" bench)"; section "$res" bench | sed 's/^/    /'; fail=1
        fi
    fi
    for m in $SQ_MODES; do
        if [ "$m" != control-off ] && [ "${SQ_ACKS[$m]}" = 0 ]; then
            log "FAIL sqlite: $m acknowledged nothing in $cuts cuts: nothing was tested"; fail=1
        fi
    done
    # The negative control must be caught where a loss is visible (see top).
    if [ "$DEVICE" = virtio-blk ] && [ "$SQ_CAUGHT" = 0 ]; then
        log "FAIL sqlite: negative control (synchronous=OFF) lost nothing in $cuts cuts on $DEVICE: the check cannot tell durable from not"
        fail=1
    fi
    SQ_SUMMARY=""
    for m in $SQ_MODES; do
        SQ_SUMMARY+="$m ${SQ_CUTS[$m]} cuts/${SQ_ACKS[$m]} acks/${SQ_LOST[$m]} lost; "
    done
    SQ_SUMMARY+="negative control caught in $SQ_CAUGHT of ${SQ_CUTS[control-off]} checks"
    if [ $fail = 0 ]; then
        log "sqlite: PASS in $((SECONDS - t0))s: $SQ_SUMMARY"
        SQ_SUMMARY="ok ($SQ_SUMMARY)"
    else
        log "sqlite: FAIL in $((SECONDS - t0))s: $SQ_SUMMARY"
        SQ_SUMMARY="FAILED ($SQ_SUMMARY)"
    fi
    return $fail
}
