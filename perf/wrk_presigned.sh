#!/usr/bin/env bash
# Issue 2's load figures: wrk over presigned URLs (UNSIGNED-PAYLOAD), the method the
# issue-3 comparison targets were measured with. Starts a fresh release server on 4 drives
# (2+2) under $DIR, prepares the objects, then runs each case for $SECS seconds.
#   perf/wrk_presigned.sh            (needs: cargo build --release, wrk, python3 with boto3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${DIR:-$(mktemp -d /tmp/ferrite-perf.XXXX)}"
SECS="${SECS:-5}"
PORT="${PORT:-9400}"
PY="${PY:-python3}"
"$ROOT/target/release/ferrite" server --address "127.0.0.1:$PORT" "$DIR"/d{1...4} > "$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
urls=$("$PY" - "$PORT" <<'PYEOF'
import sys, boto3
from botocore.config import Config
port = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="ferriteadmin", aws_secret_access_key="ferriteadmin",
                  config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
s3.create_bucket(Bucket="perf")
for name, size in [("4k", 4096), ("1m", 1 << 20), ("64m", 64 << 20)]:
    s3.put_object(Bucket="perf", Key=f"obj-{name}", Body=b"x" * size)
    for op, method in [("get", "get_object"), ("put", "put_object")]:
        url = s3.generate_presigned_url(method, Params={"Bucket": "perf", "Key": f"obj-{name}"}, ExpiresIn=3600)
        print(f"{op}-{name} {url}")
PYEOF
)
url() { echo "$urls" | awk -v k="$1" '$1==k {print $2}'; }
body_lua() {  # $1 = size in bytes
    cat > "$DIR/put.lua" <<LUA
wrk.method = "PUT"
wrk.body = string.rep("a", $1)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
}
run() {  # name conns threads lua url bytes
    local name=$1 conns=$2 lua=$3 url=$4 size=$5
    local out
    out=$(wrk -t 2 -c "$conns" -d "${SECS}s" --timeout 120s --latency ${lua:+-s "$lua"} "$url" 2>&1)
    local rps p50 p99 errs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    errs=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    local sock
    sock=$(echo "$out" | awk '/Socket errors/ {sub(/.*Socket errors: /, ""); print}')
    [ -n "$sock" ] && errs="${errs:-0}; socket errors: $sock"
    local mibs
    mibs=$(awk -v r="$rps" -v s="$size" 'BEGIN {printf "%.1f", r * s / 1048576}')
    printf '| %-16s | %3s | %10s | %9s | %8s | %8s | %s |\n' "$name" "$conns" "$rps" "$mibs" "$p50" "$p99" "${errs:-0}"
}
echo "| case | conns | req/s | MiB/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|---|"
run "GET 4 KiB" 32 "" "$(url get-4k)" 4096
body_lua 4096;      run "PUT 4 KiB" 32 "$DIR/put.lua" "$(url put-4k)" 4096
run "GET 1 MiB" 32 "" "$(url get-1m)" 1048576
body_lua 1048576;   run "PUT 1 MiB" 32 "$DIR/put.lua" "$(url put-1m)" 1048576
run "GET 64 MiB" 32 "" "$(url get-64m)" 67108864
body_lua 67108864;  run "PUT 64 MiB" 32 "$DIR/put.lua" "$(url put-64m)" 67108864
echo
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status)"
