#!/bin/bash
# Entrypoint of the lab's mysql stand-in (MariaDB from Debian). It follows the
# official mysql/mariadb images' docker-entrypoint.sh: on the first start it
# needs MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD or
# MYSQL_RANDOM_ROOT_PASSWORD, creates the datadir, sets root's password
# (root@localhost and root@'%'), honours MYSQL_DATABASE, MYSQL_USER and
# MYSQL_PASSWORD and runs /docker-entrypoint-initdb.d/*.sh|*.sql; then it
# runs the server in the foreground as the mysql user, logging to stderr.
set -eo pipefail

DATADIR=/var/lib/mysql
# The first-start server listens on its own socket only, so nothing (a
# learner's `docker exec mydb mysql ...` included) reaches it by accident.
INIT_SOCKET=/run/mysqld/init.sock

mysql_log() {
	local type=$1; shift
	printf '%s [%s] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$type" "$*" >&2
}
mysql_note() { mysql_log Note "$@"; }
mysql_error() { mysql_log ERROR "$@"; exit 1; }

# 'It'"'"'s' -> It\'s, for SQL string literals.
sql_string() {
	local newline=$'\n'
	local escaped=${1//\\/\\\\}
	escaped=${escaped//$newline/\\n}
	printf '%s' "${escaped//\'/\\\'}"
}
# For `identifiers`.
sql_ident() { printf '%s' "${1//\`/\`\`}"; }

init_sql() {
	mariadb --protocol=socket --socket="$INIT_SOCKET" --user=root \
		--password="${ROOT_PASSWORD_SET-}" "$@"
}

initialise() {
	if [ -z "$MYSQL_ROOT_PASSWORD" ] && [ -z "$MYSQL_ALLOW_EMPTY_PASSWORD" ] \
		&& [ -z "$MYSQL_RANDOM_ROOT_PASSWORD" ]; then
		mysql_error $'Database is uninitialized and password option is not specified\n\tYou need to specify one of the following as an environment variable:\n\t- MYSQL_ROOT_PASSWORD\n\t- MYSQL_ALLOW_EMPTY_PASSWORD\n\t- MYSQL_RANDOM_ROOT_PASSWORD'
	fi
	if [ -n "$MYSQL_USER" ] && [ "$MYSQL_USER" = root ]; then
		mysql_error $'MYSQL_USER="root", MYSQL_USER and MYSQL_PASSWORD are for configuring a regular user and cannot be used for the root user\n\tRemove MYSQL_USER="root" and use one of the following to control the root user password:\n\t- MYSQL_ROOT_PASSWORD\n\t- MYSQL_ALLOW_EMPTY_PASSWORD\n\t- MYSQL_RANDOM_ROOT_PASSWORD'
	fi

	mysql_note "Initializing database files"
	chown mysql:mysql "$DATADIR"
	mariadb-install-db --user=mysql --datadir="$DATADIR" --rpm --skip-test-db \
		--auth-root-authentication-method=normal --skip-log-bin >/dev/null
	mysql_note "Database files initialized"

	mysql_note "Starting temporary server"
	"$@" --user=mysql --skip-networking --skip-log-bin --socket="$INIT_SOCKET" &
	local pid=$! i
	for i in $(seq 300); do
		init_sql --execute='SELECT 1' >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || mysql_error "Unable to start server."
		sleep 0.1
	done
	init_sql --execute='SELECT 1' >/dev/null 2>&1 || mysql_error "Unable to start server."
	mysql_note "Temporary server started."

	local root_password=$MYSQL_ROOT_PASSWORD
	if [ -n "$MYSQL_RANDOM_ROOT_PASSWORD" ]; then
		root_password=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 512 /dev/urandom))
		root_password=${root_password:0:32}
		mysql_note "GENERATED ROOT PASSWORD: $root_password"
	fi
	local pw
	pw=$(sql_string "$root_password")
	{
		echo "SET @@SESSION.SQL_LOG_BIN=0;"
		# mariadb-install-db also made root@<container id>; one root@'%' is enough.
		echo "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', 'root'@'$(sql_string "$HOSTNAME")';"
		echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$pw');"
		echo "CREATE USER 'root'@'%' IDENTIFIED BY '$pw';"
		echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		if [ -n "$MYSQL_DATABASE" ]; then
			mysql_note "Creating database ${MYSQL_DATABASE}"
			echo "CREATE DATABASE IF NOT EXISTS \`$(sql_ident "$MYSQL_DATABASE")\`;"
		fi
		if [ -n "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
			mysql_note "Creating user ${MYSQL_USER}"
			echo "CREATE USER '$(sql_string "$MYSQL_USER")'@'%' IDENTIFIED BY '$(sql_string "$MYSQL_PASSWORD")';"
			if [ -n "$MYSQL_DATABASE" ]; then
				mysql_note "Giving user ${MYSQL_USER} access to schema ${MYSQL_DATABASE}"
				echo "GRANT ALL ON \`$(sql_ident "$MYSQL_DATABASE")\`.* TO '$(sql_string "$MYSQL_USER")'@'%';"
			fi
		fi
		echo "FLUSH PRIVILEGES;"
	} | init_sql
	ROOT_PASSWORD_SET=$root_password

	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh) mysql_note "$0: running $f"; . "$f" ;;
			*.sql) mysql_note "$0: running $f"; init_sql ${MYSQL_DATABASE:+--database="$MYSQL_DATABASE"} < "$f" ;;
			*.sql.gz) mysql_note "$0: running $f"; gunzip -c "$f" | init_sql ${MYSQL_DATABASE:+--database="$MYSQL_DATABASE"} ;;
			*) [ -e "$f" ] && mysql_note "$0: ignoring $f" ;;
		esac
	done

	mysql_note "Stopping temporary server"
	kill "$pid"
	wait "$pid" || true
	mysql_note "Temporary server stopped"
	echo >&2
	mysql_note "MySQL init process done. Ready for start up."
	echo >&2
}

# `docker run mysql --option` passes options to the server.
if [ "${1:0:1}" = '-' ]; then
	set -- mysqld "$@"
fi

if [ "$1" = mysqld ] || [ "$1" = mariadbd ]; then
	mysql_note "Entrypoint script for the lab's mysql stand-in (MariaDB $(mariadbd --version | sed -n 's/.*Ver \([^ ]*\).*/\1/p')) started."
	mkdir -p /run/mysqld
	chown mysql:mysql /run/mysqld
	if [ ! -d "$DATADIR/mysql" ]; then
		initialise "$@"
	fi
	exec "$@" --user=mysql
fi

exec "$@"
