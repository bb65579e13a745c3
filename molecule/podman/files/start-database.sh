# shellcheck shell=sh
# Run by prepare.yml as root inside a container of the web test image (sh -eu -c):
#   start-database <engine: postgresql|mariadb> <database and user name> <port>
# Starts the engine's server from the image's Debian packages - the cluster 15/main or the data
# directory that their installation made - listening on the container's loopback only, then
# creates the database and its owner with the password read from standard input (never an
# argument: printf and the here-document are shell builtins).
engine="$1" name="$2" port="$3"
IFS= read -r password || [ -n "$password" ]
case "$engine" in
postgresql)
    # The port pg_createcluster picked depends on the machine that built the image (5433 when
    # 5432 was taken there): set it. No fsync: a throw-away database.
    printf 'port = %s\nfsync = off\n' "$port" > /etc/postgresql/15/main/conf.d/dbsafe.conf
    pg_ctlcluster 15 main start
    cd /tmp || exit 1   # psql as postgres: not from /root
    printf "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s';\nCREATE DATABASE %s OWNER %s;\n" \
        "$name" "$password" "$name" "$name" \
        | setpriv --reuid=postgres --regid=postgres --init-groups psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres
    ;;
mariadb)
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    start-stop-daemon --start --background --make-pidfile --pidfile /run/mysqld/dbsafe.pid \
        --output /var/log/dbsafe-mariadb.log --exec /usr/sbin/mariadbd -- \
        --user=mysql --bind-address=127.0.0.1 --port="$port" --skip-log-bin --innodb-buffer-pool-size=32M
    tries=0
    until mariadb-admin --silent ping 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -gt 120 ]; then
            echo "MariaDB did not answer within 60 s:" >&2
            cat /var/log/dbsafe-mariadb.log >&2
            exit 1
        fi
        sleep 0.5
    done
    # root over the socket (unix_socket authentication, as Debian installs it)
    mariadb <<SQL
CREATE DATABASE \`$name\` CHARACTER SET utf8mb4;
CREATE USER '$name'@'%' IDENTIFIED BY '$password';
CREATE USER '$name'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`$name%\`.* TO '$name'@'%';
GRANT ALL PRIVILEGES ON \`$name%\`.* TO '$name'@'localhost';
SQL
    ;;
*)
    echo "start-database: unknown engine $engine" >&2
    exit 2
    ;;
esac
