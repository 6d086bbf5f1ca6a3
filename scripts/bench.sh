#!/usr/bin/env bash
# Reproduces docs/benchmarks.md on this machine, in one run: builds the
# exchange, the load command and a single-node etcd with its benchmark tool
# (in a scratch module, from the module proxy), starts the exchange (with
# the anchors of --bench-addr) and etcd on loopback with their data on the
# same disk, drives both at 1, 16 and 64 clients with the same 1.4 KB
# payload, then again in alternate rounds at 1 and at 64 clients (the
# targets are the medians of the rounds' ratios), then runs the store
# benchmarks, the inbox list at 1,000,000 referrals and the retention
# sweep of 1,000,000 stored answers included. Everything stops by itself
# at the end.
#
#   scripts/bench.sh [results-dir]      (default: bench-results/, git-ignored)
#
# SCALE=0.25 scripts/bench.sh makes the load runs four times shorter;
# STORE_BENCH=0 leaves out the store benchmarks; ETCD_BACKEND=0 the
# exchange on etcd (one process, then two, beside etcd's txn-put of what one
# CreateReferral writes); POSTGRES=0 the same transaction in PostgreSQL
# through pgbench (Debian's postgresql package); PIN=1 holds the exchange
# and etcd to the first half of the cores and the load command (etcd's
# benchmark tool with it) to the other half (taskset, from util-linux), so
# that no server shares its cores with the load that drives it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/exchange-bench.XXXXXX")
pids=()
pg="" as_pg=() pgbin=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  if [ -n "$pg" ]; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg"
  fi
}
trap cleanup EXIT

ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
echo "== building (etcd $ETCD_VERSION in a scratch module: go install refuses its replace directives)"
go build -tags bench -o "$work/exchange" ./server
go build -o "$work/loadtest" ./tools/loadtest
mkdir -p "$work/etcd-build"
( cd "$work/etcd-build" &&
  printf 'module etcdbuild\n\ngo 1.26\n' > go.mod &&
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
  go build -o "$work/etcd" go.etcd.io/etcd/server/v3 &&
  go build -o "$work/etcd-benchmark" go.etcd.io/etcd/v3/tools/benchmark )

srv=() load=()
if [ "${PIN:-0}" = 1 ]; then
  cores=$(nproc --all)
  half=$((cores / 2))
  [ "$half" -ge 1 ] || { echo "PIN=1 needs at least two cores" >&2; exit 1; }
  srv_cores="0-$((half - 1))" load_cores="$half-$((cores - 1))"
  srv=(taskset -c "$srv_cores")
  load=(taskset -c "$load_cores")
fi

echo "== machine"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "disk: $(df -h "$work" | awk 'NR==2{print $1, $2}') ($(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo unknown))"
  echo "go: $(go version)"
  echo "etcd: $ETCD_VERSION"
  echo "exchange: $(git rev-parse --short HEAD)"
  if [ "${PIN:-0}" = 1 ]; then echo "pinned: servers on cores $srv_cores, the load on cores $load_cores"; fi
} | tee "$out/machine.txt"

echo "== starting etcd and the exchange (loopback only)"
"${srv[@]}" "$work/etcd" --data-dir "$work/etcd-data" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
  --quota-backend-bytes 8589934592 --log-level error > "$out/etcd.log" 2>&1 &
pids+=($!)
"${srv[@]}" "$work/exchange" --data-dir "$work/exchange-data" --grpc-addr 127.0.0.1:50051 --http-addr 127.0.0.1:8080 \
  --bench-addr 127.0.0.1:50061 --pprof-addr 127.0.0.1:6061 --rate-limit 0 --log-level warn > "$out/exchange.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
  "$work/exchange" healthcheck --grpc-addr 127.0.0.1:50051 >/dev/null 2>&1 && curl -sf http://127.0.0.1:2379/health >/dev/null && break
  sleep 0.2
done

echo "== load: CreateReferral over gRPC and REST, the anchors, etcd put"
"${load[@]}" "$work/loadtest" --data-dir "$work/exchange-data" --bench-addr 127.0.0.1:50061 \
  --etcd-benchmark "$work/etcd-benchmark" --etcd-endpoint 127.0.0.1:2379 \
  --scale "${SCALE:-1}" --json "$out/load.json" | tee "$out/load.txt"
curl -s http://127.0.0.1:8080/metrics > "$out/metrics-after-load.txt"

if [ "${ETCD_BACKEND:-1}" = 1 ]; then
  echo "== the footprint: bytes per referral on each engine, and one CreateReferral's etcd transaction"
  go test ./server -run '^$' -bench Footprint -benchtime 1x 2>/dev/null | grep -E '^Benchmark' | tee "$out/footprint.txt"
  txn_ops=$(awk '/etcd/ { for (i = 1; i < NF; i++) if ($(i+1) == "ops/CreateReferral") print int($i) }' "$out/footprint.txt")
  txn_bytes=$(awk '/etcd/ { for (i = 1; i < NF; i++) if ($(i+1) == "bytes/CreateReferral") print int($i) }' "$out/footprint.txt")

  echo "== the etcd engine: CreateReferral through one exchange on the same etcd, beside etcd txn-put of $txn_ops keys and $txn_bytes bytes"
  etcd_exchange() { # $1: 1 or 2
    "${srv[@]}" "$work/exchange" --data-dir "$work/etcd-exchange-$1" --grpc-addr "127.0.0.1:5007$1" --http-addr "127.0.0.1:808$1" \
      --etcd-endpoints http://127.0.0.1:2379 --etcd-prefix /bench/ --rate-limit 0 --log-level warn > "$out/etcd-exchange-$1.log" 2>&1 &
    pids+=($!)
    for i in $(seq 100); do
      "$work/exchange" healthcheck --grpc-addr "127.0.0.1:5007$1" >/dev/null 2>&1 && break
      sleep 0.2
    done
  }
  etcd_exchange 1
  "${load[@]}" "$work/loadtest" --grpc-addr 127.0.0.1:50071 --http-addr 127.0.0.1:8081 --data-dir "$work/etcd-exchange-1" \
    --transports grpc --lone-rounds 0 --rounds 0 --label "on etcd, 1 process" \
    --etcd-benchmark "$work/etcd-benchmark" --etcd-endpoint 127.0.0.1:2379 --etcd-txn-ops "$txn_ops" --etcd-txn-bytes "$txn_bytes" \
    --scale "${SCALE:-1}" --json "$out/load-etcd-1.json" | tee "$out/load-etcd-1.txt"
  echo "== the etcd engine: CreateReferral through two exchanges over the same prefix, the clients shared between them"
  etcd_exchange 2
  "${load[@]}" "$work/loadtest" --grpc-addr 127.0.0.1:50071,127.0.0.1:50072 --http-addr 127.0.0.1:8081 --data-dir "$work/etcd-exchange-1" \
    --transports grpc --lone-rounds 0 --rounds 0 --label "on etcd, 2 processes" \
    --scale "${SCALE:-1}" --json "$out/load-etcd-2.json" | tee "$out/load-etcd-2.txt"
fi

if [ "${POSTGRES:-1}" = 1 ]; then
  echo "== PostgreSQL 15 (Debian's, its defaults, on loopback): one CreateReferral's writes in one transaction through pgbench"
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pg=$(mktemp -d "${TMPDIR:-/var/tmp}/exchange-bench-pg.XXXXXX")
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg"; as_pg=(runuser -u postgres --); fi
  chmod 755 "$pg"
  cp scripts/pgbench/*.sql "$pg/" && chmod 644 "$pg"/*.sql
  "${as_pg[@]}" "$pgbin/initdb" -D "$pg/data" -A trust -U bench > /dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/log" -o "-c listen_addresses=127.0.0.1 -p 5499 -k $pg" -w start > /dev/null
  "${as_pg[@]}" psql -h 127.0.0.1 -p 5499 -U bench -d postgres -q -f "$pg/schema.sql"
  echo "$("${as_pg[@]}" "$pgbin/postgres" --version)" | tee "$out/pgbench.txt"
  for c in 1 16 64; do
    total=$(awk -v c="$c" -v s="${SCALE:-1}" 'BEGIN { n = (c == 1 ? 1000 : (c <= 16 ? 4000 : 8000)) * s; if (n < 50) n = 50; print int(n / c) }')
    rm -f "$pg"/lat*
    res=$(cd "$pg" && "${as_pg[@]}" "$pgbin/pgbench" -h 127.0.0.1 -p 5499 -U bench -n -f create_referral.sql -c "$c" -j "$(( c < 2 ? 1 : 2 ))" \
      -t "$total" -M prepared -l --log-prefix "$pg/lat" postgres 2>&1)
    tps=$(echo "$res" | awk '/^tps/ { print $3 }')
    lat=$(cat "$pg"/lat* | awk '{ print $3 }' | sort -n | awk '{ a[NR] = $1 } END { printf "p50 %.2f ms  p99 %.2f ms", a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000 }')
    printf '  %-28s clients=%-3d %8.0f/s  %s\n' "PostgreSQL pgbench" "$c" "$tps" "$lat" | tee -a "$out/pgbench.txt"
  done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -m fast stop > /dev/null
fi

[ "${STORE_BENCH:-1}" = 0 ] && exit 0
echo "== store benchmarks"
EXCHANGE_BENCH_LARGE=1 go test ./server/storage/bolt -run '^$' -bench 'Create|StateChange|EventAppend|InboxList|IndexLayout' \
  -benchmem -benchtime 2000x | tee "$out/store.txt"
# Each run of a sweep deletes an hour of a week's stored answers: a few
# runs say how long a write waits for it.
EXCHANGE_BENCH_LARGE=1 go test ./server/storage/bolt -run '^$' -bench AnswerSweep -benchtime 3x | tee -a "$out/store.txt"
