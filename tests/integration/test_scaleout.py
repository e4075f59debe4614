"""Scale-out across hosts: two hosts as network namespaces (veth pairs,
10.201.x.0/24), each running a master whose workers listen on TCP; nginx in
front with an upstream over both hosts' workers. Under load one host's master
is SIGKILLed and brought back: clients keep getting 200, and traffic returns
to the revived host."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import BIN, NGINX, ROOT, free_port, skip, wait_until

import http.client


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def can_netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"mmprobe{os.getpid()}"
    ok = sh("ip", "netns", "add", name, check=False).returncode == 0
    sh("ip", "netns", "del", name, check=False)
    return ok


class Host:
    def __init__(self, tag, octet, workdir):
        self.ns = f"mm{tag}{os.getpid() % 10000}"
        self.host_if, self.ns_if = f"{self.ns}h", f"{self.ns}n"
        self.addr = f"10.201.{octet}.2"
        self.gw = f"10.201.{octet}.1"
        self.dir = os.path.join(workdir, tag)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.proc = None

    def up(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.gw}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.addr}/24", "dev", self.ns_if)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.conf = os.path.join(self.dir, "mmembed.conf")
        open(self.conf, "w").write(
            f'listen = "{self.addr}:9000";\noverflow_listen = "{self.addr}:9100";\nworkers = 2;\n'
            f'user = "www-data";\ngroup = "www-data";\nmax_requests = 0;\n'
            f'log = {{ level = "info"; file = "{self.dir}/mmembed.log"; }};\n')

    def start(self):
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, BIN, "serve", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self):
        # `ip netns exec` execs the master, so this pid is the master itself
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def down(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        sh("ip", "netns", "pids", self.ns, check=False)
        for pid in sh("ip", "netns", "pids", self.ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


def render_nginx(hosts, d, port):
    """Render host A's config, then list every host's workers (and overflow
    processes as backups) in the upstream: see nginx/multi-host.conf.example."""
    out = os.path.join(d, "nginx.conf")
    conf = os.path.join(d, "front.conf")
    open(conf, "w").write(f'listen = "{hosts[0].addr}:9000";\nworkers = 2;\nhttp = {{ listen = "127.0.0.1:{port}"; tries = 6; }};\n'
                          f'overflow_listen = "off";\nuser = "www-data";\ngroup = "www-data";\n')
    subprocess.run([BIN, "render-nginx", "-c", conf, "-t", os.path.join(ROOT, "nginx", "mmembed.conf.in"), "-p", d,
                    "-w", os.path.join(ROOT, "nginx", "www"), "-o", out], check=True)
    text = open(out).read()
    servers = "".join(f"        server {h.addr}:{9000 + i} max_fails=0;\n" for h in hosts for i in range(2))
    servers += "".join(f"        server {h.addr}:9100 backup max_fails=0;\n" for h in hosts)
    start = text.index("upstream mmembed {")
    body_start = text.index("\n", start) + 1
    end = text.index("    }", body_start)
    text = text[:body_start] + servers + text[end:]
    open(out, "w").write(text)
    return out


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path) if path == "/health" else c.request("POST", path, body=b"{}")
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_two_hosts_survive_one_master_kill():
    if not can_netns():
        skip("needs root and ip netns (network namespaces)", broken=True)
    d = tempfile.mkdtemp(prefix="mmembed-hosts-")
    os.chmod(d, 0o755)
    hosts = [Host("A", 1, d), Host("B", 2, d)]
    ng = None
    try:
        for h in hosts:
            h.up()
            h.start()
        port = free_port()
        ngconf = render_nginx(hosts, d, port)
        ng = subprocess.Popen([NGINX, "-p", d, "-c", ngconf, "-e", os.path.join(d, "nginx-error.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _ok(port), timeout=20, what="front ready")
        wait_until(lambda: all(_host_up(h) for h in hosts), timeout=20, what="both hosts up")

        # phases end on what is observed (responses counted, processes gone, the access log),
        # never on fixed sleeps; the deadlines are generous for a loaded machine
        stop = threading.Event()
        counts, bad, lock = {}, [], threading.Lock()

        def ok_count():
            with lock:
                return counts.get(200, 0)

        def client():
            while not stop.is_set():
                try:
                    st, body = get(port, "/__test/sleep?ms=20")
                except Exception as e:  # noqa: BLE001
                    with lock:
                        bad.append(repr(e))
                    continue
                with lock:
                    counts[st] = counts.get(st, 0) + 1
                    if st != 200:
                        bad.append((st, body[:200]))
                time.sleep(0.01)
        ts = [threading.Thread(target=client) for _ in range(2)]
        for t in ts:
            t.start()
        try:
            wait_until(lambda: _served_by(d, hosts[0])[0] >= 10 and _served_by(d, hosts[1])[0] >= 10,
                       timeout=60, what="both hosts serving")
            hosts[0].kill()                  # host A's master dies; its workers follow
            wait_until(lambda: not _ns_pids(hosts[0]), timeout=30, what="host A's workers gone")
            _, mark = _served_by(d, hosts[0])
            n0 = ok_count()
            wait_until(lambda: ok_count() >= n0 + 100, timeout=60, what="100 responses while host A is down")
            served_by_a_while_down, mark = _served_by(d, hosts[0], mark)
            hosts[0].start()                 # and comes back
            wait_until(lambda: _host_up(hosts[0]), timeout=30, what="host A back")
            wait_until(lambda: _served_by(d, hosts[0], mark)[0] > 10, timeout=60,
                       what="traffic back on the revived host")
        finally:
            stop.set()
            for t in ts:
                t.join(30)
        a_after, _ = _served_by(d, hosts[0], mark)
        print(f"    two hosts: responses {counts}; host A served {a_after} requests after it came back "
              f"(none possible while down: {served_by_a_while_down})")
        assert not bad, bad[:5]
        assert counts.get(200, 0) > 100, counts
        assert served_by_a_while_down == 0, served_by_a_while_down
        assert a_after > 10, "traffic did not return to the revived host"
    finally:
        if ng and ng.poll() is None:
            ng.send_signal(signal.SIGQUIT)
            ng.wait(5)
        for h in hosts:
            h.down()
        if not os.environ.get("MMEMBED_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)


def _ok(port):
    try:
        return get(port, "/health")[0] == 200
    except OSError:
        return False


def _ns_pids(h):
    return sh("ip", "netns", "pids", h.ns, check=False).stdout.split()


def _host_up(h):
    r = subprocess.run(["ip", "netns", "exec", h.ns, "ss", "-ltn"], capture_output=True, text=True).stdout
    return f"{h.addr}:9000" in r and f"{h.addr}:9001" in r


def _served_by(d, h, since_line=0):
    """Requests whose final upstream (nginx access log) was one of host h's workers."""
    n = 0
    lines = open(os.path.join(d, "nginx-access.log")).read().splitlines()[since_line:]
    for line in lines:
        if "upstream=" not in line:
            continue
        last = line.split("upstream=")[1].split(" ")[0].split(",")[-1]
        n += last.startswith(h.addr + ":90")
    return n, len(lines) + since_line
