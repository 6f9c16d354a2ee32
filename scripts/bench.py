#!/usr/bin/env python3
"""Side-by-side benchmark of a sessionfs mount and its baseline, for every backend.

Run through scripts/bench.sh (see its header for the options). Every case runs the mount (A)
and its baseline (B) in turn, A B A B, --repeat times, and prints the medians of both and the
median and min-max of the ratio, so one noisy turn on a shared VM moves the spread and not the
result. Ratios are "how many times faster than the baseline": above 1 the mount is faster.

Baselines: one curl download of the same object (reads), the API's single-request upload of
the same bytes with curl (cp in), the local disk (small files, git clone), paging through the
API's listing (ls, find), and the same 4 KiB ranges as GETs on one curl (random reads).

The objects are made through the API with no network simulation, then the emulator restarts
on the same data with the profile's: `wan` adds 20 ms to every request and caps each
connection at 50 MiB/s each way, `loopback` adds nothing.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

MIB = 1 << 20
PROFILES = {
    "loopback": [],
    "wan": ["--latency", "20ms", "--bandwidth", "50MiB"],
}
CASES = ["read", "write", "small", "writeback", "list", "random"]


def die(message):
    sys.exit(f"bench: {message}")


def number(value):
    """A figure with as many decimals as its size needs."""
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command, **kwargs):
    """Seconds a shell command takes; it must succeed."""
    start = time.monotonic()
    done = subprocess.run(command, shell=True, stdout=subprocess.DEVNULL, **kwargs)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        die(f"`{command}` failed with {done.returncode}")
    return seconds


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid):
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Api:
    """A small JSON client over one keep-alive connection per thread."""

    def __init__(self, host, headers):
        self.netloc = urllib.parse.urlparse(host).netloc
        self.headers = headers
        self.local = threading.local()

    def conn(self):
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection(self.netloc, timeout=120)
        return self.local.conn

    def call(self, method, path, body=None, headers=None, expect=(200, 201)):
        all_headers = dict(self.headers)
        all_headers.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        for attempt in range(3):
            try:
                conn = self.conn()
                conn.request(method, path, body, all_headers)
                res = conn.getresponse()
                data = res.read()
                break
            except (ConnectionError, http.client.HTTPException):
                del self.local.conn
                if attempt == 2:
                    raise
        if res.status not in expect:
            die(f"{method} {path} answered {res.status}: {data[:300]!r}")
        return json.loads(data) if data else None


def multipart(fields, files):
    """A multipart/form-data body: fields {name: text}, files [(field, filename, bytes)]."""
    boundary = "sessionfs-bench-boundary"
    out = []
    for name, value in fields.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for field, filename, data in files:
        out.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def in_parallel(items, work, threads=4):
    """Runs `work` on every item from `threads` threads (a bounded pool over a fixed list)."""
    errors = []

    def run(chunk):
        try:
            for item in chunk:
                work(item)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    pool = [threading.Thread(target=run, args=(items[k::threads],)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


class Backend:
    """What the benchmark needs of one API: its emulator's and mount's flags, how to make the
    test objects, and the baseline requests. Subclasses fill in the API-specific parts."""

    name = ""
    # The largest file the API takes (None: no limit).
    max_file = None
    # Whether the API deletes files: git renames its lock files over others, which needs it.
    can_delete = True
    serve_args = []
    mount_args = []

    def __init__(self, work):
        self.work = work

    def endpoint(self, host):
        return host

    def api(self, host):
        return Api(host, {})

    # Paths inside the mount.
    def big_path(self, mnt):
        return os.path.join(mnt, "big.bin")

    def many_dir(self, mnt):
        return mnt

    def writes_dir(self, mnt):
        return os.path.join(mnt, "writes")


class Mix(Backend):
    name = "mix"

    def setup(self, host, big, small):
        api = self.api(host)
        ids = {}
        for title in ("bench", "many", "writes"):
            made = api.call(
                "POST", "/api/sessions", {"title": title, "browserMode": "local-browser-service"}
            )
            ids[title] = made["id"]
        self.ids = ids
        subprocess.run(
            ["curl", "-fs", "-o", "/dev/null", "-F", f"file=@{big}",
             f"{host}/api/sessions/{ids['bench']}/files/upload"],
            check=True,
        )

        def put(i):
            body, headers = multipart({}, [("file", f"f{i:05}.txt", f"file {i}\n".encode())])
            api.call("POST", f"/api/sessions/{ids['many']}/files/upload", body, headers)

        in_parallel(list(range(small)), put)

    def download(self, host):
        return f"{host}/api/sessions/{self.ids['bench']}/files/big.bin", []

    def curl_upload(self, host, path, name):
        return (
            f"curl -fs -o /dev/null -F 'file=@{path};filename={name}' "
            f"'{host}/api/sessions/{self.ids['writes']}/files/upload'"
        )

    def list_all(self, api):
        return len(api.call("GET", f"/api/sessions/{self.ids['many']}/files"))

    def big_path(self, mnt):
        return os.path.join(mnt, "bench", "big.bin")

    def many_dir(self, mnt):
        return os.path.join(mnt, "many")

    def writes_dir(self, mnt):
        return os.path.join(mnt, "writes")


class Lightfield(Backend):
    name = "lightfield"
    max_file = 512 * MIB
    can_delete = False
    KEY = "sk_lf_bench"
    serve_args = ["--token", KEY]
    mount_args = ["--token", KEY]

    def endpoint(self, host):
        return host

    def api(self, host):
        return Api(host, {"Authorization": f"Bearer {self.KEY}", "Lightfield-Version": "2026-03-01"})

    def put_file(self, api, name, data):
        made = api.call(
            "POST", "/v1/files",
            {"filename": name, "mimeType": "application/octet-stream", "sizeBytes": len(data)},
        )
        return made

    def setup(self, host, big, small):
        api = self.api(host)
        self.big_id = self.upload(host, big, "big.bin")

        def put(i):
            data = f"file {i}\n".encode()
            made = self.put_file(api, f"f{i:05}.txt", data)
            url = urllib.parse.urlparse(made["uploadUrl"])
            api.call("PUT", url.path + (f"?{url.query}" if url.query else ""), data,
                     made.get("uploadHeaders", {}), expect=(200, 201, 204))
            api.call("POST", f"/v1/files/{made['id']}/complete",
                     {"md5": hashlib.md5(data).hexdigest()})

        in_parallel(list(range(small)), put)

    def upload(self, host, path, name):
        """create, one curl PUT of the bytes, complete: the API's one way to upload."""
        api = self.api(host)
        size = os.path.getsize(path)
        made = api.call(
            "POST", "/v1/files",
            {"filename": name, "mimeType": "application/octet-stream", "sizeBytes": size},
        )
        headers = []
        for key, value in made.get("uploadHeaders", {}).items():
            headers += ["-H", f"{key}: {value}"]
        subprocess.run(
            ["curl", "-fs", "-o", "/dev/null", "-X", "PUT", "-T", path, *headers, made["uploadUrl"]],
            check=True,
        )
        api.call("POST", f"/v1/files/{made['id']}/complete", {"md5": self.md5_of(path)})
        return made["id"]

    def md5_of(self, path):
        cached = getattr(self, "_md5", {})
        if path not in cached:
            digest = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(MIB), b""):
                    digest.update(block)
            cached[path] = digest.hexdigest()
            self._md5 = cached
        return cached[path]

    def download(self, host):
        url = self.api(host).call("GET", f"/v1/files/{self.big_id}/url")["url"]
        return url, []

    def curl_upload(self, host, path, name):
        self.md5_of(path)  # outside the timing, as the mount's own md5 is not timed either
        return f"python3 {__file__} --lightfield-upload {host} {path} {name}"

    def list_all(self, api):
        total, offset = 0, 0
        while True:
            page = api.call("GET", f"/v1/files?offset={offset}&limit=25")["data"]
            total += len(page)
            offset += len(page)
            if len(page) < 25:
                return total


class Appmixer(Backend):
    name = "appmixer"
    EMAIL, PASSWORD = "bench@example.com", "bench-secret"
    serve_args = ["--user", f"{EMAIL}:{PASSWORD}"]

    def __init__(self, work):
        super().__init__(work)
        secret = os.path.join(work, "appmixer-password")
        with open(secret, "w") as f:
            f.write(self.PASSWORD)
        os.chmod(secret, 0o600)
        self.mount_args = ["--user", self.EMAIL, "--password-file", secret]

    def api(self, host):
        signed = Api(host, {}).call(
            "POST", "/user/auth", {"email": self.EMAIL, "password": self.PASSWORD}
        )
        self.jwt = signed["token"]
        return Api(host, {"Authorization": f"Bearer {self.jwt}"})

    def setup(self, host, big, small):
        api = self.api(host)
        self.big_id = json.loads(subprocess.run(
            ["curl", "-fs", "-H", f"Authorization: Bearer {self.jwt}", "-F", f"file=@{big};filename=big.bin",
             f"{host}/files"], check=True, capture_output=True).stdout)["fileId"]

        def put(i):
            body, headers = multipart({}, [("file", f"f{i:05}.txt", f"file {i}\n".encode())])
            api.call("POST", "/files", body, headers)

        in_parallel(list(range(small)), put)

    def download(self, host):
        self.api(host)
        return f"{host}/files/{self.big_id}", ["-H", f"Authorization: Bearer {self.jwt}"]

    def curl_upload(self, host, path, name):
        self.api(host)
        return (
            f"curl -fs -o /dev/null -H 'Authorization: Bearer {self.jwt}' "
            f"-F 'file=@{path};filename={name}' '{host}/files'"
        )

    def list_all(self, api):
        return len(api.call("GET", "/files"))


class Fluxer(Backend):
    name = "fluxer"
    TOKEN = "bench-token"
    serve_args = ["--token", TOKEN, "--no-rate-limits", "--max-attachment-size", "1GiB",
                  "--channels", "general,files,writes"]
    mount_args = ["--token", TOKEN]
    PER_MESSAGE = 10

    def endpoint(self, host):
        return f"{host}/v1"

    def api(self, host):
        return Api(host, {"Authorization": self.TOKEN})

    def channels(self, api):
        guild = api.call("GET", "/v1/users/@me/guilds")[0]
        self.guild = guild["name"]
        return {c["name"]: c["id"] for c in api.call("GET", f"/v1/guilds/{guild['id']}/channels")
                if c.get("type", 0) == 0}

    def setup(self, host, big, small):
        api = self.api(host)
        self.ids = self.channels(api)
        posted = json.loads(subprocess.run(
            ["curl", "-fs", "-H", f"Authorization: {self.TOKEN}", "-F", 'payload_json={"content":"bench"}',
             "-F", f"files[0]=@{big};filename=big.bin", f"{host}/v1/channels/{self.ids['general']}/messages"],
            check=True, capture_output=True).stdout)
        # The emulator restarts on another port: keep the path of the attachment's URL.
        url = urllib.parse.urlparse(posted["attachments"][0]["url"])
        self.big_path_and_query = url.path + (f"?{url.query}" if url.query else "")

        def post(first):
            files = [(f"files[{k}]", f"f{i:05}.txt", f"file {i}\n".encode())
                     for k, i in enumerate(range(first, min(first + self.PER_MESSAGE, small)))]
            body, headers = multipart({"payload_json": '{"content":"many"}'}, files)
            api.call("POST", f"/v1/channels/{self.ids['files']}/messages", body, headers)

        in_parallel(list(range(0, small, self.PER_MESSAGE)), post)

    def download(self, host):
        return host + self.big_path_and_query, []

    def curl_upload(self, host, path, name):
        return (
            f"curl -fs -o /dev/null -H 'Authorization: {self.TOKEN}' "
            f"-F 'payload_json={{\"content\":\"bench\"}}' -F 'files[0]=@{path};filename={name}' "
            f"'{host}/v1/channels/{self.ids['writes']}/messages'"
        )

    def list_all(self, api):
        total, before = 0, None
        while True:
            query = "limit=100" + (f"&before={before}" if before else "")
            page = api.call("GET", f"/v1/channels/{self.ids['files']}/messages?{query}")
            total += sum(len(m.get("attachments", [])) for m in page)
            if len(page) < 100:
                return total
            before = page[-1]["id"]

    def big_path(self, mnt):
        return os.path.join(mnt, self.guild, "general", "big.bin")

    def many_dir(self, mnt):
        return os.path.join(mnt, self.guild, "files")

    def writes_dir(self, mnt):
        return os.path.join(mnt, self.guild, "writes")


BACKENDS = {b.name: b for b in (Mix, Lightfield, Appmixer, Fluxer)}


class Bench:
    """One backend under one profile: its emulator, mounts and the table of results."""

    def __init__(self, args, backend_cls, work):
        self.args = args
        self.work = work
        self.backend = backend_cls(work)
        self.data = os.path.join(work, "data")
        self.mnt = os.path.join(work, "mnt")
        self.cache = os.path.join(work, "cache")
        for d in (self.data, self.mnt, self.cache):
            os.makedirs(d, exist_ok=True)
        self.emulator = None
        self.mount_proc = None
        self.rows = []
        limit = self.backend.max_file
        self.size = args.size * MIB if limit is None else min(args.size * MIB, limit)
        self.big = os.path.join(work, "big.bin")

    # --- processes ---
    def start_emulator(self, net):
        port = free_port()
        self.host = f"http://127.0.0.1:{port}"
        log = open(os.path.join(self.work, "serve.log"), "a")
        self.emulator = subprocess.Popen(
            [self.args.bin, "serve", "--backend", self.backend.name, "--data", self.data,
             "--listen", f"127.0.0.1:{port}", *self.backend.serve_args, *net],
            stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "error"},
        )
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        die("the emulator did not come up")

    def stop_emulator(self):
        if self.emulator:
            self.emulator.terminate()
            self.emulator.wait()
            self.emulator = None

    def mount(self, *extra):
        log = open(os.path.join(self.work, "mount.log"), "a")
        self.mount_proc = subprocess.Popen(
            [self.args.bin, "mount", self.mnt, "--backend", self.backend.name,
             "--endpoint", self.backend.endpoint(self.host), *self.backend.mount_args,
             "--memory-limit", self.args.memory_limit, "--cache-dir", self.cache,
             "--metadata-ttl", "60s", *self.args.mount_option, *extra],
            stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"},
        )
        for _ in range(400):
            with open("/proc/mounts") as f:
                if f" {self.mnt} fuse" in f.read():
                    return
            if self.mount_proc.poll() is not None:
                break
            time.sleep(0.05)
        die(f"the mount did not come up; see {log.name}")

    def unmount(self):
        if self.mount_proc:
            subprocess.run(["umount", self.mnt], check=True)
            self.mount_proc.wait()
            self.mount_proc = None

    def served_bytes(self):
        with open(f"/proc/{self.emulator.pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
        return 0

    def warm_server_storage(self):
        """Empties the page cache, then reads the emulator's large blobs back into it: both
        sides of a read case find the server's storage equally warm, as a real server's would
        be, and neither pays this VM's disk (before, curl ran after the mount's read and found
        the blob cached while the mount had found it cold)."""
        drop_caches()
        for root, _, files in os.walk(self.data):
            for name in files:
                path = os.path.join(root, name)
                if os.path.getsize(path) >= MIB:
                    with open(path, "rb") as f:
                        while f.read(16 * MIB):
                            pass

    # --- results ---
    def row(self, case, mount, base, ratios, unit):
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else "-"
        self.rows.append((case, number(mount), number(base), f"{statistics.median(ratios):.2f}",
                          spread, unit))

    def paired(self, case, mount_turn, base_turn, unit="s", turns=None):
        """A B A B: each turn runs the mount, then the baseline; the ratio is base / mount time."""
        mounts, bases = [], []
        for _ in range(turns or self.args.repeat):
            mounts.append(mount_turn())
            bases.append(base_turn())
        ratios = [b / m for m, b in zip(mounts, bases)]
        self.row(case, statistics.median(mounts), statistics.median(bases), ratios, unit)
        return mounts, bases

    # --- cases ---
    def setup(self):
        with open(self.big, "wb") as f:
            left = self.size
            while left:
                n = min(left, 16 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.start_emulator([])
        self.backend.setup(self.host, self.big, self.args.files)
        self.stop_emulator()
        self.start_emulator(PROFILES[self.args.profile])
        self.mount()  # reads the tree once so paths resolve
        big = self.backend.big_path(self.mnt)
        if os.path.getsize(big) != self.size:
            die(f"{big} is {os.path.getsize(big)} bytes, not {self.size}")
        self.unmount()

    def case_read(self):
        url, headers = self.backend.download(self.host)
        curl = ["curl", "-fs", "-o", "/dev/null", *headers, url]
        mib = self.size / MIB
        cold, warm, cpu_mount, cpu_curl, rss = [], [], [], [], 0.0
        big = self.backend.big_path(self.mnt)

        def mount_turn():
            nonlocal rss
            self.warm_server_storage()
            self.mount()
            os.listdir(os.path.dirname(big))
            before = process_cpu(self.mount_proc.pid)
            seconds = timed(f"cat '{big}'")
            cpu_mount.append(process_cpu(self.mount_proc.pid) - before)
            warm.append(timed(f"cat '{big}'"))
            rss = max(rss, peak_rss_mib(self.mount_proc.pid))
            self.unmount()
            cold.append(seconds)
            return seconds

        def curl_turn():
            self.warm_server_storage()
            before = children_cpu()
            start = time.monotonic()
            subprocess.run(curl, check=True)
            seconds = time.monotonic() - start
            cpu_curl.append(children_cpu() - before)
            return seconds

        mounts, curls = self.paired(f"cold read {mib:.0f} MiB, cat vs curl (s)", mount_turn, curl_turn)
        self.row("  as MiB/s", round(mib / statistics.median(mounts), 1),
                 round(mib / statistics.median(curls), 1), [c / m for m, c in zip(mounts, curls)], "MiB/s")
        self.row("warm re-read, cat vs curl (s)", statistics.median(warm), statistics.median(curls),
                 [c / w for w, c in zip(warm, curls)], "s")
        gib = self.size / (1 << 30)
        self.row("  CPU s per GiB, mount vs curl", round(statistics.median(cpu_mount) / gib, 2),
                 round(statistics.median(cpu_curl) / gib, 2),
                 [c / m for m, c in zip(cpu_mount, cpu_curl) if m > 0] or [0], "s/GiB")
        allowance = int(self.args.memory_limit.rstrip("MiB")) + 64
        self.row(f"peak RSS, --memory-limit {self.args.memory_limit} (MiB)", round(rss), allowance,
                 [rss / allowance], "share")

    def case_write(self):
        self.mount()
        target = self.backend.writes_dir(self.mnt)
        os.makedirs(target, exist_ok=True)
        turn = iter(range(1, 1000))
        names = []

        def mount_turn():
            n = next(turn)
            names.append(f"by-cp-{n}.bin")
            drop_caches()
            return timed(f"cp '{self.big}' '{target}/by-cp-{n}.bin'")

        def curl_turn():
            drop_caches()
            return timed(self.backend.curl_upload(self.host, self.big, f"by-curl-{len(names)}.bin"))

        mib = self.size / MIB
        mounts, curls = self.paired(f"cp {mib:.0f} MiB in vs curl upload (s)", mount_turn, curl_turn)
        self.row("  as MiB/s", round(mib / statistics.median(mounts), 1),
                 round(mib / statistics.median(curls), 1), [c / m for m, c in zip(mounts, curls)], "MiB/s")
        self.unmount()
        # Every copy is on the server at its full size: a fresh mount lists them.
        self.mount()
        for name in names:
            size = os.path.getsize(os.path.join(target, name))
            if size != self.size:
                die(f"{name} is {size} bytes on the server, not {self.size}")
        self.unmount()

    def case_small(self):
        self.mount(*self.args.small_option)
        target = self.backend.writes_dir(self.mnt)
        os.makedirs(target, exist_ok=True)
        local = os.path.join(self.work, "local")
        os.makedirs(local, exist_ok=True)
        n = self.args.small_files
        make = ("python3 -c 'import os, sys\nd, n = sys.argv[1], int(sys.argv[2])\nos.makedirs(d)\n"
                "for i in range(n):\n    with open(os.path.join(d, f\"f{i:04}\"), \"wb\") as f:\n"
                "        f.write(b\"x\" * 4096)' ")
        turn = iter(range(1, 1000))
        counter = {"m": 0, "l": 0}

        def mount_small():
            counter["m"] += 1
            return timed(make + f"'{target}/small{counter['m']}' {n}")

        def local_small():
            counter["l"] += 1
            return timed(make + f"'{local}/small{counter['l']}' {n}")

        self.paired(f"create+write 4 KiB+close x{n} vs local disk (s)", mount_small, local_small)
        repo = self.repo()

        def mount_clone():
            k = next(turn)
            return timed(f"git clone -q '{repo}' '{target}/clone{k}'")

        def local_clone():
            k = next(turn)
            return timed(f"git clone -q '{repo}' '{local}/clone{k}'")

        if self.backend.can_delete:
            self.paired("git clone, 200 files, vs local disk (s)", mount_clone, local_clone)
        else:
            self.row("git clone: not possible, the API has no delete", "-", "-", [0], "-")
        start = time.monotonic()
        self.unmount()
        self.row("  unmount after the small-file cases (s)", time.monotonic() - start, "-", [0], "s")
        # Every file is on the server, byte-identical: a fresh mount compares the clones.
        self.mount()
        for k in range(1, self.args.repeat * 2, 2):
            clone = f"{target}/clone{k}"
            if os.path.exists(clone):
                subprocess.run(["diff", "-r", "-x", ".git", repo, clone], check=True,
                               stdout=subprocess.DEVNULL)
        self.unmount()

    def repo(self):
        """A local git repository of 200 small files (10 directories of 20), made once."""
        repo = os.path.join(self.work, "repo")
        if not os.path.exists(repo):
            subprocess.run(["git", "init", "-q", repo], check=True)
            for d in range(10):
                os.makedirs(f"{repo}/src/m{d}")
                for f in range(20):
                    with open(f"{repo}/src/m{d}/f{f}.rs", "w") as out:
                        out.write(f"// module {d} file {f}\n" * 50)
            subprocess.run(["git", "-C", repo, "add", "-A"], check=True)
            subprocess.run(["git", "-C", repo, "-c", "user.email=b@e", "-c", "user.name=bench",
                            "commit", "-qm", "bench"], check=True)
        return repo

    def case_writeback(self):
        """git clone with --write-back (A) vs without (B), each on a fresh mount; the unmount
        that uploads what waits is timed too, and every clone is compared afterwards."""
        if not self.backend.can_delete:
            self.row("write-back git clone: not possible, the API has no delete", "-", "-", [0], "-")
            return
        repo = self.repo()
        target = self.backend.writes_dir(self.mnt)
        turn = iter(range(1, 1000))
        clones, unmounts = [], []

        def clone(*options):
            self.mount(*options)
            os.makedirs(target, exist_ok=True)
            k = next(turn)
            clones.append(f"{target}/wb-clone{k}")
            seconds = timed(f"git clone -q '{repo}' '{clones[-1]}'")
            start = time.monotonic()
            self.unmount()
            return seconds, time.monotonic() - start

        def with_write_back():
            seconds, unmount = clone(f"--write-back={self.args.write_back}")
            unmounts.append(unmount)
            return seconds

        def without():
            return clone()[0]

        mounts, bases = self.paired(
            f"git clone 200 files, --write-back {self.args.write_back} vs without (s)",
            with_write_back, without)
        self.row("  the same plus the unmount that uploads them (s)",
                 statistics.median(m + u for m, u in zip(mounts, unmounts)),
                 statistics.median(bases),
                 [b / (m + u) for m, u, b in zip(mounts, unmounts, bases)], "s")
        self.mount()
        for clone_dir in clones:
            subprocess.run(["diff", "-r", "-x", ".git", repo, clone_dir], check=True,
                           stdout=subprocess.DEVNULL)
        self.unmount()

    def case_list(self):
        api = self.backend.api(self.host)
        many = self.backend.many_dir(self.mnt)
        counted = self.backend.list_all(api)
        if counted < self.args.files:
            die(f"the API lists {counted} files, not {self.args.files}")

        def listing():
            start = time.monotonic()
            self.backend.list_all(api)
            return time.monotonic() - start

        for tool, command in (("ls -l", f"ls -l '{many}'"), ("find", f"find '{many}' | wc -l")):
            cold, warm = [], []

            def mount_turn():
                self.mount()
                cold.append(timed(command))
                warm.append(timed(command))
                self.unmount()
                return cold[-1]

            _, bases = self.paired(f"{tool} {self.args.files} files cold vs API listing (s)",
                                   mount_turn, listing)
            self.row(f"{tool} {self.args.files} files warm vs API listing (s)",
                     statistics.median(warm), statistics.median(bases),
                     [b / w for w, b in zip(warm, bases)], "s")

    def case_random(self):
        if not shutil.which("fio"):
            print("bench: no fio; random reads skipped", file=sys.stderr)
            return
        url, headers = self.backend.download(self.host)
        ranges = os.path.join(self.work, "ranges.curl")
        rng = random.Random(1)
        with open(ranges, "w") as f:
            entries = []
            for _ in range(500):
                start = rng.randrange(0, self.size // 4096) * 4096
                entries.append(f'url = "{url}"\nrange = {start}-{start + 4095}\noutput = /dev/null')
            f.write("\nnext\n".join(entries))
        big = self.backend.big_path(self.mnt)
        fio = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fio", "rand_read_4k.fio")
        fetched = []

        def mount_turn():
            self.warm_server_storage()
            self.mount()
            os.listdir(os.path.dirname(big))
            before = self.served_bytes()
            out = subprocess.run(
                ["fio", "--readonly", fio, f"--filename={big}", f"--size={self.size}",
                 "--runtime=5s", "--output-format=json"], check=True, capture_output=True).stdout
            job = json.loads(out)["jobs"][0]["read"]
            fetched.append(((self.served_bytes() - before), job["io_bytes"]))
            self.unmount()
            return 1 / job["iops"]

        def curl_turn():
            self.warm_server_storage()
            return timed(f"curl -fs {' '.join(repr(h) for h in headers)} -K '{ranges}'") / 500

        mounts, curls = self.paired("random 4 KiB reads, fio vs curl ranges (s per read)",
                                    mount_turn, curl_turn)
        self.row("  as IOPS", round(1 / statistics.median(mounts)), round(1 / statistics.median(curls)),
                 [c / m for m, c in zip(mounts, curls)], "IOPS")
        served, read = fetched[len(fetched) // 2]
        self.row("  server bytes per byte read; 1 MiB blocks per 4 KiB read", served / read,
                 served / MIB / (read / 4096), [0], "-")

    def run(self):
        print(f"bench: {self.backend.name}, {self.args.profile}: setting up "
              f"({self.size // MIB} MiB file, {self.args.files} small files)", file=sys.stderr)
        self.setup()
        for case in self.args.cases:
            print(f"bench: {self.backend.name}: {case}", file=sys.stderr)
            getattr(self, f"case_{case}")()

    def close(self):
        try:
            self.unmount()
        except subprocess.CalledProcessError:
            subprocess.run(["umount", "-l", self.mnt])
        self.stop_emulator()

    def table(self):
        lines = [f"## {self.backend.name}, profile {self.args.profile}, {self.args.repeat} turns A B A B",
                 "", "| case | mount | baseline | ratio (median) | ratio min-max | unit |",
                 "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def lightfield_upload(host, path, name):
    """The Lightfield baseline as one timed command: create, curl PUT, complete."""
    backend = Lightfield(tempfile.gettempdir())
    backend.upload(host, path, name)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--lightfield-upload":
        lightfield_upload(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="bench.sh", description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    parser.add_argument("--profile", choices=PROFILES, default="loopback")
    parser.add_argument("--backend", default="all",
                        help="comma-separated: mix, lightfield, appmixer, fluxer, or all")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--size", type=int, default=1024, help="MiB of the big file (capped by the API)")
    parser.add_argument("--files", type=int, default=10000, help="files listed by ls and find")
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="turns A B of every case (at least 5)")
    parser.add_argument("--memory-limit", default="256MiB")
    parser.add_argument("--write-back", default="5s", help="the delay of the writeback case")
    parser.add_argument("--mount-option", action="append", default=[],
                        help="extra option for every mount, e.g. --mount-option=--upload-parallel=8")
    parser.add_argument("--small-option", action="append", default=[],
                        help="extra mount option for the small-file cases, e.g. --small-option=--write-back=1s")
    parser.add_argument("--bin", default=os.environ.get("SESSIONFS_BIN", os.path.join(target, "release", "sessionfs")))
    args = parser.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    for case in args.cases:
        if case not in CASES:
            parser.error(f"unknown case {case}")
    names = list(BACKENDS) if args.backend == "all" else args.backend.split(",")
    for name in names:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name}")
    if not os.access(args.bin, os.X_OK):
        die(f"no {args.bin}; run cargo build --release")
    for tool in ("curl", "git"):
        if not shutil.which(tool):
            die(f"{tool} is required")
    tables = []
    for name in names:
        work = tempfile.mkdtemp(prefix=f"sessionfs-bench-{name}.")
        bench = Bench(args, BACKENDS[name], work)
        try:
            bench.run()
        finally:
            bench.close()
            tables.append(bench.table())
            print(tables[-1], flush=True)
            print(flush=True)
            if os.environ.get("BENCH_KEEP") is None:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
