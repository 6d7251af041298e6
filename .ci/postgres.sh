# Sourced by .ci/run: start a throw-away PostgreSQL on 127.0.0.1 and export its URL for tests.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ]; then
  return 1
fi
pg_dir=$(mktemp -d /tmp/autokd-pg.XXXXXX)
chown postgres "$pg_dir"
su postgres -c "$pg_bin/initdb -D $pg_dir/data -A trust -U postgres" >/dev/null
su postgres -c "$pg_bin/pg_ctl -D $pg_dir/data -o '-c listen_addresses=127.0.0.1 -p 55432 -k $pg_dir' -l $pg_dir/log -w start" >/dev/null
su postgres -c "$pg_bin/createdb -h 127.0.0.1 -p 55432 autokd_test"
export AUTOKD_TEST_POSTGRES="postgresql://postgres@127.0.0.1:55432/autokd_test"
export AUTOKD_TEST_PG_CTL="$pg_bin/pg_ctl -D $pg_dir/data"
trap 'su postgres -c "$AUTOKD_TEST_PG_CTL -m fast stop" >/dev/null 2>&1 || true' EXIT
