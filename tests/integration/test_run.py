"""`make run`'s script (tools/run.sh) and the production packaging: a start
on a taken port exits non-zero with nginx's reason; when the master dies the
script stops nginx and exits non-zero; Ctrl-C stops both; nothing (process,
socket, pid file) is left behind. The systemd unit passes `systemd-analyze
verify` and the nginx site example passes `nginx -t`. A SIGHUP to the script
(or to the master directly) reloads the master and then nginx, whose
upstream follows `workers`, without a failed request; a broken config
changes nothing."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import BIN, NGINX, ROOT, Server, wait_until
from test_embed import MODELS


def skip(reason, broken=False):
    """A visible skip: harness.Skip where the harness has it (run.py counts
    it; under CI=true a broken machine fails), else a printed SKIP."""
    if hasattr(harness, "Skip"):
        raise harness.Skip(reason, broken=broken)
    print(f"    SKIP {reason}")

RUN_SH = os.path.join(ROOT, "tools", "run.sh")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


class RunScript:
    """tools/run.sh on a harness config (free port, sockets, pid file and
    nginx prefix in a temp dir), its output collected in a file. With
    take_port, something else listens on the HTTP port first."""

    def __init__(self, take_port=False):
        self.s = Server(workers=1, models=MODELS[:1])
        self.blocker = None
        if take_port:
            self.blocker = socket.socket()
            self.blocker.bind(("127.0.0.1", self.s.port))
            self.blocker.listen(1)
        self.out_path = os.path.join(self.s.dir, "run.out")
        env = dict(os.environ, MMEMBED_CONF=self.s.conf_path, MMEMBED_RUN_DIR=self.s.dir, MMEMBED_BIN=BIN,
                   MMEMBED_START_TIMEOUT="60")
        self.out = open(self.out_path, "w")
        self.p = subprocess.Popen([RUN_SH], stdout=self.out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        self.master = self.nginx = None

    def output(self):
        return open(self.out_path).read()

    def wait_serving(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if "serving on" in self.output():
                self.master = read_pid(self.s.pid_path)
                self.nginx = read_pid(os.path.join(self.s.dir, "nginx.pid"))
                assert self.master and self.nginx, self.output()
                return
            assert self.p.poll() is None, f"run.sh exited {self.p.returncode}: {self.output()[-2000:]}"
            time.sleep(0.1)
        raise AssertionError(f"run.sh never said 'serving on': {self.output()[-2000:]}")

    def wait_exit(self, timeout=40):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run.sh still running after {timeout}s: {self.output()[-2000:]}")

    def assert_nothing_left(self):
        for what, pid in (("master", self.master), ("nginx", self.nginx)):
            if pid:
                assert not alive(pid), f"{what} {pid} still running"
        # no process of the script's session is left (orphaned nginx workers, pool workers)
        session = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    st = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                    if int(st[3]) == self.p.pid and st[0] != "Z":
                        session.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        assert not session, f"processes of run.sh's session still running: {session}"
        if not self.blocker:
            c = socket.socket()
            try:
                assert c.connect_ex(("127.0.0.1", self.s.port)) != 0, f"port {self.s.port} still answers"
            finally:
                c.close()
        left = glob.glob(os.path.join(self.s.dir, "*.sock"))
        left += [p for p in (self.s.pid_path, os.path.join(self.s.dir, "nginx.pid")) if os.path.exists(p)]
        assert not left, f"left behind: {left}"

    def close(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        for pid in (self.master, self.nginx):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.blocker:
            self.blocker.close()
        self.out.close()
        shutil.rmtree(self.s.dir, ignore_errors=True)


def test_port_in_use_start_exits_nonzero():
    r = RunScript(take_port=True)
    try:
        t0 = time.time()
        rc = r.wait_exit()
        out = r.output()
        assert rc != 0, out
        assert "serving on" not in out, out
        # the reason, and how to pick another port
        assert "Address already in use" in out and "http.listen" in out and "MMEMBED_CONF" in out, out
        r.assert_nothing_left()
        print(f"    exit {rc} after {time.time() - t0:.1f}s: {out.strip().splitlines()[-3]}")
    finally:
        r.close()


def test_master_death_stops_nginx_and_exits_nonzero():
    # SIGKILL (a crash: the master cannot clean up) and SIGTERM (a clean stop
    # from outside): either way the service is gone, nginx must go too
    for sig in (signal.SIGKILL, signal.SIGTERM):
        r = RunScript()
        try:
            r.wait_serving()
            assert r.s.get("/health").status == 200
            os.kill(r.master, sig)
            rc = r.wait_exit()
            assert rc != 0, (sig, r.output())
            assert "the master exited" in r.output(), r.output()
            r.assert_nothing_left()
        finally:
            r.close()


def test_nginx_death_stops_master_and_exits_nonzero():
    r = RunScript()
    try:
        r.wait_serving()
        # SIGKILL: nginx's workers outlive their master and keep the port; the script must stop them too
        os.kill(r.nginx, signal.SIGKILL)
        rc = r.wait_exit()
        assert rc != 0, r.output()
        assert "nginx exited" in r.output(), r.output()
        r.assert_nothing_left()
    finally:
        r.close()


def test_ctrl_c_stops_both_cleanly():
    r = RunScript()
    try:
        r.wait_serving()
        assert r.s.post_json("/v1/embeddings", {"input": "a photo of a cat"}).status == 200
        os.kill(r.p.pid, signal.SIGINT)
        rc = r.wait_exit()
        assert rc == 0, r.output()
        r.assert_nothing_left()
    finally:
        r.close()


class Traffic:
    """Requests through nginx, one after another in a thread, every status
    kept: a reload must not fail any of them."""

    def __init__(self, server):
        self.s = server
        self.statuses = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                st = self.s.post_json("/v1/embeddings", {"input": f"a photo of cat {i}"}).status
            except OSError as e:
                st = repr(e)
            self.statuses.append(st)

    def count(self):
        return len(self.statuses)

    def check(self):
        bad = [x for x in self.statuses if x != 200]
        assert not bad, f"{len(bad)} of {len(self.statuses)} requests failed during reloads: {bad[:10]}"


def test_sighup_reloads_master_and_nginx_without_errors():
    """`make run` with 1 worker; `workers = 3` and SIGHUP to run.sh: the
    master's pool and nginx's upstream both become 3, nginx sends to all
    three, and no request fails meanwhile. A broken config on the next
    SIGHUP is reported and changes nothing, and so is one the master cannot
    load (check-config passes it); a SIGHUP sent to the master
    directly (`workers = 2`) is followed by nginx too. Ctrl-C still leaves
    nothing behind (the sockets of every generation included)."""
    r = RunScript()
    traffic = None
    ngconf = os.path.join(r.s.dir, "nginx.conf")

    def upstream():
        return [l.split()[1] for l in open(ngconf).read().splitlines()
                if l.strip().startswith("server unix:") and "overflow" not in l]

    def pool(n, gen):
        """n workers of generation gen, all up, and each has answered a request through nginx"""
        st = r.s.status()
        ws = [w for w in st["workers"] if w["generation"] == gen and w["state"] in ("idle", "busy")]
        return (st["generation"] == gen and st["configured_workers"] == n and len(ws) == n and
                sorted(w["index"] for w in ws) == list(range(n)) and all(w["requests"] > 0 for w in ws))

    try:
        r.wait_serving()
        assert len(upstream()) == 1, open(ngconf).read()
        gen = r.s.status()["generation"]
        traffic = Traffic(r.s)
        wait_until(lambda: traffic.count() >= 5, timeout=30, what="traffic before the reload")

        # 1 -> 3 workers through run.sh
        r.s.write_conf({"workers": "3"})
        os.kill(r.p.pid, signal.SIGHUP)
        wait_until(lambda: "reloaded:" in r.output(), timeout=60, what=f"run.sh's reload: {r.output()[-1500:]}")
        assert len(upstream()) == 3, open(ngconf).read()
        wait_until(lambda: pool(3, gen + 1), timeout=60, step=0.2,
                   what=f"3 workers of generation {gen + 1}, each reached through nginx: {r.s.status()}")
        n = traffic.count()
        wait_until(lambda: traffic.count() >= n + 5, timeout=30, what="traffic after the reload")
        traffic.check()

        # a broken config: reported, nothing changes
        before = open(ngconf).read()
        good = open(r.s.conf_path).read()
        open(r.s.conf_path, "w").write(good.replace("workers = 3;", "workers = 3; no_such_key = 1;"))
        out_len = len(r.output())
        os.kill(r.p.pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in r.output()[out_len:], timeout=30,
                   what=f"the refused reload: {r.output()[-1500:]}")
        assert "no_such_key" in r.output()[out_len:], r.output()[out_len:]
        time.sleep(1)
        assert open(ngconf).read() == before
        assert not os.path.exists(ngconf + ".new")
        assert pool(3, gen + 1), r.s.status()
        assert alive(r.master) and alive(r.nginx) and r.p.poll() is None
        n = traffic.count()
        wait_until(lambda: traffic.count() >= n + 5, timeout=30, what="traffic after the refused reload")
        traffic.check()

        # a config that check-config passes but the master cannot load (its worker sockets go
        # to a directory that does not exist), with 1 worker: the master refuses it (SIGUSR1),
        # nginx keeps its 3 servers
        listen = os.path.join(r.s.dir, "w-%d.sock")
        assert f'listen = "{listen}";' in good
        open(r.s.conf_path, "w").write(good.replace("workers = 3;", "workers = 1;").replace(
            f'listen = "{listen}";', f'listen = "{os.path.join(r.s.dir, "missing", "w-%d.sock")}";'))
        out_len = len(r.output())
        os.kill(r.p.pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in r.output()[out_len:], timeout=30,
                   what=f"the master's refusal: {r.output()[-1500:]}")
        assert "master kept its configuration" in r.output()[out_len:], r.output()[out_len:]
        assert "cannot listen" in open(r.s.log_path).read()
        assert open(ngconf).read() == before and not os.path.exists(ngconf + ".new")
        assert pool(3, gen + 1), r.s.status()
        n = traffic.count()
        wait_until(lambda: traffic.count() >= n + 5, timeout=30, what="traffic after the master's refusal")
        traffic.check()

        # SIGHUP to the master directly, 3 -> 2: nginx follows
        open(r.s.conf_path, "w").write(good.replace("workers = 3;", "workers = 2;"))
        out_len = len(r.output())
        os.kill(r.master, signal.SIGHUP)
        wait_until(lambda: "reloaded:" in r.output()[out_len:], timeout=60,
                   what=f"nginx following the master: {r.output()[-1500:]}")
        assert "directly" in r.output()[out_len:], r.output()[out_len:]
        assert len(upstream()) == 2, open(ngconf).read()
        wait_until(lambda: pool(2, gen + 2), timeout=60, step=0.2,
                   what=f"2 workers of generation {gen + 2}: {r.s.status()}")
        n = traffic.count()
        wait_until(lambda: traffic.count() >= n + 5, timeout=30, what="traffic after the direct reload")
        traffic.stop.set()
        traffic.t.join(60)
        traffic.check()
        print(f"    {traffic.count()} requests through 4 reloads (2 refused), all 200")

        os.kill(r.p.pid, signal.SIGINT)
        assert r.wait_exit() == 0, r.output()
        r.assert_nothing_left()
    finally:
        if traffic:
            traffic.stop.set()
        r.close()


def test_systemd_unit_verifies():
    """conf/mmembed.service passes `systemd-analyze verify` (with ExecStart
    pointed at the built binary: verify checks that it exists) and has the
    restart, reload, stop and hardening settings the README promises."""
    unit = open(os.path.join(ROOT, "conf", "mmembed.service")).read()
    for line in ("Restart=always", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM", "KillMode=mixed",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=mmembed"):
        assert "\n" + line + "\n" in unit, f"{line} missing from conf/mmembed.service"
    tool = shutil.which("systemd-analyze")
    if not tool:
        return skip("systemd-analyze verify: systemd-analyze is not installed (tools/deps.sh test installs it)",
                    broken=True)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mmembed.service")
        open(path, "w").write(unit.replace("/usr/local/bin/mmembed", os.path.join(ROOT, "build", "mmembed")))
        p = subprocess.run([tool, "verify", path], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "mmembed.service" not in p.stderr, p.stderr


def test_nginx_site_example_parses():
    """conf/nginx-site.conf.example is a valid site for the system nginx
    (included into an http block as sites-enabled is; port moved)."""
    site = open(os.path.join(ROOT, "conf", "nginx-site.conf.example")).read()
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        open(os.path.join(d, "site.conf"), "w").write(site.replace("listen 80;", "listen 127.0.0.1:1;"))
        conf = os.path.join(d, "nginx.conf")
        open(conf, "w").write(f"""pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ }}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
    uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
    access_log off;
    include {d}/site.conf;
}}
""")
        p = subprocess.run([NGINX, "-t", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr


def test_unreachable_socket_dir_is_reported():
    """As root the workers and nginx run as www-data: sockets in a directory
    that user cannot reach would give 502 for ever; the script says why and
    exits non-zero instead."""
    if os.geteuid() != 0:
        return skip("only as root (workers drop to www-data)", broken=True)
    private = tempfile.mkdtemp(prefix="mmembed-private-")   # 0700, like root's home
    saved, tempfile.tempdir = tempfile.tempdir, private
    try:
        s = Server(workers=1, models=MODELS[:1])              # its dir (0755) inside the private one
    finally:
        tempfile.tempdir = saved
    try:
        env = dict(os.environ, MMEMBED_CONF=s.conf_path, MMEMBED_RUN_DIR=s.dir, MMEMBED_BIN=BIN)
        p = subprocess.run([RUN_SH], capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode != 0 and "cannot reach" in p.stderr and "serving on" not in p.stderr, p.stderr
        assert not glob.glob(os.path.join(s.dir, "*.sock")) and not os.path.exists(s.pid_path)
    finally:
        shutil.rmtree(private, ignore_errors=True)
