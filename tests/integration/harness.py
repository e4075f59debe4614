"""Integration test harness: starts a real nginx and a real mmembed master
(test build, with the slow/crash hooks) in a temporary directory on free
ports, and talks HTTP to them. Python standard library only."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MMEMBED_BIN", os.path.join(ROOT, "build", "test", "mmembed"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Skip(Exception):
    """A test that cannot run here. `broken` says the reason means the machine
    is not set up as the suite needs (not root, no network namespaces, no
    ffmpeg, a route missing from the build): run.py counts it as a skip, and
    as a failure when CI=true."""

    def __init__(self, reason, broken=False):
        super().__init__(reason)
        self.reason = reason
        self.broken = broken


def skip(reason, broken=False):
    raise Skip(reason, broken)


def need_root(what="this test"):
    if os.geteuid() != 0:
        skip(f"{what} needs root", broken=True)


def need_tool(name):
    if not shutil.which(name):
        skip(f"{name} not installed", broken=True)


def cpuinfo_native(dtype, env=None):
    """Whether /proc/cpuinfo's flags, capped by MMEMBED_CPU (from env, else
    os.environ) as src/nn/cpu.c documents (avx2 < avx512 < avx512_bf16 <
    amx), say the CPU multiplies dtype natively: the expectation comes from
    the kernel's view, not from the server's own report."""
    if dtype == "f32":
        return True
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    cap = (env if env is not None else os.environ).get("MMEMBED_CPU", "")
    level = {"avx2": 1, "avx512": 2, "avx512_bf16": 3, "amx": 4}.get(cap, 4)
    avx512 = {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags
    vnni = level >= 3 and avx512 and "avx512_vnni" in flags
    bf16 = vnni and "avx512_bf16" in flags
    amx = level >= 4 and bf16 and {"amx_bf16", "amx_tile", "amx_int8"} <= flags
    return amx or bf16 if dtype == "bf16" else amx or vnni


def cpuinfo_isa(env=None):
    """The ISA name the server should report for this CPU under MMEMBED_CPU."""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if cpuinfo_native("bf16", env) and {"amx_bf16", "amx_tile", "amx_int8"} <= flags and \
            (env if env is not None else os.environ).get("MMEMBED_CPU", "amx") in ("", "amx"):
        return "amx"
    if cpuinfo_native("bf16", env):
        return "avx512_bf16"
    cap = (env if env is not None else os.environ).get("MMEMBED_CPU", "")
    if cap != "avx2" and {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    return "avx2"


def free_port(n=1):
    """A base port with n consecutive free ports after it."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n >= 65000:
            continue
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            t.close()
        if ok:
            return base
    raise RuntimeError("no free ports")


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


class Server:
    """nginx + mmembed master in a temp dir. `conf` overrides config keys;
    values are libconfig literals (strings must carry their quotes)."""

    def __init__(self, workers=2, models=None, extra=None, limits=None, tcp=False, env=None, http="",
                 nginx_server="", bin=None):
        self.dir = tempfile.mkdtemp(prefix="mmembed-it-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.workers = workers
        self.env = dict(os.environ, **(env or {}))
        self.http = http
        # directives added to the rendered nginx server block (e.g. a short client_body_timeout
        # so a test need not wait out the 60 s default); the shipped template is otherwise as is
        self.nginx_server = nginx_server
        self.bin = bin or BIN      # e.g. the release build/mmembed instead of the test build
        self.conf_path = os.path.join(self.dir, "mmembed.conf")
        self.log_path = os.path.join(self.dir, "mmembed.log")
        self.pid_path = os.path.join(self.dir, "mmembed.pid")
        if tcp:
            listen = f"127.0.0.1:{free_port(workers)}"
        else:
            listen = os.path.join(self.dir, "w-%d.sock")
        self.settings = {
            "listen": f'"{listen}"', "workers": str(workers), "threads": "1",
            "request_timeout": "30.0", "max_requests": "0", "queue_depth": "0",
            "stop_timeout": "10.0", "backoff_max": "2.0", "retry_after": "1",
            "pid_file": f'"{self.pid_path}"',
        }
        if os.geteuid() == 0:
            self.settings["user"] = '"www-data"'
            self.settings["group"] = '"www-data"'
        self.settings.update(extra or {})
        self.limits = {"max_body_bytes": '"4M"'}
        self.limits.update(limits or {})
        self.models = models if models is not None else []
        self.write_conf()
        self.master = None
        self.nginx = None

    def write_conf(self, settings=None, raw=None):
        if raw is not None:
            open(self.conf_path, "w").write(raw)
            return
        s = dict(self.settings)
        s.update(settings or {})
        lines = [f"{k} = {v};" for k, v in s.items()]
        lines.append(f'http = {{ listen = "127.0.0.1:{self.port}"; tries = 0; {self.http} }};')
        lines.append("limits = {" + " ".join(f"{k} = {v};" for k, v in self.limits.items()) + "};")
        lines.append(f'log = {{ level = "info"; file = "{self.log_path}"; }};')
        if self.models:
            items = []
            for m in self.models:
                d = ' default = true;' if m.get("default") else ""
                if m.get("instruction"):
                    d += f' instruction = "{m["instruction"]}";'
                if m.get("default_for"):
                    d += " default_for = [" + ", ".join(f'"{x}"' for x in m["default_for"]) + "];"
                if m.get("max_tokens"):
                    d += f' max_tokens = {m["max_tokens"]};'
                if m.get("max_image_tokens"):
                    d += f' max_image_tokens = {m["max_image_tokens"]};'
                if m.get("dtype"):
                    d += f' dtype = "{m["dtype"]}";'
                if m.get("device"):
                    d += f' device = "{m["device"]}";'
                if m.get("gpu_dtype"):
                    d += f' gpu_dtype = "{m["gpu_dtype"]}";'
                if m.get("aliases"):
                    d += " aliases = [" + ", ".join(f'"{x}"' for x in m["aliases"]) + "];"
                items.append(f'{{ name = "{m["name"]}"; path = "{m["path"]}";{d} }}')
            lines.append("models = (" + ", ".join(items) + ");")
        open(self.conf_path, "w").write("\n".join(lines) + "\n")

    def start(self, wait=True):
        ngconf = os.path.join(self.dir, "nginx.conf")
        subprocess.run([self.bin, "render-nginx", "-c", self.conf_path, "-t",
                        os.path.join(ROOT, "nginx", "mmembed.conf.in"), "-p", self.dir,
                        "-w", os.path.join(ROOT, "nginx", "www"), "-o", ngconf], check=True)
        if self.nginx_server:
            text = open(ngconf).read()
            at = text.index("server_name _;")
            text = text[:at] + self.nginx_server + "\n        " + text[at:]
            open(ngconf, "w").write(text)
        self.master_out = open(os.path.join(self.dir, "master.out"), "w")
        self.master = subprocess.Popen([self.bin, "serve", "-c", self.conf_path], stdout=self.master_out,
                                       stderr=subprocess.STDOUT, env=self.env)
        self.nginx = subprocess.Popen([NGINX, "-p", self.dir, "-c", ngconf, "-e",
                                       os.path.join(self.dir, "nginx-error.log")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=60):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            if self.master.poll() is not None:
                raise RuntimeError(f"master exited {self.master.returncode}: {self.log()[-2000:]}")
            try:
                r = self.get("/health")
                # ready = every configured worker up (/health is 200 as soon as one is;
                # tests that pick workers by pid need them all)
                if r.status == 200 and r.json()["workers"]["total"] >= self.workers:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {last}; log: {self.log()[-2000:]}")

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data, time.perf_counter() - t0)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_json(self, path, obj, **kw):
        h = {"Content-Type": "application/json"}
        h.update(kw.pop("headers", {}))
        return self.request("POST", path, body=json.dumps(obj).encode(), headers=h, **kw)

    def status(self):
        return self.get("/status").json()

    def metrics(self):
        out = {}
        for line in self.get("/metrics").body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def worker_pids(self):
        return [w["pid"] for w in self.status()["workers"] if w["state"] in ("idle", "busy")]

    def children(self):
        """PIDs whose parent is the master (from /proc)."""
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        st = f.read()
                    ppid = int(st.rsplit(")", 1)[1].split()[1])
                    if ppid == self.master.pid:
                        pids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        return pids

    def log(self):
        try:
            return open(self.log_path).read()
        except OSError:
            return ""

    def signal(self, sig):
        os.kill(self.master.pid, sig)

    def stop(self):
        if self.nginx and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(5)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        if self.master and self.master.poll() is None:
            self.master.send_signal(signal.SIGINT)
            try:
                self.master.wait(5)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
        if os.environ.get("MMEMBED_KEEP_TMP"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


def wait_until(fn, timeout=10, step=0.05, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")
