# Install (when missing) and start a local PostgreSQL server for the store's tests, then
# export TRIMTAB_TEST_POSTGRES_URL (a role and database of their own, a fresh random
# password, TCP on 127.0.0.1). Sourced by .ci/run; Debian/Ubuntu (apt-get, pg_ctlcluster).
# Run as root, or as a user with passwordless sudo. The password is never printed.

_tt_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

_tt_as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

_tt_start_postgres() {
    local db=trimtab_test role=trimtab
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        echo "postgres: installing the postgresql package (apt-get)"
        _tt_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _tt_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends postgresql >/dev/null
    fi
    local version
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    # pg_lsclusters -h: version cluster port status owner data-directory log-file
    # $(...) rather than a pipe into grep -q: with pipefail an early exit of grep fails.
    if [ -z "$(pg_lsclusters -h | awk -v v="$version" '$1 == v')" ]; then
        _tt_as_root pg_createcluster "$version" main >/dev/null
    fi
    local cluster port status
    read -r _ cluster port status _ < <(pg_lsclusters -h | awk -v v="$version" '$1 == v' | head -n 1)
    if [ "$status" != "online" ]; then
        _tt_as_root pg_ctlcluster "$version" "$cluster" start
    fi
    local tries=0
    until pg_isready -q -h 127.0.0.1 -p "$port"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "postgres: server $version/$cluster did not accept connections on port $port" >&2
            return 1
        fi
        sleep 0.5
    done
    # A random password, kept (mode 600) so that runs side by side do not change it under
    # each other.
    local secret="${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/ci-postgres-password" password
    if [ ! -s "$secret" ]; then
        mkdir -p "$(dirname "$secret")"
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$secret")
    fi
    password="$(cat "$secret")"
    # CREATEDB: under pytest-xdist each worker creates a database of its own
    # (tests/journal/conftest.py). SQL on stdin, so the password appears in no process
    # list; it is hex, no quoting issue.
    _tt_as_postgres psql -q -v ON_ERROR_STOP=1 -p "$port" -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role LOGIN;
    END IF;
END \$\$;
ALTER ROLE $role WITH LOGIN CREATEDB PASSWORD '$password';
SQL
    local exists
    exists="$(_tt_as_postgres psql -tAq -p "$port" -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'")"
    if [ "$exists" != "1" ]; then
        _tt_as_postgres createdb -p "$port" -O "$role" "$db"
    fi
    export TRIMTAB_TEST_POSTGRES_URL="postgresql+psycopg://$role:$password@127.0.0.1:$port/$db"
    echo "postgres: $version/$cluster on 127.0.0.1:$port, database $db (TRIMTAB_TEST_POSTGRES_URL set)"
}

_tt_start_postgres
