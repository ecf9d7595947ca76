#!/bin/bash
# One device call: build, SASS check, sanity + compute-sanitizer, correctness, timing. Every stage
# runs even when an earlier one fails; each keeps its output under $OUT (at most 8 files).
#   bash bench/attention_hopper/device.sh [seqs] [dims]
# Backward variants: today's default (dispatch: 7 below 16k tokens, 3 from 16k), wgmma_v1 (7),
# and the fused one-pass kernel with atomic dQ (9; 13 in v1's grid order; 25 its other dQ split:
# by columns at D = 64, by keys at 128; 41 dQ by one bulk reduce-add per tile; 73 P while dP runs
# at D = 64; 105 both; 137 dS stored transposed and read K-major, no transposed read), and 259
# (the deterministic kernels, the dK/dV grid in pairs of kv heads), beside cuDNN.
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
unset MINISEQ_ATTN_WGMMA MINISEQ_ATTN_WGMMA_BWD  # "dispatch" must be today's default
SEQS=${1:-4096,8192,32768}
DIMS=${2:-64,128}
B=build/attention_hopper
info=$OUT/info.txt
{ date; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv; } > $info 2>&1
t0=$(date +%s)
bash bench/attention_hopper/build.sh $B > $OUT/build.log 2>&1 || echo "BUILD FAILED (build.log)" | tee -a $info
cat $B/ptxas*.txt >> $OUT/build.log
{ echo "== ptxas spills (forward; backward; fused backward)"
  for f in ptxas ptxas_bwd ptxas_bwd_fused; do echo "$f:"; grep -E "spill" $B/$f.txt | sort | uniq -c; grep -o "C7512.*for the function '[^']*" $B/$f.txt | sed 's/_ZN7miniseq[^ ]*cu_[0-9a-f]*//'; done
  echo "== SASS (cuobjdump --dump-sass): instruction counts per kernel"
  for o in attention_hopper attention_hopper_backward attention_hopper_backward_fused; do
    cuobjdump --dump-sass $B/$o.o > $B/$o.sass 2>&1
    awk '/Function :/ {f=$3} /HGMMA/ {h[f]++} /HMMA/ {m[f]++} /SYNCS/ {s[f]++} /UTMALDG/ {t[f]++} /UBLKCP/ {u[f]++} /LDG/ {g[f]++} /LDS/ {d[f]++} /RED/ {r[f]++} /STL|LDL/ {l[f]++} /^ +\/\*[0-9a-f]+\*\// {n[f]++} END {for (k in h) print k, "instructions", n[k]+0, "HGMMA", h[k], "HMMA", m[k]+0, "SYNCS", s[k]+0, "UTMALDG", t[k]+0, "UBLKCP", u[k]+0, "LDG", g[k]+0, "LDS", d[k]+0, "RED", r[k]+0, "LDL/STL", l[k]+0}' $B/$o.sass
    grep -o "HGMMA\.[^ ]*" $B/$o.sass | sort | uniq -c | head -20
  done
  echo "build+sass $(( $(date +%s) - t0 )) s"; } >> $info 2>&1
timeout 30 $B/sanity 1 f > $B/sanity1.txt 2>&1; src=$?
IMPLS=mma,wgmma,wgmma_v1order
if [ $src = 124 ]; then echo "forward sanity hung: skipping the wgmma stages" | tee -a $info; IMPLS=mma; fi
timeout 30 $B/sanity 1 > $B/sanity1b.txt 2>&1; srcb=$?
NOBWD=""
if [ $srcb = 124 ]; then echo "backward sanity hung: skipping the wgmma backward" | tee -a $info; NOBWD=--no-wgmma-bwd; fi
# The fused backward's variants against mma.sync and variant 7, one sanity run each. A hang
# (124), a CUDA error (sanity's bit 2) or a crash (>= 128) would poison the CUDA context of the
# PyTorch runs: that variant is left out there. A wrong result alone (bits 1, 4) is left for the
# float64 comparison to describe.
# (Not run at all: variant 1, the overlapped dK/dV kernel, checked and measured slower in run 2.)
SKIPPED=",wgmma"
for vn in 9:wgmma_fused 13:wgmma_fused_v1order 25:wgmma_fused_othersplit 41:wgmma_fused_bulk 73:wgmma_fused_overlap 105:wgmma_fused_bulk_overlap 137:wgmma_fused_kmajor; do
  v=${vn%%:*}; name=${vn#*:}
  timeout 20 $B/sanity 1 b $v > $B/sanity_fused_$v.txt 2>&1; rc=$?
  echo "rc=$rc" >> $B/sanity_fused_$v.txt
  if [ $rc = 124 ] || [ $rc -ge 128 ] || [ $(( rc & 2 )) != 0 ]; then
    echo "fused backward variant $v sanity rc=$rc: $name left out of correct/time" | tee -a $info; SKIPPED="$SKIPPED,$name"
  fi
done
srcf=$(tail -1 $B/sanity_fused_9.txt | cut -d= -f2)
SKIP="--skip-bwd ${SKIPPED#,}"
( echo "== sanity forward (impl 1)"; cat $B/sanity1.txt; echo "rc=$src"
  echo "== sanity forward+backward (impl 1)"; cat $B/sanity1b.txt; echo "rc=$srcb"
  for v in 9 13 25 41 73 105 137; do echo "== sanity fused backward (variant $v: 9 heads-outer, 13 v1's order, 25 the other dQ split, 41 bulk adds, 73 P while dP, 105 both, 137 dS K-major)"; cat $B/sanity_fused_$v.txt; done
  [ $srcb = 124 ] && SF=f
  [ $src = 124 ] && exit 0
  echo "== memcheck"; timeout 60 compute-sanitizer --tool memcheck $B/sanity 1 $SF; echo "rc=$?"
  [ $srcf != 124 ] && { echo "== memcheck fused (variant 9)"; timeout 60 compute-sanitizer --tool memcheck $B/sanity 1 b 9; echo "rc=$?"; }
  srcb41=$(tail -1 $B/sanity_fused_41.txt | cut -d= -f2)
  [ "$srcb41" != 124 ] && { echo "== memcheck fused (variant 41)"; timeout 60 compute-sanitizer --tool memcheck $B/sanity 1 b 41; echo "rc=$?"; }
  [ -n "$RACE" ] && { echo "== racecheck"; timeout ${RACE_TIMEOUT:-90} compute-sanitizer --tool racecheck $B/sanity 1 $SF; echo "rc=$?"; }
  [ -n "$RACE" ] && { echo "== synccheck"; timeout ${RACE_TIMEOUT:-60} compute-sanitizer --tool synccheck $B/sanity 1 $SF; echo "rc=$?"; }
  echo "sanitizers done $(( $(date +%s) - t0 )) s" ) > $OUT/sanitizer.txt 2>&1
tail -3 $OUT/sanitizer.txt
crc=skipped
[ $src != 124 ] && { timeout ${CORRECT_TIMEOUT:-200} python3 bench/attention_hopper/run.py correct $NOBWD $SKIP --lib $B/libminiseq_attn.so --out $OUT/correct.json > $OUT/correct.log 2>&1; crc=$?; }
echo "correct rc=$crc $(( $(date +%s) - t0 )) s" | tee -a $OUT/correct.log
# A hang there: the backward variant last started is left out of the timing.
if [ "$crc" = 124 ]; then
  hung=$(grep "start bwd" $OUT/correct.log | tail -1 | awk '{print $3}')
  echo "correctness timed out in backward ${hung:-?}: left out of the timing" | tee -a $info
  [ -n "$hung" ] && SKIPPED="$SKIPPED,$hung" && SKIP="--skip-bwd ${SKIPPED#,}"
fi
grep -E "FAIL|correctness:|first failing|by 8|o\[0|lse\[0|Error|error" $OUT/correct.log | head -24
timeout ${TIME_TIMEOUT:-180} python3 bench/attention_hopper/run.py time --lib $B/libminiseq_attn.so --seqs $SEQS --dims $DIMS --impls $IMPLS \
  --bwd-impls mma,wgmma_v1,wgmma_fused,wgmma_fused_v1order,wgmma_fused_othersplit,wgmma_fused_bulk,wgmma_fused_overlap,wgmma_fused_bulk_overlap,wgmma_fused_kmajor,wgmma_pairs,dispatch $NOBWD $SKIP --out $OUT/timing.json > $OUT/timing.log 2>&1; echo "time rc=$? $(( $(date +%s) - t0 )) s" | tee -a $OUT/timing.log
cat $info
grep -E "^== |rc=|ERROR SUMMARY|PASS|FAIL|sanity B|backward|sanity.cu:" $OUT/sanitizer.txt | head -70
tail -24 $OUT/timing.log
