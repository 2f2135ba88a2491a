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

# Python test tools (tests/python/requirements.txt, exact versions) in a virtualenv cached
# outside the clone, one per version of that file: $CAIRN_CACHE/py-venv/<hash>. Sets
# CAIRN_PY to its interpreter. A venv is only used once its install finished (the
# .complete marker), so an interrupted install is redone rather than half-used.
ensure_python_tools() {
  local requirements="tests/python/requirements.txt"
  local key; key="$(sha256sum "$requirements" | cut -c1-16)"
  local venv="$CAIRN_CACHE/py-venv/$key"
  if [ ! -f "$venv/.complete" ]; then
    say "Installing the Python test tools into $venv"
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
      rm -rf "$venv"
      echo "error: python3 cannot create a virtualenv; install venv support (Debian: apt-get install python3-venv)" >&2
      return 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    touch "$venv/.complete"
  fi
  export CAIRN_PY="$venv/bin/python"
}

# build_example_plugins CAIRN_PLUGIN: packages every plugin under plugins/ into its dist/
# folder with the plugin author's tool (`cairn-plugin`, crate sdk/cli).
build_example_plugins() {
  local plugin
  for plugin in plugins/*/; do
    say "Packaging ${plugin%/}"
    "$1" build --dir "$plugin"
  done
}

# The package files build_example_plugins wrote, one per line.
example_packages() {
  local plugin manifest
  for plugin in plugins/*/; do
    manifest="$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["id"] + "-" + m["version"])' "$plugin/cairn-plugin.json")"
    printf '%s\n' "${plugin}dist/$manifest.cairnpkg"
  done
}

# start_cairn CAIRN LOG [VAR=VALUE...]: starts `cairn serve` in the background with those
# settings (only those: DATABASE_URL and other CAIRN_* from the caller's environment are
# dropped, so a test server never touches a real ledger), waits until it listens, and
# sets CAIRN_URL (http://host:port) and CAIRN_PID. Pair it with stop_cairn in a trap.
start_cairn() {
  local bin="$1" log="$2"; shift 2
  local unset_vars=() name
  for name in $(compgen -e); do
    case "$name" in CAIRN_TEST_*|CAIRN_CACHE) ;; CAIRN_*|DATABASE_URL) unset_vars+=(-u "$name") ;; esac
  done
  env "${unset_vars[@]}" "$@" "$bin" serve >"$log" 2>&1 &
  CAIRN_PID=$!
  local line
  for _ in $(seq 1 1200); do
    line="$(grep -o 'listening on http://[^ ]*' "$log" | head -n1 || true)"
    if [ -n "$line" ]; then
      CAIRN_URL="${line#listening on }"
      export CAIRN_URL CAIRN_PID
      return 0
    fi
    if ! kill -0 "$CAIRN_PID" 2>/dev/null; then
      echo "error: cairn serve exited during start-up:" >&2
      cat "$log" >&2
      CAIRN_PID=""
      return 1
    fi
    sleep 0.1
  done
  echo "error: cairn serve did not listen within 120 s; its log:" >&2
  cat "$log" >&2
  return 1
}

# stop_cairn: SIGTERM to the server start_cairn started (it finishes in-flight requests),
# then waits for it. Safe to call twice or when none was started.
stop_cairn() {
  if [ -n "${CAIRN_PID:-}" ] && kill -0 "$CAIRN_PID" 2>/dev/null; then
    kill -TERM "$CAIRN_PID" 2>/dev/null || true
    wait "$CAIRN_PID" 2>/dev/null || true
  fi
  CAIRN_PID=""
}
