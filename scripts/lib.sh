# Shared set-up for scripts/run and scripts/test. Every step is idempotent: running it
# twice does nothing the second time.

# Builds go to a cache outside the clone so a fresh clone (and CI) reuses earlier work.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
export CAIRN_CACHE="${CAIRN_CACHE:-$HOME/.cache/cairn}"
mkdir -p "$CAIRN_CACHE"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    say "Installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
  fi
}

# PostgreSQL: use the one at $CAIRN_TEST_DATABASE_URL (default the local server); start a
# stopped local cluster; otherwise say what to do.
ensure_postgres() {
  export CAIRN_TEST_DATABASE_URL="${CAIRN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if pg_isready -q -d "$CAIRN_TEST_DATABASE_URL" 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    say "Starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do
      pg_isready -q -d "$CAIRN_TEST_DATABASE_URL" 2>/dev/null && return 0
      sleep 1
    done
  fi
  cat >&2 <<MSG
PostgreSQL is not reachable at $CAIRN_TEST_DATABASE_URL.
The ledger tests need a real PostgreSQL (15 or later) that the current user can create
databases on. Either install it (Debian: apt-get install postgresql) and start it
(pg_ctlcluster <version> main start), or point CAIRN_TEST_DATABASE_URL at one.
MSG
  return 1
}
