# Shared helpers for scripts/*: paths, package installation, the throwaway PostgreSQL cluster and
# MariaDB server (both with TLS from one generated CA).
# Source it; it defines functions and variables only.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC_DIR="$REPO_ROOT/src"
# Build output lives outside the clone so CI runs on fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/silk-target}"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${SCRIPT_NAME:-silk}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian packages every tier needs. Installs only what is missing, so a second run is fast.
SILK_DEB_PACKAGES=(iptables iproute2 iputils-ping ruby bundler postgresql mariadb-server openssl curl jq ethtool kmod ruby-rspec shellcheck)

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

# db_certs_start: a CA and a server certificate for 127.0.0.1 and localhost in a temp dir, shared by
# the throwaway database servers. Exports SILK_TEST_DB_CA (the CA certificate path).
db_certs_start() {
  [ -n "${DB_CERTS_DIR:-}" ] && [ -d "$DB_CERTS_DIR" ] && return 0
  DB_CERTS_DIR="$(mktemp -d /tmp/silk-dbcerts.XXXXXX)"
  chmod 0755 "$DB_CERTS_DIR"
  local d="$DB_CERTS_DIR"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=silk test database CA" \
      -keyout "$d/ca.key" -out "$d/ca.crt"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$d/server.key" -out "$d/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/ext.cnf" -out "$d/server.crt"
  } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "generating database certificates failed"; }
  chmod 0644 "$d/ca.crt" "$d/server.crt"
  export SILK_TEST_DB_CA="$d/ca.crt"
}

db_certs_stop() {
  [ -n "${DB_CERTS_DIR:-}" ] && [ -d "$DB_CERTS_DIR" ] || return 0
  rm -rf "$DB_CERTS_DIR"
  DB_CERTS_DIR=
}

# pg_start: a throwaway cluster in a temp dir, listening on a unix socket in that dir and on a
# free 127.0.0.1 port with TLS on (db_certs_start's CA). Exports SILK_TEST_PG_*,
# SILK_TEST_DATABASE_URL and SILK_TEST_DB_CA. pg_stop removes it.
pg_start() {
  local bindir; bindir="$(pg_bindir)"
  db_certs_start
  PG_DIR="$(mktemp -d /tmp/silk-pg.XXXXXX)"
  chown postgres: "$PG_DIR"
  chmod 0755 "$PG_DIR"
  install -o postgres -m 0600 "$DB_CERTS_DIR/server.key" "$PG_DIR/server.key"
  install -o postgres -m 0644 "$DB_CERTS_DIR/server.crt" "$PG_DIR/server.crt"
  PG_PORT="$(free_port)"
  runuser -u postgres -- "$bindir/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  runuser -u postgres -- "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-k $PG_DIR -p $PG_PORT -h 127.0.0.1 -c max_connections=1000 -c shared_buffers=128MB -c fsync=off -c synchronous_commit=off -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; die "postgres did not start"; }
  export SILK_TEST_PG_HOST="$PG_DIR" SILK_TEST_PG_PORT="$PG_PORT" SILK_TEST_PG_USER=postgres
  export SILK_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  log "postgres up: socket dir $PG_DIR, 127.0.0.1:$PG_PORT (TLS on)"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || { PG_DIR=; [ -n "${MYSQL_DIR:-}" ] || db_certs_stop; return 0; }
  runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=
  # The certificates go with the last server.
  [ -n "${MYSQL_DIR:-}" ] || db_certs_stop
}

# mysql_start: a throwaway MariaDB server in a temp dir, on a unix socket in that dir and on a free
# 127.0.0.1 port, TLS on with db_certs_start's certificate. A user with a generated password and
# every privilege serves the tests over TCP. Exports SILK_TEST_MYSQL_{HOST,PORT,USER,PASSWORD,SOCKET}
# and SILK_TEST_DB_CA. mysql_stop removes it.
mysql_start() {
  command -v mariadbd >/dev/null || die "mariadbd not found: install mariadb-server"
  db_certs_start
  MYSQL_DIR="$(mktemp -d /tmp/silk-mysql.XXXXXX)"
  chown mysql: "$MYSQL_DIR"
  chmod 0755 "$MYSQL_DIR"
  install -o mysql -m 0600 "$DB_CERTS_DIR/server.key" "$MYSQL_DIR/server.key"
  install -o mysql -m 0644 "$DB_CERTS_DIR/server.crt" "$MYSQL_DIR/server.crt"
  install -o mysql -m 0644 "$DB_CERTS_DIR/ca.crt" "$MYSQL_DIR/ca.crt"
  mkdir -p "$MYSQL_DIR/data" && chown mysql: "$MYSQL_DIR/data"
  MYSQL_PORT="$(free_port)"
  mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DIR/data" --skip-test-db \
    --auth-root-authentication-method=socket >"$MYSQL_DIR/install.log" 2>&1 \
    || { cat "$MYSQL_DIR/install.log" >&2; die "mariadb-install-db failed"; }
  mariadbd --no-defaults --user=mysql --datadir="$MYSQL_DIR/data" --socket="$MYSQL_DIR/mysqld.sock" \
    --pid-file="$MYSQL_DIR/mysqld.pid" --log-error="$MYSQL_DIR/server.log" \
    --bind-address=127.0.0.1 --port="$MYSQL_PORT" --skip-name-resolve --max-connections=2000 \
    --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=128M --skip-log-bin \
    --ssl-ca="$MYSQL_DIR/ca.crt" --ssl-cert="$MYSQL_DIR/server.crt" --ssl-key="$MYSQL_DIR/server.key" \
    >/dev/null 2>&1 &
  MYSQL_PID=$!
  local i
  for i in $(seq 1 120); do
    mariadb --no-defaults --socket="$MYSQL_DIR/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    kill -0 "$MYSQL_PID" 2>/dev/null || { cat "$MYSQL_DIR/server.log" >&2; die "mariadbd exited"; }
    sleep 0.5
  done
  [ "$i" -lt 120 ] || { cat "$MYSQL_DIR/server.log" >&2; die "mariadbd did not start"; }
  MYSQL_PASSWORD="$(openssl rand -hex 12)"
  mariadb --no-defaults --socket="$MYSQL_DIR/mysqld.sock" -uroot <<SQL || die "creating the test user failed"
CREATE USER 'silk'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'silk'@'%' WITH GRANT OPTION;
SQL
  export SILK_TEST_MYSQL_HOST=127.0.0.1 SILK_TEST_MYSQL_PORT="$MYSQL_PORT" SILK_TEST_MYSQL_USER=silk
  export SILK_TEST_MYSQL_PASSWORD="$MYSQL_PASSWORD" SILK_TEST_MYSQL_SOCKET="$MYSQL_DIR/mysqld.sock"
  log "mariadb up: socket $MYSQL_DIR/mysqld.sock, 127.0.0.1:$MYSQL_PORT (TLS on)"
}

mysql_stop() {
  [ -n "${MYSQL_DIR:-}" ] && [ -d "$MYSQL_DIR" ] || { MYSQL_DIR=; [ -n "${PG_DIR:-}" ] || db_certs_stop; return 0; }
  if [ -n "${MYSQL_PID:-}" ] && kill -0 "$MYSQL_PID" 2>/dev/null; then
    kill -TERM "$MYSQL_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 60); do kill -0 "$MYSQL_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$MYSQL_PID" 2>/dev/null || true
    wait "$MYSQL_PID" 2>/dev/null || true
  fi
  rm -rf "$MYSQL_DIR"
  MYSQL_DIR=
  MYSQL_PID=
  [ -n "${PG_DIR:-}" ] || db_certs_stop
}

# db_start / db_stop: both throwaway servers (and their certificates); db_stop is safe in traps.
db_start() {
  pg_start
  mysql_start
}

db_stop() {
  pg_stop
  mysql_stop
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
