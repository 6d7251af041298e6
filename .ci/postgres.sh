# Sourced by .ci/run: start a throw-away PostgreSQL on 127.0.0.1 and export its URL for tests.
# Exports AUTOKD_TEST_POSTGRES (URL) and AUTOKD_TEST_PG_CTL (pg_ctl with -D and -l: tests stop and
# restart the server with `su postgres -c "$AUTOKD_TEST_PG_CTL stop -m fast"` / `... start -w`; the
# address, port and socket directory live in postgresql.conf so a plain start brings it back).
# Returns 1 (nothing exported) when the server binaries are missing or the server cannot start.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || ! id postgres >/dev/null 2>&1; then
  return 1
fi
pg_dir=$(mktemp -d /tmp/autokd-pg.XXXXXX)
chown postgres "$pg_dir"
su postgres -c "$pg_bin/initdb -D $pg_dir/data -A trust -U postgres" >/dev/null || return 1
printf "listen_addresses = '127.0.0.1'\nport = 55432\nunix_socket_directories = '%s'\n" \
  "$pg_dir" >> "$pg_dir/data/postgresql.conf"
su postgres -c "$pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/log -w start" >/dev/null || return 1
su postgres -c "$pg_bin/createdb -h 127.0.0.1 -p 55432 autokd_test" || return 1
export AUTOKD_TEST_POSTGRES="postgresql://postgres@127.0.0.1:55432/autokd_test"
export AUTOKD_TEST_PG_CTL="$pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/log"
trap 'su postgres -c "$AUTOKD_TEST_PG_CTL -m fast stop" >/dev/null 2>&1 || true' EXIT
