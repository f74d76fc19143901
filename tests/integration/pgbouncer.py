"""PgBouncer in front of the test PostgreSQL, for the tests of [postgres] staging.

PgBouncer(dir, pg_conninfo, dbname).start() writes a configuration into `dir` (one database
entry for `dbname`, pool_mode = transaction, auth_type = trust with an auth file naming the
user), runs Debian's /usr/sbin/pgbouncer in the foreground on a free port of its own and returns
once its admin console answers SHOW POOLS (a deadline, no fixed sleep); stop() ends it. Its
log (stderr) goes to dir/pgbouncer.log. As root it runs as the postgres account (PgBouncer
refuses to run as root), with its configuration in a folder of /tmp open to that account
(pytest's folders are not), removed by stop().

Debian 12 ships PgBouncer 1.18: no max_prepared_statements (1.21), which copysink does not need
(it prepares no named statement).
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2

BINARY = os.environ.get("COPYSINK_PGBOUNCER", "/usr/sbin/pgbouncer")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conninfo_fields(conninfo):
    return dict(p.split("=", 1) for p in conninfo.split())


class PgBouncer:
    def __init__(self, workdir, pg_conninfo, dbname, *, pool_size=2, pool_mode="transaction",
                 round_robin=True):
        """pool_size: server connections of the pool, at most; round_robin: hand out the
        server connections in turn (server_round_robin) rather than the last used one, so
        that one client's transactions move between them even without contention."""
        self.dir = str(workdir)
        self.pg = _conninfo_fields(pg_conninfo)
        self.dbname = dbname
        self.pool_size = pool_size
        self.pool_mode = pool_mode
        self.round_robin = round_robin
        self.user = self.pg.get("user", "postgres")
        self.port = None
        self.proc = None
        self.confdir = None

    def conninfo(self, **extra):
        """libpq conninfo of the test database through PgBouncer (extra: more keywords)."""
        fields = {"host": "127.0.0.1", "port": str(self.port), "user": self.user,
                  "dbname": self.dbname, **extra}
        return " ".join(f"{k}={v}" for k, v in fields.items())

    def start(self, timeout=30):
        os.makedirs(self.dir, exist_ok=True)
        self.port = _free_port()
        self.confdir = tempfile.mkdtemp(prefix="copysink-pgbouncer.")
        ini = os.path.join(self.confdir, "pgbouncer.ini")
        users = os.path.join(self.confdir, "userlist.txt")
        with open(users, "w") as f:
            f.write(f'"{self.user}" ""\n')
        server = " ".join(f"{k}={self.pg[k]}" for k in ("host", "port") if k in self.pg)
        with open(ini, "w") as f:
            f.write(f"""[databases]
{self.dbname} = {server} dbname={self.dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = {self.user}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
server_round_robin = {1 if self.round_robin else 0}
ignore_startup_parameters = extra_float_digits
""")
        shutil.copy(ini, self.dir)  # for the record, beside the log
        if os.getuid() == 0:  # PgBouncer will not run as root: as postgres, which must read
            pw = pwd.getpwnam("postgres")
            os.chmod(self.confdir, 0o755)
            for path in (self.confdir, ini, users):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            cmd = [BINARY, "-u", "postgres", ini]
        else:
            cmd = [BINARY, ini]
        self.out = open(os.path.join(self.dir, "pgbouncer.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited with {self.proc.returncode}:\n"
                                     + self.log_tail())
            try:
                self.admin("SHOW POOLS")
                return self
            except psycopg2.Error as e:
                last = e
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"pgbouncer did not answer on port {self.port} within "
                                     f"{timeout}s: {last}\n" + self.log_tail())
            time.sleep(0.05)

    def admin(self, command):
        """A command of the admin console; its rows as dicts."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                dbname="pgbouncer", connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            conn.close()

    def servers(self):
        """SHOW SERVERS rows of the test database's pool."""
        return [r for r in self.admin("SHOW SERVERS") if r["database"] == self.dbname]

    def clients(self):
        """SHOW CLIENTS rows of the test database."""
        return [r for r in self.admin("SHOW CLIENTS") if r["database"] == self.dbname]

    def pool(self):
        """The SHOW POOLS row of the test database, or None."""
        for r in self.admin("SHOW POOLS"):
            if r["database"] == self.dbname:
                return r
        return None

    def log_tail(self, n=3000):
        try:
            with open(os.path.join(self.dir, "pgbouncer.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout=30):
        """SIGTERM (immediate shutdown), wait; SIGKILL after the timeout."""
        if self.confdir is not None:
            shutil.rmtree(self.confdir, ignore_errors=True)
            self.confdir = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.proc = None
