/*
 * main.c - the copysink command: run, replay, migrate, check, produce
 *
 * Only this file exits the process. Exit codes: 0 success, 1 runtime failure (PostgreSQL or
 * Kafka unusable, a check failed), 2 usage or configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "copysink/check.h"
#include "copysink/config.h"
#include "copysink/http.h"
#include "copysink/log.h"
#include "copysink/produce.h"
#include "copysink/schema.h"
#include "copysink/worker.h"

#define EXIT_USAGE 2
#define MAX_OVERRIDES 64
#define HEALTH_STALL_MS 60000 /* /healthz fails when the loop has not turned for this long */

extern char **environ;

/* Set by the signal handler: 1 after the first SIGTERM/SIGINT. */
static volatile sig_atomic_t stop_requested = 0;

/* First signal: stop gracefully. Second: leave at once (only async-signal-safe calls). */
static void on_signal(int sig)
{
	if (stop_requested)
		_exit(128 + sig);
	stop_requested = 1;
}

/*
 * The close guard: once the loop has returned, what is left (leaving the group, closing the
 * Kafka clients and the connections) must not keep the process alive. librdkafka 2.0.2's
 * rd_kafka_destroy() waits for ever when its broker thread keeps a reference it never drops:
 * a consumer whose topic was deleted while it held partitions hung there after SIGTERM
 * (tests/integration/test_reliability.py::test_sigterm_after_topic_deleted). By then every
 * batch the worker wrote is committed with its offsets, and what it did not write is read
 * again by the next worker, so exiting without the rest loses nothing.
 */
#define CLOSE_TIMEOUT_MS 5000

typedef struct close_guard {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	pthread_t thread;
} close_guard_t;

static void *close_guard_run(void *arg)
{
	close_guard_t *g = arg;
	struct timespec until;
	bool done;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += CLOSE_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&g->mu);
	while (!g->done && pthread_cond_timedwait(&g->cv, &g->mu, &until) != ETIMEDOUT)
		;
	done = g->done;
	pthread_mutex_unlock(&g->mu);
	if (!done) {
		const char *step = cs_worker_close_step();

		cs_error("the Kafka and PostgreSQL clients did not close within %d ms of the loop's end "
			 "(at: %s): exiting without them; nothing is lost, what was not committed is read "
			 "again by the next worker", CLOSE_TIMEOUT_MS,
			 step != NULL ? step : "stopping the metrics endpoint");
		_exit(EXIT_FAILURE);
	}
	return NULL;
}

/* Start the guard. @returns 0, or -1 when it could not start (the close then runs unguarded) */
static int close_guard_start(close_guard_t *g)
{
	pthread_condattr_t attr;
	int rc;

	g->done = false;
	if (pthread_condattr_init(&attr) != 0)
		return -1;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
	     pthread_mutex_init(&g->mu, NULL) != 0 || pthread_cond_init(&g->cv, &attr) != 0
		     ? -1
		     : 0;
	pthread_condattr_destroy(&attr);
	if (rc == 0 && pthread_create(&g->thread, NULL, close_guard_run, g) != 0) {
		pthread_cond_destroy(&g->cv);
		pthread_mutex_destroy(&g->mu);
		rc = -1;
	}
	return rc;
}

/* The close finished in time: stop the guard. */
static void close_guard_stop(close_guard_t *g)
{
	pthread_mutex_lock(&g->mu);
	g->done = true;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mu);
	pthread_join(g->thread, NULL);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
}

/* Options shared by the subcommands. */
typedef struct options {
	const char *config;
	char *overrides[MAX_OVERRIDES];
	int noverrides;
	const char *table;
	const char *topic;
	const char *from;   /* replay */
	const char *until;  /* replay: "end" or NULL */
	const char *tables; /* replay: comma-separated table names, NULL = all */
	bool print_config;
} options_t;

static const char usage_text[] =
	"copysink - load msgpack entries from Kafka into PostgreSQL with binary COPY merges\n"
	"\n"
	"Usage:\n"
	"  copysink run     -c FILE [-o SECTION.KEY=VALUE ...]   consume and load (the worker)\n"
	"  copysink migrate -c FILE                             create the tables and bookkeeping\n"
	"  copysink check   -c FILE [--print-config]            check config, PostgreSQL, Kafka, tables\n"
	"  copysink produce -c FILE --table T [--topic X] [FILE.jsonl | -]\n"
	"                                                       publish JSON lines as msgpack entries\n"
	"  copysink replay  -c FILE --from POSITION [--until end] [--tables T1,T2]\n"
	"                                                       read the topics again into the tables\n"
	"  copysink --version | --help | help config\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE        INI configuration file (see conf/copysink.ini)\n"
	"  -o, --set S.K=V          override a key, e.g. -o batch.max_rows=5000\n"
	"      --print-config       print the effective configuration (secrets masked)\n"
	"  -h, --help               this help; \"copysink help config\" lists every key\n"
	"\n"
	"Replay (no consumer group: the live worker's offsets stay as they are):\n"
	"  --from earliest | TIME | TOPIC:PARTITION:OFFSET,...\n"
	"                           where to start: every partition's first offset, the first\n"
	"                           offset at or after an RFC 3339 TIME (2026-11-24T08:00:00Z),\n"
	"                           or the listed partitions from the given offsets\n"
	"  --until end              stop at the end offsets seen at the start (else follow on)\n"
	"  --tables T1,T2           only these tables (default: all)\n"
	"  An entry older than the one a row holds (same partition, lower offset) never\n"
	"  overwrites it; tombstones delete. Progress bar on a terminal, log lines otherwise.\n"
	"\n"
	"Precedence: defaults < file < environment (COPYSINK_SECTION_KEY) < -o options.\n"
	"Exit status: 0 ok, 1 failure, 2 usage or configuration error.\n";

#define COMMON_OPTIONS                                                                              \
	"  -c, --config FILE        INI configuration file (see conf/copysink.ini)\n"                   \
	"  -o, --set S.K=V          override a key, e.g. -o batch.max_rows=5000 (repeatable)\n"          \
	"      --print-config       print the effective configuration (secrets masked) first\n"          \
	"  -h, --help               this help; \"copysink help config\" lists every key\n"

/* The help of each subcommand: "copysink CMD --help". */
static const struct {
	const char *cmd;
	const char *text;
} command_help[] = {
	{"run", "Usage: copysink run -c FILE [-o SECTION.KEY=VALUE ...]\n"
		"\n"
		"The worker: consumes the tables' topics in the consumer group [kafka] group.id, writes\n"
		"each batch in one transaction (binary COPY, merge, the partitions' next offsets) and\n"
		"commits the offsets to Kafka after it. Entries that fail validation or that PostgreSQL\n"
		"rejects go to the dead-letter topic. SIGTERM or SIGINT: write what is pending within\n"
		"[worker] shutdown_grace_ms, leave the group, exit 0; a second signal exits at once.\n"
		"\n"
		"Options:\n" COMMON_OPTIONS},
	{"migrate", "Usage: copysink migrate -c FILE\n"
		    "\n"
		    "Creates the configured tables and the bookkeeping table copysink_offsets. Safe to\n"
		    "run again: what exists is left as it is. An embedding column gets its table's\n"
		    "embedding_type; auto is vector(N) where the database has pgvector, real[]\n"
		    "otherwise. Needs CREATE on the tables' schemas; with [postgres]\n"
		    "create_extension = on it also creates pgvector, which takes a superuser.\n"
		    "\n"
		    "Options:\n" COMMON_OPTIONS},
	{"check", "Usage: copysink check -c FILE [--print-config]\n"
		  "\n"
		  "Checks the configuration, the connection to PostgreSQL and the tables' shapes and\n"
		  "privileges, the brokers and the topics, and says what is wrong; exit 0 when all is\n"
		  "well, 1 otherwise.\n"
		  "\n"
		  "Options:\n" COMMON_OPTIONS},
	{"produce", "Usage: copysink produce -c FILE --table T [--topic X] [FILE.jsonl | -]\n"
		    "\n"
		    "Reads JSON lines (one entry per line; a file or standard input) and publishes each\n"
		    "as a msgpack entry of table T, keyed by its conflict key, to the table's topic or\n"
		    "X, each JSON value as its msgpack kind (an embedding as an array of numbers).\n"
		    "For producers' tests, demos and backfills from files.\n"
		    "\n"
		    "Options:\n"
		    "      --table T            the table whose entries the lines are (required)\n"
		    "      --topic X            publish to X instead of the table's topic\n" COMMON_OPTIONS},
	{"replay", "Usage: copysink replay -c FILE --from POSITION [--until end] [--tables T1,T2]\n"
		   "\n"
		   "Reads the topics again, with its own assignment and no consumer group (the live\n"
		   "worker's offsets stay as they are), through the same pipeline. An entry older than\n"
		   "the one a row holds (same partition, lower offset) never overwrites it; tombstones\n"
		   "delete. A progress bar on a terminal, a log line every 10 s otherwise, a summary\n"
		   "at the end.\n"
		   "\n"
		   "Options:\n"
		   "      --from earliest | TIME | TOPIC:PARTITION:OFFSET,...\n"
		   "                           where to start: every partition's first offset, the first\n"
		   "                           offset at or after an RFC 3339 TIME (2026-11-24T08:00:00Z),\n"
		   "                           or the listed partitions from the given offsets\n"
		   "      --until end          stop at the end offsets seen at the start (else follow on)\n"
		   "      --tables T1,T2       only these tables (default: all)\n" COMMON_OPTIONS},
};

/* Print the usage to `out`. */
static void usage(FILE *out)
{
	fputs(usage_text, out);
}

/* Print the help of subcommand `cmd` to `out`. */
static void command_usage(const char *cmd, FILE *out)
{
	for (size_t i = 0; i < sizeof(command_help) / sizeof(command_help[0]); i++) {
		if (strcmp(command_help[i].cmd, cmd) == 0) {
			fputs(command_help[i].text, out);
			fputs("\nExit status: 0 ok, 1 failure, 2 usage or configuration error.\n", out);
			return;
		}
	}
	usage(out);
}

/* Parse the options after the subcommand. @returns 0, 1 for --help, -1 on error. */
static int parse_options(int argc, char **argv, options_t *opt)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 'o'},
		{"table", required_argument, NULL, 't'},  {"topic", required_argument, NULL, 'T'},
		{"print-config", no_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
		{"from", required_argument, NULL, 'F'},   {"until", required_argument, NULL, 'U'},
		{"tables", required_argument, NULL, 'L'},
		{NULL, 0, NULL, 0}};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opt->config = optarg;
			break;
		case 'o':
			if (opt->noverrides == MAX_OVERRIDES) {
				fprintf(stderr, "copysink: too many -o options (at most %d)\n", MAX_OVERRIDES);
				return -1;
			}
			opt->overrides[opt->noverrides++] = optarg;
			break;
		case 't':
			opt->table = optarg;
			break;
		case 'T':
			opt->topic = optarg;
			break;
		case 'p':
			opt->print_config = true;
			break;
		case 'F':
			opt->from = optarg;
			break;
		case 'U':
			opt->until = optarg;
			break;
		case 'L':
			opt->tables = optarg;
			break;
		case 'h':
			return 1;
		default:
			return -1;
		}
	}
	return 0;
}

/* Load the configuration and set up logging. @returns 0, or -1 after printing why. */
static int load_config(cs_config_t *cfg, const options_t *opt)
{
	char errstr[1024];

	cs_config_init(cfg);
	if (cs_config_load(cfg, opt->config, environ, opt->overrides, opt->noverrides, errstr,
			   sizeof(errstr)) != 0) {
		fprintf(stderr, "copysink: %s\n", errstr);
		return -1;
	}
	if (cs_log_setup(cfg->log_format, cfg->log_level) != 0) {
		fprintf(stderr, "copysink: invalid log_format or log_level\n");
		return -1;
	}
	return 0;
}

/* Keep only the tables named in `list` (comma-separated). @returns 0, or -1 after printing
 * which name is unknown. */
static int keep_tables(cs_config_t *cfg, const char *list)
{
	char *copy = strdup(list), *save = NULL;
	bool keep[CS_MAX_TABLES] = {false};
	int n = 0;

	if (copy == NULL)
		return -1;
	for (char *name = strtok_r(copy, ", ", &save); name != NULL;
	     name = strtok_r(NULL, ", ", &save)) {
		int t;
		for (t = 0; t < cfg->ntables; t++)
			if (strcmp(cfg->tables[t].name, name) == 0)
				break;
		if (t == cfg->ntables) {
			fprintf(stderr, "copysink replay: --tables: table \"%s\" is not in the "
					"configuration\n", name);
			free(copy);
			return -1;
		}
		keep[t] = true;
	}
	free(copy);
	for (int t = 0; t < cfg->ntables; t++)
		if (keep[t])
			cfg->tables[n++] = cfg->tables[t];
	cfg->ntables = n;
	return 0;
}

/* `copysink run` (replay == NULL) and `copysink replay`: the worker. */
static int cmd_run(cs_config_t *cfg, const cs_replay_opts_t *replay)
{
	struct sigaction sa;
	cs_stats_shared_t shared;
	cs_http_t *http = NULL;
	cs_worker_t *w;
	cs_err_t err;
	char errstr[1024];
	close_guard_t guard;
	bool guarded;

	if (cfg->ntables == 0) {
		cs_error("no [table NAME] section in the configuration: nothing to consume");
		return EXIT_USAGE;
	}
	/* 1. signals first, so a SIGTERM during start-up is not lost */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* 2. metrics and health first, so probes answer (not ready) while we connect */
	cs_stats_shared_init(&shared);
	/* a replay runs beside the live worker: no endpoint to collide with the worker's */
	if (replay == NULL && cfg->http_listen != NULL && cfg->http_listen[0] != '\0') {
		http = cs_http_start(cfg->http_listen, &shared, cfg->tables, cfg->ntables,
				     HEALTH_STALL_MS, errstr, sizeof(errstr));
		if (http == NULL) {
			cs_error("%s", errstr);
			cs_stats_shared_cleanup(&shared);
			return EXIT_USAGE;
		}
		cs_info("metrics and health on http://%s/metrics /healthz /readyz", cfg->http_listen);
	}
	/* 3. PostgreSQL (tables checked), dead-letter producer, consumer; order matters: the
	 *    consumer's rebalance callback reads stored offsets through the connection */
	w = cs_worker_new(cfg, &shared, replay, &err, errstr, sizeof(errstr));
	if (w == NULL) {
		cs_error("%s", errstr);
		cs_http_stop(http);
		cs_stats_shared_cleanup(&shared);
		return err == CS_ERR_FATAL ? EXIT_USAGE : EXIT_FAILURE;
	}
	cs_info("copysink %s %s: %d table(s), max_rows=%lld max_bytes=%lld linger_ms=%lld",
		COPYSINK_VERSION, replay ? "replay started" : "started", cfg->ntables, (long long)cfg->batch_max_rows,
		(long long)cfg->batch_max_bytes, (long long)cfg->batch_linger_ms);
	/* 4. the loop, until a signal; it drains the pending batch before returning */
	err = cs_worker_run(w, &stop_requested, errstr, sizeof(errstr));
	if (err != CS_OK)
		cs_error("%s", errstr);
	/* 5. leave the group, flush the dead-letter producer, close the connection, stop HTTP,
	 *    within CLOSE_TIMEOUT_MS */
	guarded = close_guard_start(&guard) == 0;
	if (!guarded)
		cs_warn("could not start the close guard: the close runs without a time limit");
	cs_worker_destroy(w);
	cs_http_stop(http);
	if (guarded)
		close_guard_stop(&guard);
	cs_stats_shared_cleanup(&shared);
	cs_info("copysink stopped");
	return err == CS_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* `copysink migrate`: create the tables and the bookkeeping table. */
static int cmd_migrate(cs_config_t *cfg)
{
	PGconn *conn = PQconnectdb(cfg->pg_conninfo ? cfg->pg_conninfo : "");
	char errstr[1024];
	int rc = EXIT_SUCCESS;

	if (PQstatus(conn) != CONNECTION_OK) {
		cs_error("could not connect to PostgreSQL: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return EXIT_FAILURE;
	}
	cs_schema_quiet_notices(conn);
	if (cs_schema_migrate(conn, cfg->tables, cfg->ntables,
			      strcmp(cfg->pg_create_extension, "on") == 0, errstr,
			      sizeof(errstr)) != 0) {
		cs_error("migration failed: %s", errstr);
		rc = EXIT_FAILURE;
	} else {
		for (int t = 0; t < cfg->ntables; t++) {
			cs_table_shape_t shape;
			if (cs_schema_resolve(conn, &cfg->tables[t], &shape, errstr, sizeof(errstr)) !=
			    0) {
				cs_error("%s", errstr);
				rc = EXIT_FAILURE;
			}
		}
		if (rc == EXIT_SUCCESS)
			cs_info("migrated: %d table(s) and \"%s\" ready", cfg->ntables,
				CS_OFFSETS_TABLE);
	}
	PQfinish(conn);
	return rc;
}

/* `copysink replay`: check the options, then run the worker in replay mode. */
static int cmd_replay(cs_config_t *cfg, const options_t *opt)
{
	cs_replay_opts_t ropts = {.from = opt->from, .until_end = opt->until != NULL,
				  .tty = isatty(STDERR_FILENO) == 1};

	if (opt->from == NULL) {
		fprintf(stderr, "copysink replay: --from is required (earliest, an RFC 3339 time, "
				"or topic:partition:offset,...)\n");
		return EXIT_USAGE;
	}
	if (opt->until != NULL && strcmp(opt->until, "end") != 0) {
		fprintf(stderr, "copysink replay: --until takes \"end\" only\n");
		return EXIT_USAGE;
	}
	if (opt->tables != NULL && keep_tables(cfg, opt->tables) != 0)
		return EXIT_USAGE;
	return cmd_run(cfg, &ropts);
}

/* `copysink produce`: JSON lines to msgpack entries on a topic. */
static int cmd_produce(cs_config_t *cfg, const options_t *opt, int argc, char **argv)
{
	const char *path = optind < argc ? argv[optind] : NULL;
	char errstr[1024];

	if (opt->table == NULL) {
		fprintf(stderr, "copysink produce: --table is required\n");
		return EXIT_USAGE;
	}
	if (cs_produce_run(cfg, opt->table, opt->topic, path, errstr, sizeof(errstr)) != 0) {
		fprintf(stderr, "copysink produce: %s\n", errstr);
		return EXIT_FAILURE;
	}
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	options_t opt = {0};
	cs_config_t cfg;
	const char *cmd;
	int rc;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		if (argc >= 3 && strcmp(argv[1], "help") == 0 && strcmp(argv[2], "config") == 0) {
			cs_config_help(stdout);
			return EXIT_SUCCESS;
		}
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_SUCCESS;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("copysink %s (librdkafka %s, libpq %d)\n", COPYSINK_VERSION,
		       rd_kafka_version_str(), PQlibVersion());
		return EXIT_SUCCESS;
	}
	cmd = argv[1];
	if (strcmp(cmd, "run") != 0 && strcmp(cmd, "migrate") != 0 && strcmp(cmd, "check") != 0 &&
	    strcmp(cmd, "produce") != 0 && strcmp(cmd, "replay") != 0) {
		fprintf(stderr, "copysink: unknown command \"%s\"\n\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	rc = parse_options(argc - 1, argv + 1, &opt);
	if (rc != 0) {
		if (rc < 0)
			fprintf(stderr, "(\"copysink %s --help\" for its options)\n", cmd);
		else
			command_usage(cmd, stdout);
		return rc > 0 ? EXIT_SUCCESS : EXIT_USAGE;
	}
	optind += 1; /* parse_options saw argv + 1 */
	if (load_config(&cfg, &opt) != 0) {
		cs_config_cleanup(&cfg);
		return EXIT_USAGE;
	}
	if (opt.print_config)
		cs_config_print(&cfg, stdout);
	if (strcmp(cmd, "run") == 0)
		rc = cmd_run(&cfg, NULL);
	else if (strcmp(cmd, "replay") == 0)
		rc = cmd_replay(&cfg, &opt);
	else if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate(&cfg);
	else if (strcmp(cmd, "check") == 0)
		rc = cs_check_run(&cfg, stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	else
		rc = cmd_produce(&cfg, &opt, argc, argv);
	cs_config_cleanup(&cfg);
	return rc;
}
