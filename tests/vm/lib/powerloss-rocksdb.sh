# RocksDB power-cut cycles for tests/vm/run.sh (sourced; uses its boot,
# section, step_rc, write_env, new_disk, cut_boot, cut_killed and log). Issue 13.
#
# Every boot runs two writers at once (examples/rocksdb_wal/wal_driver.cpp,
# RocksDB 7.8 with WriteOptions::sync = true, each acknowledgement printed as
# "ack TAG N" only after the write returned OK), each on its own database in
# /mnt/rk, until the host SIGKILLs QEMU; the next boot first reopens both
# databases with the same file system and RocksDB's default WAL recovery mode
# (kPointInTimeRecovery, no repair) and checks that keys 0..N exist with their
# values, N the last the host saw acknowledged. Writers:
#   md   --fs_uri mapdirect: the WAL on direct_mapping, Sync persists.
#        0 acknowledged keys lost required, in every configuration.
#   nc   --fs_uri mapdirect-nopersist: the negative control, Sync returns OK
#        without persisting. Its database is deleted after each check (each
#        boot starts afresh). It must be caught losing keys (or failing to
#        open) at least once on virtio-blk, where what the guest did not
#        persist stays in its page cache and dies with QEMU. On the pmem
#        devices the mapping is QEMU's memory backend file itself, so a store
#        survives a SIGKILL of QEMU whether or not it was flushed: loss there
#        is counted, not required.
#
# The boot after the last cut checks once more and, when the bin dir has
# db_bench and libmapdirect_rocksdb.so, runs Debian's db_bench (fillseq and
# fillrandom --sync=1, 1 and 8 threads) with RocksDB's POSIX file system and
# with --fs_uri=mapdirect, alternating, in the same guest, into
# $cfgdir/rocksdb-bench.txt.
#
# Environment: MAPDIRECT_VM_ROCKSDB=0 skips these cycles (default 1 when the
# bin dir has rocksdb_wal_driver); MAPDIRECT_VM_ROCKSDB_BENCH: db_bench --num
# per thread (default 300; 0 skips the benchmark).

RK_SUMMARY="skipped"

# rk_check_verify RESULTS BOOTNAME: checks both verify steps.
rk_check_verify() {
    local res=$1 what=$2 t out rc lost bad=0
    for t in md nc; do
        out=$(section "$res" "verify-$t")
        rc=$(step_rc "$res" "verify-$t")
        echo "$out" | sed 's/^/    /'
        if [ -z "$rc" ]; then
            log "FAIL rocksdb: $what: verify-$t did not finish"; bad=1; continue
        fi
        lost=$(echo "$out" | sed -n 's/^verify .* lost=\([0-9]*\) .*/\1/p' | tail -n1)
        RK_CUTS[$t]=$(( ${RK_CUTS[$t]} + 1 ))
        if [ "$t" = nc ]; then
            # (nothing acknowledged: no database to open, nothing to lose)
            if [ "${RK_NEXT[nc]}" -gt 0 ] && { [ "$rc" != 0 ] || [ "${lost:-0}" -gt 0 ]; }; then
                RK_LOST[$t]=$(( ${RK_LOST[$t]} + ${lost:-0} ))
                RK_CAUGHT=$((RK_CAUGHT + 1))
                log "rocksdb: $what: negative control caught (rc=$rc lost=${lost:-?}), as it may"
            fi
            continue
        fi
        if [ "$rc" != 0 ] || [ -z "$lost" ]; then
            log "FAIL rocksdb: $what: md: verify exited $rc (the database must open without repair)"; bad=1; continue
        fi
        RK_LOST[$t]=$(( ${RK_LOST[$t]} + lost ))
        if [ "$lost" -gt 0 ]; then
            log "FAIL rocksdb: $what: md: $lost acknowledged keys lost"; bad=1
        fi
    done
    return $bad
}

# The verify steps of one boot (ACKED = last acknowledged key + 1).
rk_verify_steps() {
    echo "step verify-md rocksdb_wal_driver verify /mnt/rk/md mapdirect ${RK_NEXT[md]}"
    echo "step verify-nc rocksdb_wal_driver verify /mnt/rk/nc mapdirect-nopersist ${RK_NEXT[nc]}"
}

run_rocksdb_powerloss() {
    local env="$cfgdir/rk.env" steps="$cfgdir/rk.steps" res t boots=0 cuts=0 t0=$SECONDS
    declare -gA RK_NEXT RK_CUTS RK_LOST RK_ACKS
    RK_CAUGHT=0
    for t in md nc; do RK_NEXT[$t]=0 RK_CUTS[$t]=0 RK_LOST[$t]=0 RK_ACKS[$t]=0; done
    log "rocksdb: power cuts with two writers (md: mapdirect, nc: mapdirect-nopersist negative control)"
    new_disk
    while [ $cuts -lt $kills ]; do
        boots=$((boots + 1))
        {
            echo "mkdir -p /mnt/rk"
            [ $boots -gt 1 ] && rk_verify_steps
            echo "rm -rf /mnt/rk/nc"
            echo "step write sh -c 'for t in md nc; do f=mapdirect; [ \$t = nc ] && f=mapdirect-nopersist; RK_ACK_TAG=\$t rocksdb_wal_driver write /mnt/rk/\$t \$f 0 & done; wait'"
        } > "$steps"
        cut_boot rocksdb rk $boots $cuts rocksdb_wal_driver rk_check_verify || { RK_SUMMARY="FAILED"; return 1; }
        RK_NEXT[nc]=0  # its database was deleted before this boot's writers started
        local w=$CUT_WRITE acks line="" n top
        if echo "$w" | grep -q 'rocksdb_wal_driver:'; then
            log "FAIL rocksdb boot $boots: a writer failed:"; echo "$w" | grep 'rocksdb_wal_driver:' | sed 's/^/    /'
            RK_SUMMARY="FAILED"; return 1
        fi
        for t in md nc; do
            acks=$(echo "$w" | awk -v t="$t" '$1 == "ack" && $2 == t && $3 ~ /^[0-9]+$/ && NF == 3 { print $3 }')
            n=$(echo "$acks" | grep -c . || true)
            RK_ACKS[$t]=$(( ${RK_ACKS[$t]} + n ))
            if [ "$n" -gt 0 ]; then
                top=$(echo "$acks" | sort -n | tail -n1)
                RK_NEXT[$t]=$((top + 1))
            fi
            line+=" $t=$n(next ${RK_NEXT[$t]})"
        done
        cut_killed rocksdb rk $boots || { RK_SUMMARY="FAILED"; return 1; }
        cuts=$((cuts + 1))
        log "rocksdb boot $boots (${BOOT_SECONDS}s): killed ${KILL_DELAY_MS} ms after the first ack; acks:$line"
    done
    # The check after the last cut, then the benchmark in the same guest.
    local bench=${MAPDIRECT_VM_ROCKSDB_BENCH:-300} bins=rocksdb_wal_driver
    [ -x "$bin_dir/db_bench" ] && [ -f "$bin_dir/libmapdirect_rocksdb.so" ] || bench=0
    write_env "$env" 0
    {
        rk_verify_steps
        echo "step walmode sh -c 'cat /mnt/rk/md/LOG.old.* /mnt/rk/md/LOG 2>/dev/null | grep \"mapdirect: WAL\" | tail -n1'"
        if [ "$bench" != 0 ]; then
            bins="rocksdb_wal_driver db_bench libmapdirect_rocksdb.so"
            echo "step bench sh -c 'for t in 1 8; do for b in fillseq fillrandom; do for fs in posix mapdirect; do u=; [ \$fs = posix ] || u=--fs_uri=\$fs; rm -rf /mnt/rkb; echo \"== \$b threads=\$t fs=\$fs\"; LD_PRELOAD=/payload/bin/libmapdirect_rocksdb.so db_bench \$u --db=/mnt/rkb --wal_dir=/mnt/rkb --benchmarks=\$b --sync=1 --threads=\$t --num=$bench --histogram=1 --compression_type=none 2>&1 | grep -E \"^(fillseq|fillrandom) |^Percentiles\" || exit 1; done; done; done'"
        fi
    } > "$steps"
    PAYLOAD_BINS=$bins boot rkfinal "$env" "$steps" 0 1800
    res="$cfgdir/rkfinal.results"
    local fail=0
    [ "$CONSOLE_BAD" = 1 ] && fail=1
    rk_check_verify "$res" "final boot" || fail=1
    # The WAL got this configuration's mode and granularity (info log line).
    local wm
    wm=$(section "$res" walmode)
    echo "$wm" | sed 's/^/    /'
    if echo "$wm" | grep -q "mode=$EXPECT_MODE granularity=$EXPECT_GRAN"; then
        log "rocksdb: the WAL was mapped mode=$EXPECT_MODE granularity=$EXPECT_GRAN, as expected here"
    else
        log "FAIL rocksdb: expected the WAL mapped mode=$EXPECT_MODE granularity=$EXPECT_GRAN (info log above)"; fail=1
    fi
    if [ "$bench" != 0 ]; then
        if [ "$(step_rc "$res" bench)" = 0 ]; then
            { echo "$cfg (QEMU TCG guest, $(date -u +%Y-%m-%d), db_bench --num=$bench):"; section "$res" bench; } > "$cfgdir/rocksdb-bench.txt"
            log "rocksdb bench (POSIX vs mapdirect, same guest; TCG: ratios only):"
            sed 's/^/    /' "$cfgdir/rocksdb-bench.txt"
        else
            log "FAIL rocksdb bench: exit status $(step_rc "$res" bench)"; section "$res" bench | tail -n 20 | sed 's/^/    /'; fail=1
        fi
    fi
    local nc_note="caught ${RK_CAUGHT}x, ${RK_LOST[nc]} keys lost"
    if [ "$DEVICE" = virtio-blk ] && [ "$RK_CAUGHT" = 0 ]; then
        log "FAIL rocksdb: negative control never caught on virtio-blk: the test cannot tell a persisted WAL from one that is not"
        fail=1
    fi
    RK_SUMMARY="$cuts cuts, md ${RK_ACKS[md]} acks ${RK_LOST[md]} lost, negative control (nopersist) $nc_note"
    if [ $fail = 0 ]; then
        log "rocksdb: PASS in $((SECONDS - t0))s: $RK_SUMMARY"
        return 0
    fi
    RK_SUMMARY="FAILED ($RK_SUMMARY)"
    log "rocksdb: FAIL in $((SECONDS - t0))s: $RK_SUMMARY"
    return 1
}
