#!/bin/bash
# One device call: build, SASS check, sanity + compute-sanitizer, correctness, timing. Every stage
# runs even when an earlier one fails; each keeps its output under $OUT (at most 8 files).
#   cd .attn && bash bench/attention_hopper/device.sh [seqs] [dims]
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
SEQS=${1:-4096,8192,32768}
DIMS=${2:-64,128}
B=build/attention_hopper
info=$OUT/info.txt
{ date; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv; } > $info 2>&1
t0=$(date +%s)
bash bench/attention_hopper/build.sh $B > $OUT/build.log 2>&1 || echo "BUILD FAILED" | tee -a $info
cat $B/ptxas.txt >> $OUT/build.log
{ echo "== SASS of attention_hopper.o (cuobjdump --dump-sass): instruction counts per kernel"
  cuobjdump --dump-sass $B/attention_hopper.o > $B/hopper.sass 2>&1
  awk '/Function :/ {f=$3} /HGMMA/ {h[f]++} /HMMA/ {m[f]++} /SYNCS/ {s[f]++} /UTMALDG/ {t[f]++} END {for (k in h) print k, "HGMMA", h[k], "HMMA", m[k]+0, "SYNCS", s[k]+0, "UTMALDG", t[k]+0}' $B/hopper.sass
  grep -o "HGMMA\.[^ ]*" $B/hopper.sass | sort | uniq -c | head -20
  echo "build+sass $(( $(date +%s) - t0 )) s"; } >> $info 2>&1
timeout 30 $B/sanity 1 f > $B/sanity1.txt 2>&1; src=$?
IMPLS=mma,wgmma,wgmma_nopipe,wgmma_v1order,wgmma_pingpong
if [ $src = 124 ]; then echo "forward sanity hung: skipping the wgmma stages" | tee -a $info; IMPLS=mma; fi
timeout 30 $B/sanity 1 > $B/sanity1b.txt 2>&1; srcb=$?
NOBWD=""
if [ $srcb = 124 ]; then echo "backward sanity hung: skipping the wgmma backward" | tee -a $info; NOBWD=--no-wgmma-bwd; fi
( echo "== sanity forward (impl 1)"; cat $B/sanity1.txt; echo "rc=$src"
  echo "== sanity forward+backward (impl 1)"; cat $B/sanity1b.txt; echo "rc=$srcb"
  echo "== sanity (impl 2)"; timeout 30 $B/sanity 2 f; echo "rc=$?"
  [ $srcb = 124 ] && SF=f
  [ $src = 124 ] && exit 0
  echo "== memcheck"; timeout 90 compute-sanitizer --tool memcheck $B/sanity 1 $SF; echo "rc=$?"
  [ -n "$RACE" ] && { echo "== racecheck"; timeout ${RACE_TIMEOUT:-90} compute-sanitizer --tool racecheck $B/sanity 1 $SF; echo "rc=$?"; }
  [ -n "$RACE" ] && { echo "== synccheck"; timeout ${RACE_TIMEOUT:-60} compute-sanitizer --tool synccheck $B/sanity 1 $SF; echo "rc=$?"; }
  echo "sanitizers done $(( $(date +%s) - t0 )) s" ) > $OUT/sanitizer.txt 2>&1
tail -3 $OUT/sanitizer.txt
[ $src != 124 ] && timeout ${CORRECT_TIMEOUT:-150} python3 bench/attention_hopper/run.py correct $NOBWD --lib $B/libminiseq_attn.so --out $OUT/correct.json > $OUT/correct.log 2>&1; echo "correct rc=$? $(( $(date +%s) - t0 )) s" | tee -a $OUT/correct.log
grep -E "FAIL|correctness:|first failing|by 8|o\[0|lse\[0|Error|error" $OUT/correct.log | head -24
timeout ${TIME_TIMEOUT:-200} python3 bench/attention_hopper/run.py time --lib $B/libminiseq_attn.so --seqs $SEQS --dims $DIMS --impls $IMPLS $NOBWD --out $OUT/timing.json > $OUT/timing.log 2>&1; echo "time rc=$? $(( $(date +%s) - t0 )) s" | tee -a $OUT/timing.log
cat $info
grep -E "^== |rc=|ERROR SUMMARY|PASS|FAIL|sanity B|backward d" $OUT/sanitizer.txt | head -40
tail -14 $OUT/timing.log
