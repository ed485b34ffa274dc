#!/bin/sh
# Issue 23's numbers, side by side on one quiet machine: a baseline commit and this tree, alternating.
#
#     bench/stream_series.sh [BASE_COMMIT] [ROUNDS]      # defaults: c5916c8 (before issue 23), 3
#
# Each round runs bench/bench_stream.py (12 photos, 30 fps, the daemon as the service runs it) on
# the baseline (a git worktree, imported through PYTHONPATH), on this tree with the detectors on
# the CPUs available (the default) and on one thread, and this tree's reader frame by frame
# (--pace 0: the CPU cost and the reads, whatever the machine does). One JSON line per run, prefixed
# with what ran; the load average before each round says whether the machine was quiet.
set -eu
base=${1:-c5916c8}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
tmp=$(mktemp -d)
wt="$tmp/base"
git -C "$root" worktree add --detach "$wt" "$base" >/dev/null 2>&1
trap 'git -C "$root" worktree remove --force "$wt"; rm -rf "$tmp"' EXIT
ln -s "$(cd "$root/.." && pwd)/shared" "$tmp/shared"  # the baseline finds ../shared/data as this tree does
export MALLOC_ARENA_MAX=2
for i in $(seq "$rounds"); do
    echo "# round $i, $(date -u +%Y-%m-%dT%H:%M)Z, load $(cut -d' ' -f1-3 /proc/loadavg), $(git -C "$root" describe --always --dirty)"
    PYTHONPATH="$wt" "$py" "$wt/bench/bench_stream.py" --photos 12 | sed "s/^/base $base: /"
    "$py" "$root/bench/bench_stream.py" --photos 12 | sed "s/^/this: /"
    "$py" "$root/bench/bench_stream.py" --photos 12 --reader detector_threads=1 | sed "s/^/this, detector_threads 1: /"
done
"$py" "$root/bench/bench_stream.py" --photos 12 --pace 0 | sed "s/^/this, every frame read: /"
