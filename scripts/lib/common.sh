# Shared helpers for scripts/*: paths, package installation, the throwaway PostgreSQL cluster.
# Source it; it defines functions and variables only.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC_DIR="$REPO_ROOT/src"
# Build output lives outside the clone so CI runs on fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/silk-target}"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${SCRIPT_NAME:-silk}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian packages every tier needs. Installs only what is missing, so a second run is fast.
SILK_DEB_PACKAGES=(iptables iproute2 iputils-ping ruby bundler postgresql openssl curl jq ethtool kmod ruby-rspec shellcheck)

ensure_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]} and not root to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
}

# Loading the ifb module (the bandwidth plugin creates ifb devices in namespaces) would also create
# ifb0 and ifb1 in the root namespace; load it first without them.
prepare_kernel_modules() {
  [ -d /sys/module/ifb ] || modprobe ifb numifbs=0 2>/dev/null || true
  modprobe vxlan 2>/dev/null || true
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  die "no PostgreSQL server binaries found"
}

free_port() {
  python3 - <<'PY' 2>/dev/null || ruby -rsocket -e 's=TCPServer.new("127.0.0.1",0); puts s.addr[1]; s.close'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# pg_start: a throwaway cluster in a temp dir, listening on a unix socket in that dir and on a
# free 127.0.0.1 port. Exports SILK_TEST_PG_* and SILK_TEST_DATABASE_URL. pg_stop removes it.
pg_start() {
  local bindir; bindir="$(pg_bindir)"
  PG_DIR="$(mktemp -d /tmp/silk-pg.XXXXXX)"
  chown postgres: "$PG_DIR"
  chmod 0755 "$PG_DIR"
  PG_PORT="$(free_port)"
  runuser -u postgres -- "$bindir/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  runuser -u postgres -- "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-k $PG_DIR -p $PG_PORT -h 127.0.0.1 -c max_connections=1000 -c shared_buffers=128MB -c fsync=off -c synchronous_commit=off" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; die "postgres did not start"; }
  export SILK_TEST_PG_HOST="$PG_DIR" SILK_TEST_PG_PORT="$PG_PORT" SILK_TEST_PG_USER=postgres
  export SILK_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  log "postgres up: socket dir $PG_DIR, 127.0.0.1:$PG_PORT"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || return 0
  runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=
}

# find_bosh: prints the bosh CLI to use: $BOSH_CLI, else `bosh` on PATH, else ../shared/tools/bosh
# next to the repository (a team-wide tool directory). Fails with a clear message without one.
find_bosh() {
  local candidate
  if [ -n "${BOSH_CLI:-}" ]; then
    candidate="$(command -v "${BOSH_CLI}" 2>/dev/null)" && [ -x "${candidate}" ] \
      || die "BOSH_CLI=${BOSH_CLI} is not an executable bosh CLI"
  elif candidate="$(command -v bosh 2>/dev/null)"; then
    :
  elif [ -x "${REPO_ROOT}/../shared/tools/bosh" ]; then
    candidate="$(cd "${REPO_ROOT}/../shared/tools" && pwd)/bosh"
  else
    die "bosh CLI not found: install it (https://bosh.io/docs/cli-v2-install/), put it on PATH or set BOSH_CLI=<path to bosh>"
  fi
  echo "${candidate}"
}
