#!/usr/bin/env bash
# A three-node MariaDB Galera cluster on 127.0.0.1, for tests and CI fault
# tests of the gateway. Every node is a plain mariadbd with its own
# --defaults-file under DIR; nothing outside DIR is written, and the
# system's own MariaDB server (port 3306, /var/lib/mysql) is not touched.
#
#   cluster.sh start   [DIR]          create (or start again) the cluster, wait until 3 nodes are Synced
#   cluster.sh stop    [--purge] [DIR] stop every node (SIGTERM, then SIGKILL after GALERA_STOP_TIMEOUT);
#                                     --purge then removes DIR
#   cluster.sh status  [DIR]          pid, port and wsrep state of each node; exit 1 unless all 3 are Synced
#   cluster.sh wait    [DIR]          wait until all 3 nodes are Synced in one Primary component of size 3
#   cluster.sh kill    N [DIR]        kill -9 node N (fault test)
#   cluster.sh restart N [DIR]        start node N again (no bootstrap) and tell whether it rejoined by IST or SST
#   cluster.sh isolate N [DIR]        cut node N off the group (gmcast.isolate=1): it leaves the Primary
#                                     component but keeps running and answering (with errors 1047)
#   cluster.sh rejoin  N [DIR]        undo isolate (gmcast.isolate=0) and wait until N is Synced again
#   cluster.sh force-primary N [DIR]  make node N Primary on its own (pc.bootstrap=YES) when it lost
#                                     quorum because the two others crashed
#   cluster.sh env     [DIR]          print DIR/env (ports, sockets, DSNs)
#   cluster.sh sql     N [mariadb args...]   the mariadb client on node N's socket as root
#                                     (DIR from GALERA_DIR)
#
# DIR defaults to ${GALERA_DIR:-/tmp/gateway-galera}. Environment:
#   GALERA_TIMEOUT       seconds to wait for the cluster or a node (default 120)
#   GALERA_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 60)
#   GALERA_PORT_BASE     fixed ports: node i uses BASE+10*(i-1) + 0 (SQL), 1 (gcomm), 2 (IST), 3 (SST);
#                        unset: a free block is chosen at random in 20000-31999
#   GALERA_GCACHE_SIZE   gcache.size of each node (default 64M): the write-sets kept for IST
#   GALERA_SYNC_WAIT     wsrep_sync_wait of each node (default 1: causal reads; 0 is MariaDB's default; README.md)
#   GALERA_PROVIDER_OPTIONS  more wsrep_provider_options, appended ("evs.suspect_timeout=PT3S; ...")
#   GALERA_DB            database created at the first start and named in the DSNs (default gateway)
#   MARIADBD, GALERA_PROVIDER  paths of mariadbd and libgalera_smm.so
set -euo pipefail

PROG=${0##*/}
MARIADBD=${MARIADBD:-$(command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd)}
INSTALL_DB=${INSTALL_DB:-$(command -v mariadb-install-db 2>/dev/null || echo mariadb-install-db)}
CLIENT=${CLIENT:-$(command -v mariadb 2>/dev/null || echo mariadb)}
PROVIDER=${GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
TIMEOUT=${GALERA_TIMEOUT:-120}
STOP_TIMEOUT=${GALERA_STOP_TIMEOUT:-60}
GCACHE=${GALERA_GCACHE_SIZE:-64M}
SYNC_WAIT=${GALERA_SYNC_WAIT:-1}
DB=${GALERA_DB-gateway}
NODES=(1 2 3)

if [ "$(id -u)" = 0 ]; then RUN_USER=mysql; else RUN_USER=$(id -un); fi

log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- layout

set_dir() {
	DIR=${1:-${GALERA_DIR:-/tmp/gateway-galera}}
	case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
	DIR=${DIR%/}
}
ndir() { echo "$DIR/node$1"; }
cnf() { echo "$DIR/node$1/my.cnf"; }
sock() { echo "$DIR/node$1/mariadbd.sock"; }
errlog() { echo "$DIR/node$1/error.log"; }
pidfile() { echo "$DIR/node$1/mariadbd.pid"; }
runpid() { echo "$DIR/node$1/run.pid"; }
datadir() { echo "$DIR/node$1/data"; }
grastate() { echo "$DIR/node$1/data/grastate.dat"; }

check_node_arg() {
	case ${1:-} in 1 | 2 | 3) ;; *) die "node number must be 1, 2 or 3 (got '${1:-}')" ;; esac
}

need_tools() {
	[ -x "$MARIADBD" ] || die "mariadbd not found ($MARIADBD)"
	[ -f "$PROVIDER" ] || die "Galera provider not found ($PROVIDER): apt-get install -y galera-4"
	command -v "$CLIENT" >/dev/null || die "mariadb client not found"
	command -v rsync >/dev/null || die "rsync not found (SST uses it): apt-get install -y rsync"
	command -v wsrep_sst_rsync >/dev/null || die "wsrep_sst_rsync not found (mariadb-server package)"
}

load_env() {
	[ -f "$DIR/env" ] || die "$DIR/env not found: no cluster was created in $DIR (cluster.sh start $DIR)"
	# shellcheck disable=SC1091
	. "$DIR/env"
}
port() { local v="GALERA_NODE$1_$2"; echo "${!v}"; } # port N SQL|GCOMM|IST|SST

# ---------------------------------------------------------------- ports

port_busy() { # PORT [listen]: something listens on, or (without "listen") holds, 127.0.0.1:PORT
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
	if command -v ss >/dev/null; then
		# the nodes of the last run leave TIME_WAIT sockets, which do not keep
		# them from listening there again
		if [ "${2:-}" = listen ]; then
			[ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ] && return 0
		else
			[ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ] && return 0
		fi
	fi
	return 1
}

block_free() { # the 12 ports of base $1 are free
	local i k
	for i in "${NODES[@]}"; do
		for k in 0 1 2 3; do port_busy $(($1 + 10 * (i - 1) + k)) && return 1; done
	done
	return 0
}

pick_ports() {
	local base tries=0
	if [ -n "${GALERA_PORT_BASE:-}" ]; then
		base=$GALERA_PORT_BASE
		block_free "$base" || die "GALERA_PORT_BASE=$base: some of ports $base-$((base + 23)) are in use"
	else
		while :; do
			base=$((20000 + (RANDOM % 1200) * 10))
			block_free "$base" && break
			tries=$((tries + 1))
			[ $tries -lt 50 ] || die "no free block of ports found in 20000-31999"
		done
	fi
	PORT_BASE=$base
}

write_env() {
	local i p f="$DIR/env.tmp"
	{
		echo "# written by $PROG start; source it: . $DIR/env"
		echo "GALERA_DIR=$DIR"
		echo "GALERA_PORT_BASE=$PORT_BASE"
		for i in "${NODES[@]}"; do
			p=$((PORT_BASE + 10 * (i - 1)))
			echo "GALERA_NODE${i}_PORT=$p"
			echo "GALERA_NODE${i}_SQL=$p"
			echo "GALERA_NODE${i}_GCOMM=$((p + 1))"
			echo "GALERA_NODE${i}_IST=$((p + 2))"
			echo "GALERA_NODE${i}_SST=$((p + 3))"
			echo "GALERA_NODE${i}_SOCKET=$(sock "$i")"
			echo "GALERA_NODE${i}_DSN='root@tcp(127.0.0.1:$p)/${DB}?parseTime=true'"
		done
		echo "GALERA_DSNS='$(for i in "${NODES[@]}"; do printf 'root@tcp(127.0.0.1:%s)/%s?parseTime=true ' $((PORT_BASE + 10 * (i - 1))) "$DB"; done | sed 's/ $//')'"
	} >"$f"
	mv "$f" "$DIR/env"
}

# ---------------------------------------------------------------- config

write_cnf() { # N
	local i=$1 addr="" j
	for j in "${NODES[@]}"; do addr+="${addr:+,}127.0.0.1:$(port "$j" GCOMM)"; done
	local opts
	opts="base_host=127.0.0.1; base_port=$(port "$i" GCOMM); gmcast.listen_addr=tcp://127.0.0.1:$(port "$i" GCOMM)"
	opts+="; ist.recv_addr=127.0.0.1:$(port "$i" IST); ist.recv_bind=127.0.0.1"
	opts+="; gcache.size=$GCACHE; gcache.recover=yes"
	[ -n "${GALERA_PROVIDER_OPTIONS:-}" ] && opts+="; ${GALERA_PROVIDER_OPTIONS}"
	cat >"$(cnf "$i").tmp" <<EOF
# node$i of the gateway's test Galera cluster; written by $PROG (see README.md)
[mariadbd]
datadir                     = $(datadir "$i")
port                        = $(port "$i" SQL)
bind_address                = 127.0.0.1
socket                      = $(sock "$i")
pid_file                    = $(pidfile "$i")
log_error                   = $(errlog "$i")
tmpdir                      = $(ndir "$i")/tmp
skip_name_resolve           = ON
character_set_server        = utf8mb4
collation_server            = utf8mb4_bin
max_connections             = 200
performance_schema          = OFF
innodb_buffer_pool_size     = 128M
# a guarantee PDF is written in one statement: twice server.notify_body_limit
max_allowed_packet          = 64M

# What Galera needs
binlog_format               = ROW
default_storage_engine      = InnoDB
innodb_autoinc_lock_mode    = 2
innodb_flush_log_at_trx_commit = 1

wsrep_on                    = ON
wsrep_provider              = $PROVIDER
wsrep_cluster_name          = gateway-galera
wsrep_cluster_address       = gcomm://$addr
wsrep_node_name             = node$i
wsrep_node_address          = 127.0.0.1:$(port "$i" GCOMM)
wsrep_node_incoming_address = 127.0.0.1:$(port "$i" SQL)
wsrep_provider_options      = "$opts"
wsrep_sst_method            = rsync
wsrep_sst_receive_address   = 127.0.0.1:$(port "$i" SST)
wsrep_slave_threads         = 2
wsrep_sync_wait             = $SYNC_WAIT
wsrep_auto_increment_control = ON
EOF
	mv "$(cnf "$i").tmp" "$(cnf "$i")"
}

own() { # give paths to the server's user
	if [ "$(id -u)" = 0 ]; then chown -R "$RUN_USER:" "$@"; fi
}

check_reachable() { # the server's user must reach DIR
	[ "$(id -u)" = 0 ] || return 0
	if command -v runuser >/dev/null; then
		runuser -u "$RUN_USER" -- test -w "$DIR/node1" ||
			die "user $RUN_USER cannot write $DIR/node1: choose a DIR whose parents it may enter (e.g. under /tmp)"
	fi
}

# ---------------------------------------------------------------- processes

is_node_proc() { # PID N: PID is the mariadbd of node N
	[ "$(cat "/proc/$1/comm" 2>/dev/null)" = mariadbd ] || return 1
	tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--defaults-file=$(cnf "$2") "
}

node_pid() { # N: prints the pid of node N if it runs
	local i=$1 p
	for p in $(cat "$(runpid "$i")" "$(pidfile "$i")" 2>/dev/null) $(pgrep -x mariadbd 2>/dev/null || true); do
		if is_node_proc "$p" "$i"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
node_alive() { node_pid "$1" >/dev/null; }

proc_alive() { # pid exists and is no zombie (the nodes outlive their parent: init reaps them)
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

sqlq() { # N SQL...: one query over the socket, tab-separated, no headers
	local i=$1
	shift
	# wsrep_sync_wait=0: a causal wait fails at once on a node out of the
	# Primary component (1205), and the status must still be readable there
	"$CLIENT" --no-defaults -uroot -S "$(sock "$i")" --connect-timeout=3 -N -B -e "SET SESSION wsrep_sync_wait=0; $*"
}

wsrep_state() { # N: "size state status ready connected" or empty
	local i=$1 out
	out=$(sqlq "$i" "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size','wsrep_local_state_comment','wsrep_cluster_status','wsrep_ready','wsrep_connected')" 2>/dev/null) || return 0
	awk -F'\t' '{ v[$1] = $2 } END { printf "%s %s %s %s %s\n", v["wsrep_cluster_size"], v["wsrep_local_state_comment"], v["wsrep_cluster_status"], v["wsrep_ready"], v["wsrep_connected"] }' <<<"$out"
}

node_synced() { # N [size]: Synced, Primary, ready (and the cluster has that size)
	local s
	s=$(wsrep_state "$1")
	[ -n "$s" ] || return 1
	# shellcheck disable=SC2086 # split on purpose
	set -- "${2:-}" $s
	[ "$3" = Synced ] && [ "$4" = Primary ] && [ "$5" = ON ] && { [ -z "$1" ] || [ "$2" = "$1" ]; }
}

dump_logs() {
	local i
	for i in "${NODES[@]}"; do
		[ -f "$(errlog "$i")" ] || continue
		echo "----- node$i: tail of $(errlog "$i")" >&2
		tail -n 25 "$(errlog "$i")" >&2
	done
}

fail() {
	log "ERROR: $*"
	dump_logs
	log "the nodes that run are left running for inspection: $PROG status $DIR; $PROG stop --purge $DIR"
	exit 1
}

launch() { # N [extra mariadbd args...]
	local i=$1
	shift
	rm -f "$(runpid "$i")" "$(pidfile "$i")"
	mkdir -p "$(ndir "$i")/tmp"
	own "$(ndir "$i")"
	# setsid: the node outlives this script and its process group
	setsid "$MARIADBD" --defaults-file="$(cnf "$i")" --user="$RUN_USER" "$@" \
		</dev/null >>"$(ndir "$i")/stdout.log" 2>&1 &
	local p=$! k
	echo "$p" >"$(runpid "$i")"
	# until the child has exec'd mariadbd it does not look like node i
	for k in $(seq 1 100); do
		is_node_proc "$p" "$i" || node_alive "$i" && return 0
		proc_alive "$p" || break
		sleep 0.05
	done
	sleep 0.5 # setsid forked, or mariadbd failed at once: wait_node finds out
}

wait_node() { # N deadline size what: until node N is Synced in a cluster of size (or dies)
	local i=$1 deadline=$2 size=$3 what=$4
	while :; do
		node_alive "$i" || fail "node$i exited while $what"
		node_synced "$i" "$size" && return 0
		[ "$(date +%s)" -lt "$deadline" ] || fail "node$i not Synced (state: $(wsrep_state "$i")) after ${TIMEOUT}s while $what"
		sleep 0.5
	done
}

wait_cluster() { # deadline
	local deadline=$1 i ok
	while :; do
		ok=1
		for i in "${NODES[@]}"; do
			node_alive "$i" || fail "node$i is not running"
			node_synced "$i" 3 || ok=0
		done
		[ $ok = 1 ] && return 0
		[ "$(date +%s)" -lt "$deadline" ] || {
			for i in "${NODES[@]}"; do log "node$i: $(wsrep_state "$i")"; done
			fail "cluster not formed (3 nodes Synced) after ${TIMEOUT}s"
		}
		sleep 0.5
	done
}

# grastate.dat: seqno and safe_to_bootstrap
gstate() { # N key
	sed -n "s/^$2:[[:space:]]*//p" "$(grastate "$1")" 2>/dev/null | head -n1
}

# After a crash (kill -9) grastate.dat says seqno: -1, and mariadbd started by
# hand (not through systemd's galera_recovery or mysqld_safe) does not look up
# its position in InnoDB itself: it would join as an empty node and take a full
# SST. So the position is recovered first and given with --wsrep-start-position,
# which lets the node ask for IST from the donors' gcache.
recover_position() { # N: runs mariadbd --wsrep-recover, prints uuid:seqno
	local i=$1 rlog
	rlog="$(ndir "$i")/recover.log"
	rm -f "$rlog"
	touch "$rlog"
	own "$rlog"
	timeout "$TIMEOUT" "$MARIADBD" --defaults-file="$(cnf "$i")" --user="$RUN_USER" \
		--wsrep-recover --log-error="$rlog" </dev/null >/dev/null 2>&1 || true
	sed -n 's/.*WSREP: Recovered position: *\([0-9a-f-]*:-\{0,1\}[0-9]*\).*/\1/p' "$rlog" | tail -n1
}

# ---------------------------------------------------------------- commands

cmd_start() {
	set_dir "${1:-}"
	need_tools
	local t0 i running=() stopped=()
	t0=$(now)
	if [ -f "$DIR/env" ] && [ -f "$(cnf 1)" ]; then
		load_env
		for i in "${NODES[@]}"; do
			if node_alive "$i"; then running+=("$i"); else stopped+=("$i"); fi
		done
		if [ ${#stopped[@]} = 0 ]; then
			log "cluster in $DIR is already running"
			wait_cluster $(($(date +%s) + TIMEOUT))
			print_dsns
			return 0
		fi
		if [ ${#running[@]} -gt 0 ]; then
			local prim=""
			for i in "${running[@]}"; do node_synced "$i" && prim=$i; done
			[ -n "$prim" ] || die "nodes ${running[*]} run but none is Synced in a Primary component (quorum lost?): $PROG status; $PROG force-primary N; then start again"
			log "nodes ${running[*]} run; starting ${stopped[*]} to join them"
			wait_evicted "${stopped[0]}"
			for i in "${stopped[@]}"; do start_joiner "$i"; done
			wait_cluster $(($(date +%s) + TIMEOUT))
			print_dsns
			return 0
		fi
		restart_cluster "$t0"
		return 0
	fi
	create_cluster "$t0"
}

create_cluster() {
	local t0=$1 i deadline t1
	[ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && die "$DIR exists and is not a cluster of $PROG: remove it or choose another DIR"
	mkdir -p "$DIR"
	chmod 755 "$DIR"
	pick_ports
	write_env
	load_env
	for i in "${NODES[@]}"; do
		mkdir -p "$(ndir "$i")/tmp"
		write_cnf "$i"
	done
	own "$DIR"
	check_reachable
	log "initialising 3 datadirs in $DIR (ports $PORT_BASE-$((PORT_BASE + 23)))"
	local pids=()
	for i in "${NODES[@]}"; do
		"$INSTALL_DB" --no-defaults --user="$RUN_USER" --datadir="$(datadir "$i")" \
			--auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
			--tmpdir="$(ndir "$i")/tmp" \
			>"$(ndir "$i")/install-db.log" 2>&1 &
		pids+=($!)
	done
	for i in "${NODES[@]}"; do
		wait "${pids[$((i - 1))]}" || { cat "$(ndir "$i")/install-db.log" >&2; die "mariadb-install-db failed for node$i"; }
	done
	own "$DIR"
	log "datadirs ready after $(elapsed "$t0")s; bootstrapping node1"
	t1=$(now)
	deadline=$(($(date +%s) + TIMEOUT))
	launch 1 --wsrep-new-cluster
	wait_node 1 "$deadline" 1 "bootstrapping"
	log "node1 Synced (Primary, size 1) after $(elapsed "$t1")s"
	sqlq 1 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
		GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
		ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
		GRANT ALL PRIVILEGES ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
		${DB:+CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;}" ||
		fail "granting root TCP access on node1"
	for i in 2 3; do
		log "starting node$i (joins by SST/rsync)"
		launch "$i"
		wait_node "$i" "$deadline" "" "joining"
		log "node$i Synced after $(elapsed "$t1")s"
	done
	wait_cluster "$deadline"
	log "cluster formed: 3 nodes Synced in $(elapsed "$t1")s after the bootstrap ($(elapsed "$t0")s in all)"
	print_dsns
}

restart_cluster() { # every node is down: bootstrap from the most advanced one
	local t0=$1 i b="" best=-2 s seq deadline
	for i in "${NODES[@]}"; do
		[ -f "$(grastate "$i")" ] || die "$(grastate "$i") missing: $DIR is not a complete cluster"
		if [ "$(gstate "$i" safe_to_bootstrap)" = 1 ]; then b=$i; fi
	done
	if [ -z "$b" ]; then
		# nobody left last in order: compare the positions, recovered from InnoDB when the
		# grastate says -1 (after a crash or kill -9)
		for i in "${NODES[@]}"; do
			seq=$(gstate "$i" seqno)
			if [ "$seq" = -1 ] || [ -z "$seq" ]; then
				s=$(recover_position "$i")
				seq=${s##*:}
				[ -n "$seq" ] || seq=-1
			fi
			log "node$i: seqno $seq"
			if [ "$seq" -gt "$best" ]; then best=$seq; b=$i; fi
		done
		log "no node has safe_to_bootstrap: 1; bootstrapping node$b (highest seqno $best)"
		sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 1/' "$(grastate "$b")"
	else
		log "bootstrapping node$b (safe_to_bootstrap: 1 in its grastate.dat)"
	fi
	# the ports of the last run may have been taken meanwhile
	for i in "${NODES[@]}"; do
		for s in SQL GCOMM IST SST; do
			port_busy "$(port "$i" $s)" listen && die "port $(port "$i" $s) of node$i ($s) is in use by another process"
		done
	done
	local t1
	t1=$(now)
	deadline=$(($(date +%s) + TIMEOUT))
	start_args "$b"
	launch "$b" --wsrep-new-cluster ${START_ARGS[@]+"${START_ARGS[@]}"}
	wait_node "$b" "$deadline" 1 "bootstrapping"
	log "node$b Synced (Primary, size 1) after $(elapsed "$t1")s"
	for i in "${NODES[@]}"; do
		[ "$i" = "$b" ] && continue
		start_joiner "$i" "$deadline"
	done
	wait_cluster "$deadline"
	log "cluster restarted: 3 nodes Synced in $(elapsed "$t1")s ($(elapsed "$t0")s in all)"
	print_dsns
}

transfer_kind() { # N offset: how node N got its state, from its error log after byte offset
	local f n
	f=$(tail -c +"$(($2 + 1))" "$(errlog "$1")" 2>/dev/null || true)
	# MariaDB runs the SST script even for IST (the donor then sends no files),
	# and logs "SST received" / "Installed new state from SST" both ways; the
	# rsync script's own line and "Receiving IST: N writesets" tell them apart
	n=$(grep -o 'Receiving IST: *[0-9]* writesets, seqnos [0-9-]*' <<<"$f" | tail -n1 | sed 's/Receiving IST: *//')
	if grep -q "rsync SST completed on joiner" <<<"$f"; then
		echo "SST (full copy of the datadir by rsync)${n:+, then IST of $n}"
	elif grep -q "rsync IST completed on joiner" <<<"$f" || [ -n "$n" ]; then
		echo "IST (${n:-write-sets from the gcache of the donor})"
	elif grep -q "IST received" <<<"$f"; then
		echo "IST"
	else
		echo "none needed"
	fi
}

start_args() { # N: sets START_ARGS (--wsrep-start-position when grastate.dat lost it)
	local i=$1 seq pos
	START_ARGS=()
	seq=$(gstate "$i" seqno)
	if [ -f "$(grastate "$i")" ] && [ "$seq" = -1 ]; then
		pos=$(recover_position "$i")
		if [ -n "$pos" ] && [ "${pos##*:}" != -1 ]; then
			log "node$i: grastate.dat has seqno -1 (crash); recovered position $pos from InnoDB"
			START_ARGS=(--wsrep-start-position="$pos")
		else
			log "node$i: grastate.dat has seqno -1 and no position could be recovered (see $(ndir "$i")/recover.log): it will need SST"
		fi
	fi
}

start_joiner() { # N [deadline]: start node N without bootstrap, wait until Synced, report IST/SST
	local i=$1 deadline=${2:-$(($(date +%s) + TIMEOUT))} off t1 seq
	off=$(stat -c %s "$(errlog "$i")" 2>/dev/null || echo 0)
	seq=$(gstate "$i" seqno)
	t1=$(now)
	start_args "$i"
	launch "$i" ${START_ARGS[@]+"${START_ARGS[@]}"}
	wait_node "$i" "$deadline" "" "rejoining"
	log "node$i Synced after $(elapsed "$t1")s (grastate seqno before: ${seq:-none}); state transfer: $(transfer_kind "$i" "$off")"
}

# A node killed a moment ago is still a member for the others until they stop
# hearing from it (evs.suspect_timeout, 5 s). Started again meanwhile, it comes
# back with the same node UUID (gvwstate.dat) and the others ignore it until
# they have evicted the old incarnation: about 20 s instead of 10 s to rejoin.
# So wait until the running nodes count only themselves.
wait_evicted() { # N
	local n=$1 i alive t1 deadline ok
	t1=$(now)
	deadline=$(($(date +%s) + TIMEOUT))
	while :; do
		alive=0
		for i in "${NODES[@]}"; do [ "$i" != "$n" ] && node_alive "$i" && alive=$((alive + 1)); done
		ok=1
		for i in "${NODES[@]}"; do
			# shellcheck disable=SC2015
			[ "$i" != "$n" ] && node_alive "$i" || continue
			# shellcheck disable=SC2046 # split on purpose
			set -- $(wsrep_state "$i") x
			[ "$1" = "$alive" ] || ok=0
		done
		[ $ok = 1 ] && break
		[ "$(date +%s)" -lt "$deadline" ] || fail "the other nodes still count node$n as a member after ${TIMEOUT}s"
		sleep 0.2
	done
	log "the other nodes have evicted node$n (waited $(elapsed "$t1")s)"
}

cmd_restart() {
	check_node_arg "${1:-}"
	local n=$1 i other=""
	set_dir "${2:-}"
	need_tools
	load_env
	if node_alive "$n"; then
		log "node$n is already running (pid $(node_pid "$n"))"
		return 0
	fi
	for i in "${NODES[@]}"; do
		[ "$i" = "$n" ] && continue
		if node_alive "$i" && node_synced "$i"; then other=$i; fi
	done
	[ -n "$other" ] || die "no other node is Synced in a Primary component: node$n has nothing to join (use: $PROG start $DIR, or force-primary)"
	wait_evicted "$n"
	start_joiner "$n"
	wait_cluster $(($(date +%s) + TIMEOUT))
	log "cluster size 3 again"
}

cmd_stop() {
	local purge=0 arg dir="" i p deadline left
	for arg in "$@"; do
		case $arg in --purge) purge=1 ;; *) dir=$arg ;; esac
	done
	set_dir "$dir"
	if [ ! -f "$DIR/env" ]; then
		log "no cluster in $DIR"
		if [ $purge = 1 ] && [ -d "$DIR" ]; then rm -rf "$DIR"; fi
		return 0
	fi
	load_env
	# one after the other, node3 first: the last to leave (node1 if it ran) gets
	# safe_to_bootstrap: 1, and `start` bootstraps from it next time
	local t
	for i in 3 2 1; do
		p=$(node_pid "$i") || continue
		# a node that does not answer is joining (it ignores SIGTERM during an SST)
		# or hung: it gets 10 s
		t=$STOP_TIMEOUT
		[ -n "$(wsrep_state "$i")" ] || t=$((t < 10 ? t : 10))
		kill -TERM "$p" 2>/dev/null || true
		deadline=$(($(date +%s) + t))
		while proc_alive "$p"; do
			if [ "$(date +%s)" -ge "$deadline" ]; then
				log "node$i (pid $p) still running ${t}s after SIGTERM: SIGKILL"
				kill -KILL "$p" 2>/dev/null || true
				sleep 0.5
				break
			fi
			sleep 0.2
		done
		log "node$i stopped"
	done
	# what an interrupted SST may leave: wsrep_sst_rsync and its rsync daemon,
	# whose command lines name this DIR
	for p in $(pgrep -f -- "$DIR/node[123]/" 2>/dev/null || true); do
		# shellcheck disable=SC2015
		[ "$p" != $$ ] && proc_alive "$p" || continue
		case $(cat "/proc/$p/comm" 2>/dev/null) in rsync | wsrep_sst* | mariadbd) ;; *) continue ;; esac
		log "stopping leftover pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-120)"
		kill -KILL "$p" 2>/dev/null || true
	done
	left=""
	for i in "${NODES[@]}"; do node_alive "$i" && left+=" node$i"; done
	[ -z "$left" ] || die "still running:$left"
	if [ $purge = 1 ]; then
		rm -rf "$DIR"
		log "removed $DIR"
	fi
}

cmd_kill() {
	check_node_arg "${1:-}"
	local n=$1 p
	set_dir "${2:-}"
	load_env
	p=$(node_pid "$n") || { log "node$n is not running"; return 0; }
	kill -KILL "$p"
	while proc_alive "$p"; do sleep 0.05; done
	log "node$n (pid $p) killed with SIGKILL"
}

cmd_isolate() { # N 1|0
	check_node_arg "${1:-}"
	local n=$1 v=$2 deadline t1 off
	set_dir "${3:-}"
	load_env
	node_alive "$n" || die "node$n is not running"
	off=$(stat -c %s "$(errlog "$n")" 2>/dev/null || echo 0)
	t1=$(now)
	sqlq "$n" "SET GLOBAL wsrep_provider_options='gmcast.isolate=$v'" || die "SET gmcast.isolate=$v failed on node$n"
	deadline=$(($(date +%s) + TIMEOUT))
	if [ "$v" = 1 ]; then
		while :; do
			# shellcheck disable=SC2046 # split on purpose
			set -- $(wsrep_state "$n") x x x x x
			[ "$3" != Primary ] && break
			[ "$(date +%s)" -lt "$deadline" ] || fail "node$n still Primary ${TIMEOUT}s after gmcast.isolate=1"
			sleep 0.2
		done
		log "node$n isolated after $(elapsed "$t1")s: cluster_size=$1 state=$2 status=$3 ready=$4"
	else
		wait_node "$n" "$deadline" 3 "rejoining after isolation"
		log "node$n back in the Primary component, Synced, after $(elapsed "$t1")s; state transfer: $(transfer_kind "$n" "$off")"
	fi
}

cmd_force_primary() { # N: a survivor left without quorum (2 of 3 crashed) becomes the Primary component
	check_node_arg "${1:-}"
	local n=$1 t1
	set_dir "${2:-}"
	load_env
	node_alive "$n" || die "node$n is not running"
	t1=$(now)
	sqlq "$n" "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'" || die "SET pc.bootstrap=YES failed on node$n"
	wait_node "$n" $(($(date +%s) + TIMEOUT)) "" "becoming Primary"
	# shellcheck disable=SC2046 # split on purpose
	set -- $(wsrep_state "$n")
	log "node$n is Primary again (cluster_size=$1) after $(elapsed "$t1")s; start the others with: $PROG restart N"
}

cmd_status() {
	set_dir "${1:-}"
	load_env
	local i p s bad=0
	printf '%-6s %-8s %-6s %-6s %-5s %-20s %-12s %-5s\n' node pid alive port size state status ready
	for i in "${NODES[@]}"; do
		if p=$(node_pid "$i"); then
			s=$(wsrep_state "$i")
			# shellcheck disable=SC2086
			set -- ${s:-- unreachable - - -}
			printf '%-6s %-8s %-6s %-6s %-5s %-20s %-12s %-5s\n' "node$i" "$p" yes "$(port "$i" SQL)" "$1" "$2" "$3" "$4"
			[ "$2" = Synced ] && [ "$3" = Primary ] && [ "$1" = 3 ] || bad=1
		else
			printf '%-6s %-8s %-6s %-6s %-5s %-20s %-12s %-5s\n' "node$i" - no "$(port "$i" SQL)" - - - -
			bad=1
		fi
	done
	return $bad
}

cmd_wait() {
	set_dir "${1:-}"
	load_env
	local t1
	t1=$(now)
	wait_cluster $(($(date +%s) + TIMEOUT))
	log "3 nodes Synced (waited $(elapsed "$t1")s)"
}

cmd_sql() {
	check_node_arg "${1:-}"
	local n=$1
	shift
	set_dir ""
	load_env
	exec "$CLIENT" --no-defaults -uroot -S "$(sock "$n")" "$@"
}

print_dsns() {
	local i
	log "ports and DSNs in $DIR/env"
	for i in "${NODES[@]}"; do
		echo "node$i: root@tcp(127.0.0.1:$(port "$i" SQL))/${DB}?parseTime=true"
	done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
wait) cmd_wait "$@" ;;
kill) cmd_kill "$@" ;;
restart) cmd_restart "$@" ;;
isolate) cmd_isolate "${1:-}" 1 "${2:-}" ;;
rejoin) cmd_isolate "${1:-}" 0 "${2:-}" ;;
force-primary) cmd_force_primary "$@" ;;
env) set_dir "${1:-}" && load_env && cat "$DIR/env" ;;
sql) cmd_sql "$@" ;;
-h | --help | help | "") usage ;;
*) log "unknown command '$cmd'" && usage ;;
esac
