#!/usr/bin/env bash
# Long GPU work in calls of at most 10 minutes: start steps in the background (setsid, so they outlive the call that
# started them while the machine stays warm), then poll from the next calls.
#
#   scripts/gpu_job.sh start 'python3 -m pytest -m gpu tests/gpu' 'python3 bench/gpu_lab.py --model smollm --out $JOB/res'
#   scripts/gpu_job.sh poll [SECONDS]     wait up to SECONDS (default 0) for the job to end, then print its state and
#                                          copy its logs and $JOB/res/* into $OUT (when set)
#
# Each step runs after `source scripts/gpu_env.sh`, in the repository root, in order, with its own log
# ($JOB/step<N>.log) and a line in $JOB/status with its exit status; a failed step does not stop the next.
# $JOB is ~/grove-job (GROVE_JOB moves it).
set -uo pipefail
cd "$(dirname "$0")/.."
JOB=${GROVE_JOB:-$HOME/grove-job}
case "${1:-}" in
  start)
    shift
    [ $# -gt 0 ] || { echo "ERROR: start needs the steps, each one quoted command" >&2; exit 2; }
    if [ -f "$JOB/status" ] && ! grep -q ' done$' "$JOB/status"; then
      echo "ERROR: a job is still running in $JOB (scripts/gpu_job.sh poll)" >&2; exit 2
    fi
    rm -rf "$JOB"; mkdir -p "$JOB/res"
    printf '%s\n' "$@" > "$JOB/steps"
    export JOB
    setsid nohup bash -c '
      st() { echo "$(date +%T) $1" >> "$JOB/status"; }
      source scripts/gpu_env.sh || { st "gpu_env.sh failed"; st done; exit 1; }
      export PYTHONUNBUFFERED=1
      st start; n=0
      while IFS= read -r step; do
        n=$((n + 1)); st "step $n: $step"
        bash -c "$step" > "$JOB/step$n.log" 2>&1; st "step $n rc=$?"
      done < "$JOB/steps"
      st done' > "$JOB/job.log" 2>&1 < /dev/null &
    echo "started $# step(s) in $JOB"
    ;;
  poll)
    deadline=$(( $(date +%s) + ${2:-0} ))
    while [ "$(date +%s)" -lt "$deadline" ] && ! grep -qs ' done$' "$JOB/status"; do sleep 5; done
    cat "$JOB/status" 2>/dev/null || { echo "no job in $JOB"; exit 1; }
    for f in "$JOB"/step*.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; tail -c 1200 "$f"; echo; }; done
    if [ -n "${OUT:-}" ]; then
      cp "$JOB"/step*.log "$JOB"/res/* "$OUT"/ 2>/dev/null || true
    fi
    grep -qs ' done$' "$JOB/status"
    ;;
  *)
    sed -n '2,12p' "$0"; exit 2
    ;;
esac
