#!/usr/bin/env bash
# A single-node Apache Kafka broker in KRaft mode, from the jars on Maven Central.
#
#   scripts/kafka.sh fetch              put the pinned broker jars in .cache/kafka-3.9.1/libs
#   scripts/kafka.sh start DIR PORT     format DIR (first time) and start; controller on PORT+1
#   scripts/kafka.sh stop DIR           SIGTERM, then SIGKILL after 30 s
#   scripts/kafka.sh restart DIR        stop and start again on the same data and port
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=3.9.1
CACHE=${COPYSINK_CACHE:-$ROOT/.cache}
LIBS=$CACHE/kafka-$VERSION/libs

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
	[ -f "$LIBS/.complete" ] && return 0
	command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
	mkdir -p "$LIBS"
	echo "kafka.sh: fetching Kafka $VERSION jars from Maven Central" >&2
	mvn -q -B -f "$ROOT/scripts/kafka-pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$LIBS" >&2 ||
		die "could not fetch the Kafka jars with Maven"
	ls "$LIBS"/kafka_2.13-$VERSION.jar >/dev/null || die "kafka_2.13-$VERSION.jar missing after fetch"
	touch "$LIBS/.complete"
}

java_run() { java -cp "$LIBS/*" -Dlog4j.configuration="file:$DIR/log4j.properties" "$@"; }

write_config() {
	cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((PORT + 1))
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$((PORT + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
message.max.bytes=20971520
replica.fetch.max.bytes=20971520
PROPS
	cat >"$DIR/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$DIR/kafka.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
	echo "$PORT" >"$DIR/port"
}

# True when something answers on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
	fetch
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
		echo "kafka.sh: already running in $DIR" >&2
		return 0
	fi
	port_open "$PORT" && die "port $PORT is already in use"
	write_config
	if [ ! -f "$DIR/data/meta.properties" ]; then
		java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
			-c "$DIR/server.properties" >"$DIR/format.log" 2>&1 ||
			{ cat "$DIR/format.log" >&2; die "could not format the storage in $DIR/data"; }
	fi
	nohup java -Xms256m -Xmx768m -cp "$LIBS/*" -Dlog4j.configuration="file:$DIR/log4j.properties" \
		kafka.Kafka "$DIR/server.properties" >>"$DIR/stdout.log" 2>&1 &
	echo $! >"$DIR/kafka.pid"
	for _ in $(seq 1 180); do
		if port_open "$PORT" && grep -q "Kafka Server started\|started (kafka.server" "$DIR/stdout.log" "$DIR/kafka.log" 2>/dev/null; then
			break
		fi
		kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null || { tail -n 30 "$DIR/stdout.log" "$DIR/kafka.log" >&2 || true; die "broker exited during start-up"; }
		sleep 0.5
	done
	port_open "$PORT" || { tail -n 30 "$DIR/kafka.log" >&2 || true; die "broker did not open port $PORT within 90 s"; }
	echo "kafka.sh: broker up on 127.0.0.1:$PORT (data in $DIR)" >&2
}

stop() {
	[ -f "$DIR/kafka.pid" ] || return 0
	local pid
	pid=$(cat "$DIR/kafka.pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" && sleep 0.5
	fi
	rm -f "$DIR/kafka.pid"
}

cmd=${1:-}
case "$cmd" in
fetch) fetch ;;
start)
	[ $# -eq 3 ] || die "usage: kafka.sh start DIR PORT"
	DIR=$2 PORT=$3 start ;;
stop)
	[ $# -eq 2 ] || die "usage: kafka.sh stop DIR"
	DIR=$2 stop ;;
restart)
	[ $# -eq 2 ] || die "usage: kafka.sh restart DIR"
	DIR=$2
	PORT=$(cat "$DIR/port") || die "no port recorded in $DIR"
	stop
	start ;;
-h | --help | "")
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	[ -n "$cmd" ] ;;
*) die "unknown command \"$cmd\" (try --help)" ;;
esac
