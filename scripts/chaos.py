"""Fault drills for dissuade (run through scripts/chaos).

crash:   live traffic at --rate events/s for --duration seconds; `dissuade run` killed with
         SIGKILL at random moments --kills times and restarted each time (with --instances 2,
         two instances in one group and one of them killed each time). Then a clean
         reference run reads the same input with a new group and its own output topics, and
         the task and dead-letter topics are compared: missing 0 and unexpected 0, or the
         drill fails; duplicates (redelivered tasks, same task id) are counted. With
         --delivery exactly-once, each instance keeps its transactional id across its
         restarts, the topics are read read_committed, and any duplicate fails the drill.
outage:  the broker frozen with SIGSTOP for --outage seconds during live traffic, then
         resumed: the service must not crash or spin, /readyz must say not ready while the
         broker is away and ready again after, dissuade_broker_reachable must go to 0, and
         the task and dead-letter topics must match a reference run's.
config:  the rule file, the roster and the grid map broken in turn while running (and a
         roster entry removed, which is valid): each fault is refused within the watch
         interval with an error naming the file, line or id, processing goes on on the last
         good set, and each repair is applied.
flood:   the service's maximum measured on a backlog of --backlog events, then twice that
         rate offered for --flood seconds: lag grows and must drain, RSS stays under
         --rss-bound, tasks created after their deadline are counted, and the topics must
         match a reference run's.
garbage: --garbage records that are not valid events (random bytes, truncated and deeply
         nested JSON, invalid UTF-8, huge strings and numbers, 1 MiB records, wrong types,
         empty records, duplicate keys) mixed into --valid valid events: no crash, every bad
         record dead-lettered with its reason, every valid one processed, RSS sampled.

lifecycle: live traffic with tasks due in 30 s; officers (a thread) answer the tasks of half
         the people and stay silent on the rest; the service is killed --kills times through
         the traffic and the deadlines: every unanswered chain must get each escalation tier
         and no answered one any.

Each drill prints one JSON line, with the alerts a Prometheus server running the shipped
alerting rules (time-compressed, --alert-compression) saw fire. The service runs with the
lifecycle off except in the lifecycle drill.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    for candidate in (
        os.environ.get("DISSUADE_BIN"),
        os.path.join(ROOT, "target/release/dissuade"),
        os.path.join(ROOT, "target/debug/dissuade"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("chaos: no dissuade binary: cargo build --release (or set DISSUADE_BIN)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(*args):
    print("chaos:", *args, file=sys.stderr, flush=True)


class Broker:
    """The embedded broker as a child process."""

    def __init__(self, logs):
        # The drills read every topic back from its beginning: the broker must keep it all
        # (its default, 64 MiB a partition, drops the start of a million-event run).
        env = dict(
            os.environ,
            DISSUADE__KAFKA__EMBEDDED_RETENTION_BYTES=str(8 << 30),
            DISSUADE__KAFKA__EMBEDDED_RETENTION='"6h"',
        )
        self.proc = subprocess.Popen(
            [binary(), "broker", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(logs, "broker.log"), "w"),
            text=True,
        )
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            sys.exit(f"chaos: the broker did not start: {line}")
        self.bootstrap = line[1]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Service:
    """`dissuade run` against the broker with its own topics and group."""

    def __init__(self, bootstrap, name, logs, input_topic, partitions, config=None, delivery="at-least-once"):
        self.config = config
        self.delivery = delivery
        self.name = name
        self.logs = logs
        self.metrics_port = free_port()
        self.topics = {
            "input": input_topic,
            "tasks": f"{name}.tasks",
            "dlq": f"{name}.dlq",
            "state": f"{name}.state",
        }
        self.group = f"{name}.group"
        self.env = dict(
            os.environ,
            DISSUADE__KAFKA__BROKERS=bootstrap,
            DISSUADE__KAFKA__PARTITIONS=str(partitions),
            DISSUADE__KAFKA__INPUT_TOPIC=json.dumps(input_topic),
            DISSUADE__KAFKA__TASK_TOPIC=json.dumps(self.topics["tasks"]),
            DISSUADE__KAFKA__DLQ_TOPIC=json.dumps(self.topics["dlq"]),
            DISSUADE__KAFKA__STATE_TOPIC=json.dumps(self.topics["state"]),
            DISSUADE__KAFKA__RULES_TOPIC=json.dumps(f"{name}.rules"),
            DISSUADE__KAFKA__LISTS_TOPIC=json.dumps(f"{name}.lists"),
            DISSUADE__KAFKA__GROUP_ID=json.dumps(self.group),
            DISSUADE__KAFKA__COMMIT_INTERVAL='"200ms"',
            DISSUADE__KAFKA__DELIVERY=json.dumps(delivery),
            DISSUADE__LIFECYCLE__ENABLED="false",
            DISSUADE__WEB__LISTEN='""',
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.procs = []
        self.starts = 0
        # Metrics port of each instance, kept across its restarts (Prometheus scrapes them).
        self.ports = {}

    def start(self, port=None, instance=0):
        """Starts an instance; with exactly-once delivery, `instance` picks its transactional
        id, which a restart of that instance must reuse."""
        port = self.ports.setdefault(instance, port or free_port())
        env = dict(
            self.env,
            DISSUADE__METRICS__LISTEN=json.dumps(f"127.0.0.1:{port}"),
            DISSUADE__KAFKA__TRANSACTIONAL_ID=json.dumps(f"{self.name}-{instance}"),
        )
        self.starts += 1
        out = open(os.path.join(self.logs, f"{self.name}.{self.starts}.log"), "w")
        command = [binary(), "run", "--create-topics"]
        if self.config:
            command += ["--config", self.config]
        p = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        p.log_path = out.name
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    def panicked(self):
        return [
            p.log_path
            for p in self.procs
            if "panicked" in open(p.log_path, errors="replace").read()
        ]


ALERTS = os.path.join(ROOT, "docker", "prometheus", "alerts.yml")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def compressed_rules(text, factor):
    """docker/prometheus/alerts.yml with every duration (`for:` and range selectors) divided
    by `factor`, at least 1 s: a drill of seconds then shows what the shipped rules do over
    minutes. The expressions and thresholds are the shipped ones."""
    import re

    def seconds(n, unit):
        return f"{max(1, round(int(n) * UNIT_SECONDS[unit] / factor))}s"

    text = re.sub(r"(for:\s*)(\d+)([smh])\b", lambda m: m[1] + seconds(m[2], m[3]), text)
    return re.sub(
        r"\[(\d+)([smh])(?::(\d+)([smh]))?\]",
        lambda m: "[" + seconds(m[1], m[2]) + (":" + seconds(m[3], m[4]) if m[3] else "") + "]",
        text,
    )


class Alerts:
    """A Prometheus server (Debian's `prometheus`) scraping the drilled service every second
    with the shipped alerting rules, time-compressed (see `compressed_rules`), and a thread
    noting when each alert first went pending and firing."""

    def __init__(self, logs, service, factor):
        import threading

        self.service = service
        self.factor = factor
        self.port = free_port()
        self.targets = os.path.join(logs, "targets.json")
        self.write_targets()
        rules = os.path.join(logs, "alerts.yml")
        with open(rules, "w") as f:
            f.write(compressed_rules(open(ALERTS).read(), factor))
        config = os.path.join(logs, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: [{json.dumps(rules)}]\n"
                "scrape_configs:\n"
                "  - job_name: dissuade\n"
                f"    file_sd_configs: [{{files: [{json.dumps(self.targets)}], refresh_interval: 1s}}]\n"
            )
        self.proc = subprocess.Popen(
            [
                "prometheus", f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(logs, 'prometheus')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(logs, "prometheus.log"), "w"),
        )
        self.started = time.time()
        self.seen = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def write_targets(self):
        targets = [f"127.0.0.1:{p}" for p in self.service.ports.values()]
        tmp = self.targets + ".tmp"
        with open(tmp, "w") as f:
            json.dump([{"targets": targets}], f)
        os.replace(tmp, self.targets)

    def watch(self):
        while not self.stopping.wait(1):
            self.write_targets()
            status, body = get(f"http://127.0.0.1:{self.port}/api/v1/alerts")
            if status != 200:
                continue
            now = round(time.time() - self.started, 1)
            for a in json.loads(body)["data"]["alerts"]:
                seen = self.seen.setdefault(a["labels"]["alertname"], {})
                seen.setdefault(a["state"], now)

    def stop(self):
        """{alert: {"pending": s, "firing": s}}: seconds into the drill each state was first
        seen."""
        self.stopping.set()
        self.thread.join()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.seen

    def fired(self, name):
        return "firing" in self.seen.get(name, {})

    def state(self, name):
        """The alert's state now: "pending", "firing" or None."""
        status, body = get(f"http://127.0.0.1:{self.port}/api/v1/alerts")
        if status != 200:
            return None
        for a in json.loads(body)["data"]["alerts"]:
            if a["labels"]["alertname"] == name:
                return a["state"]
        return None


def alert_report(alerts, expected):
    """The drill's alert figures, and whether every expected alert fired."""
    if alerts is None:
        return {}, True
    seen = alerts.stop()
    missing = [a for a in expected if "firing" not in seen.get(a, {})]
    return {
        "alerts": seen,
        "alerts_expected": expected,
        "alerts_compression": alerts.factor,
        **({"alerts_not_fired": missing} if missing else {}),
    }, not missing


def watch_alerts(args, logs, service):
    """An `Alerts` watcher when Prometheus is installed and not turned off, else None."""
    import shutil

    if args.alert_compression <= 0 or shutil.which("prometheus") is None:
        log("no Prometheus: the drills run without showing their alerts")
        return None
    return Alerts(logs, service, args.alert_compression)


def wait_topic(bootstrap, topic, timeout=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-probe"})
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                return len(t.partitions)
            time.sleep(0.2)
    finally:
        c.close()
    sys.exit(f"chaos: topic {topic} was not created in {timeout} s")


def high_watermarks(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def wait_committed(bootstrap, group, topic, partitions, timeout, alive=lambda: True):
    """Waits until `group` has committed the end of every partition of `topic`."""
    ends = high_watermarks(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if not alive():
                sys.exit("chaos: the service stopped before it caught up")
            committed = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            if all(tp.offset >= ends[tp.partition] for tp in committed):
                return
            time.sleep(0.5)
    finally:
        c.close()
    sys.exit(f"chaos: group {group} did not catch up with {topic} in {timeout} s")


def read_all(bootstrap, topic, partitions):
    """Every record of `topic` to its current end: (value, headers) pairs."""
    ends = high_watermarks(bootstrap, topic, partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-read-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.message.max.bytes": 4 * 1024 * 1024,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    done = {p for p, end in ends.items() if end == 0}
    out = []
    deadline = time.time() + 300
    while len(done) < partitions and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                if m.offset() >= ends[m.partition()]:
                    done.add(m.partition())
                continue
            raise RuntimeError(m.error())
        out.append((m.value(), dict(m.headers() or [])))
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    return out


def tasks_of(records):
    """The tasks (new and upgrades) among a task topic's records, in topic order."""
    tasks = []
    for value, _ in records:
        t = json.loads(value)
        if t.get("kind") in ("new", "upgrade"):
            tasks.append(t)
    return tasks


def tally(items):
    counts = {}
    for i in items:
        counts[i] = counts.get(i, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:8])


def explain(tasks):
    """What a set of differing tasks were: their kinds and the rules behind them."""
    return {
        "kinds": tally(t["kind"] for t in tasks),
        "rules": tally(r["rule_id"] for t in tasks for r in t.get("reasons", [])),
    }


def dead_letter_positions(records):
    return [
        (h.get("dissuade.source.partition"), h.get("dissuade.source.offset"), h.get("dissuade.error.kind"))
        for _, h in records
    ]


def generate(bootstrap, topic, events, rate, seed, logs):
    """`dissuade generate`: `events` at `rate` a second (0: as fast as it can)."""
    out = open(os.path.join(logs, "generate.log"), "a")
    command = [
        binary(), "generate", "--brokers", bootstrap, "--topic", topic,
        "--events", str(events), "--seed", str(seed), "--bad-share", "0.002",
    ]
    if rate:
        command += ["--rate", str(rate)]
    return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)


def crash(args):
    started = time.time()
    rng = random.Random(args.seed)
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-crash-")
    broker = Broker(logs)
    input_topic = "chaos.input"
    chaos = Service(broker.bootstrap, "chaos", logs, input_topic, args.partitions, delivery=args.delivery)
    reference = Service(broker.bootstrap, "reference", logs, input_topic, args.partitions)
    alerts = None
    try:
        running = [chaos.start(instance=i) for i in range(args.instances)]
        alerts = watch_alerts(args, logs, chaos)
        wait_topic(broker.bootstrap, input_topic)
        events = int(args.rate * args.duration)
        gen = generate(broker.bootstrap, input_topic, events, args.rate, args.seed, logs)
        # Kills spread over the generation, at random moments.
        moments = sorted(rng.uniform(2, args.duration) for _ in range(args.kills))
        t0 = time.time()
        for i, at in enumerate(moments):
            time.sleep(max(0, at - (time.time() - t0)))
            victim = rng.randrange(len(running))
            running[victim].send_signal(signal.SIGKILL)
            running[victim].wait()
            running[victim] = chaos.start(instance=victim)
            log(f"kill {i + 1}/{args.kills} at {at:.1f} s (instance {victim})")
        if gen.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        wait_committed(
            broker.bootstrap, chaos.group, input_topic, args.partitions, 600,
            alive=lambda: all(p.poll() is None for p in running),
        )
        chaos.stop_all()
        # A restart within seconds is not an outage: nothing is expected to fire.
        alert_figures, _ = alert_report(alerts, [])
        alerts = None
        run_reference(broker.bootstrap, reference, input_topic, args.partitions)

        result = {
            "drill": "crash",
            "delivery": args.delivery,
            "instances": args.instances,
            "kills": args.kills,
            "events": events,
            "rate": args.rate,
            "partitions": args.partitions,
            **compare(broker.bootstrap, chaos, reference, args.partitions),
            **alert_figures,
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        once = args.delivery != "exactly-once" or (
            result["duplicates"] == 0 and result["dead_letter_duplicates"] == 0
        )
        return nothing_lost(result) and once
    finally:
        if alerts:
            alerts.stop()
        chaos.stop_all()
        reference.stop_all()
        broker.stop()


def run_reference(bootstrap, reference, input_topic, partitions):
    """A clean run over the whole input with a new group, to its end."""
    ref = reference.start()
    wait_committed(bootstrap, reference.group, input_topic, partitions, 600, alive=lambda: ref.poll() is None)
    reference.stop_all()


def compare(bootstrap, tested, reference, partitions):
    """The task and dead-letter topics of a drilled run against the reference run's."""
    got_tasks = tasks_of(read_all(bootstrap, tested.topics["tasks"], partitions))
    want_tasks = tasks_of(read_all(bootstrap, reference.topics["tasks"], partitions))
    got = [t["task_id"] for t in got_tasks]
    want = [t["task_id"] for t in want_tasks]
    got_dlq = dead_letter_positions(read_all(bootstrap, tested.topics["dlq"], partitions))
    want_dlq = dead_letter_positions(read_all(bootstrap, reference.topics["dlq"], partitions))
    differences = {}
    got_ids, want_ids = set(got), set(want)
    if got_ids != want_ids:
        differences["missing_tasks"] = explain(t for t in want_tasks if t["task_id"] not in got_ids)
        differences["unexpected_tasks"] = explain(t for t in got_tasks if t["task_id"] not in want_ids)
    if set(got_dlq) != set(want_dlq):
        differences["unexpected_dead_letter_kinds"] = tally(
            (k or b"?").decode() for _, _, k in set(got_dlq) - set(want_dlq)
        )
        differences["missing_dead_letter_kinds"] = tally(
            (k or b"?").decode() for _, _, k in set(want_dlq) - set(got_dlq)
        )
    return {
        **({"differences": differences} if differences else {}),
        "reference_tasks": len(want),
        "tasks": len(got),
        "missing": len(set(want) - set(got)),
        "unexpected": len(set(got) - set(want)),
        "duplicates": len(got) - len(set(got)),
        "reference_dead_letters": len(want_dlq),
        "dead_letters": len(got_dlq),
        "dead_letters_missing": len(set(want_dlq) - set(got_dlq)),
        "dead_letters_unexpected": len(set(got_dlq) - set(want_dlq)),
        "dead_letter_duplicates": len(got_dlq) - len(set(got_dlq)),
        "reference_duplicates": len(want) - len(set(want)),
        "panics": len(tested.panicked() + reference.panicked()),
    }


def nothing_lost(result):
    return (
        result["missing"] == 0
        and result["unexpected"] == 0
        and result["dead_letters_missing"] == 0
        and result["dead_letters_unexpected"] == 0
        and result["panics"] == 0
        and result["reference_tasks"] > 0
    )


def get(url):
    """(status, body) of a GET, or (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def outage(args):
    """The broker frozen (SIGSTOP) for --outage seconds in the middle of live traffic."""
    started = time.time()
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-outage-")
    broker = Broker(logs)
    input_topic = "chaos.input"
    tested = Service(broker.bootstrap, "outage", logs, input_topic, args.partitions)
    reference = Service(broker.bootstrap, "reference", logs, input_topic, args.partitions)
    port = free_port()
    alerts = None
    try:
        proc = tested.start(port)
        alerts = watch_alerts(args, logs, tested)
        wait_topic(broker.bootstrap, input_topic)
        duration = args.outage + 30
        events = int(args.rate * duration)
        gen = generate(broker.bootstrap, input_topic, events, args.rate, args.seed, logs)
        time.sleep(10)
        base = f"http://127.0.0.1:{port}"
        ready_before = get(base + "/readyz")[0] == 200
        cpu0 = cpu_seconds(proc.pid)
        broker.proc.send_signal(signal.SIGSTOP)
        frozen_at = time.time()
        frozen_at_alert_clock = round(frozen_at - alerts.started, 1) if alerts else None
        not_ready_after = None
        reachable_metric_zero = False
        while time.time() - frozen_at < args.outage:
            status, _ = get(base + "/readyz")
            if status != 200 and not_ready_after is None:
                not_ready_after = round(time.time() - frozen_at, 1)
            _, text = get(base + "/metrics")
            if "dissuade_broker_reachable 0" in text:
                reachable_metric_zero = True
            time.sleep(1)
        cpu_share = (cpu_seconds(proc.pid) - cpu0) / (time.time() - frozen_at)
        broker.proc.send_signal(signal.SIGCONT)
        resumed_at = time.time()
        ready_again_after = None
        while time.time() - resumed_at < 300:
            if get(base + "/readyz")[0] == 200:
                ready_again_after = round(time.time() - resumed_at, 1)
                break
            time.sleep(0.5)
        if gen.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        wait_committed(
            broker.bootstrap, tested.group, input_topic, args.partitions, 600,
            alive=lambda: proc.poll() is None,
        )
        alive = proc.poll() is None
        tested.stop_all()
        alert_figures, alerted = alert_report(alerts, ["DissuadeBrokerUnreachable", "DissuadeNotReady"])
        alerts = None
        run_reference(broker.bootstrap, reference, input_topic, args.partitions)
        result = {
            "drill": "outage",
            "frozen_s": args.outage,
            "events": events,
            "rate": args.rate,
            "ready_before": ready_before,
            "not_ready_after_s": not_ready_after,
            "broker_reachable_metric_went_0": reachable_metric_zero,
            "service_cpu_share_while_frozen": round(cpu_share, 3),
            "ready_again_after_s": ready_again_after,
            "alive": alive,
            **compare(broker.bootstrap, tested, reference, args.partitions),
            # Alert times count from the watcher's start, as this does.
            **({"frozen_at_s": frozen_at_alert_clock} if frozen_at_alert_clock is not None else {}),
            **alert_figures,
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        return (
            nothing_lost(result)
            and alerted
            and alive
            and ready_before
            and not_ready_after is not None
            and ready_again_after is not None
        )
    finally:
        if alerts:
            alerts.stop()
        tested.stop_all()
        reference.stop_all()
        try:
            broker.proc.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass
        broker.stop()


def garbage_records(rng, n):
    """`n` records that are not valid events, with the reason each should be dead-lettered."""
    valid = {
        "event_id": "g", "occurred_at": int(time.time() * 1000), "caller_number": "13700001234",
        "callee_number": "13800001234", "call_duration_s": 60,
    }
    kinds = [
        ("random_bytes", lambda i: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))),
        ("truncated_json", lambda i: json.dumps(dict(valid, event_id=f"g{i}")).encode()[: rng.randint(1, 60)]),
        ("deeply_nested", lambda i: b'{"event_id":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("invalid_utf8", lambda i: b'{"event_id":"\xff\xfe' + str(i).encode() + b'"}'),
        ("huge_string", lambda i: json.dumps(dict(valid, event_id="x" * 200_000)).encode()),
        ("huge_number", lambda i: json.dumps(valid).replace('"call_duration_s": 60', '"call_duration_s": 1' + "0" * 400).encode()),
        ("one_mib", lambda i: b'{"event_id":"' + b"a" * (1024 * 1024 - 20) + b'"}'),
        ("wrong_types", lambda i: json.dumps(dict(valid, event_id=i, call_duration_s="long")).encode()),
        ("missing_fields", lambda i: json.dumps({"event_id": f"g{i}"}).encode()),
        ("empty", lambda i: b""),
        ("duplicate_keys", lambda i: b'{"event_id":"a","event_id":"b","occurred_at":1,"caller_number":"1","callee_number":"2","call_duration_s":1}'),
        ("not_an_object", lambda i: b"[1,2,3]"),
    ]
    # The big ones are rare, as in life: one in a thousand each.
    weights = [1 if k in ("deeply_nested", "huge_string", "one_mib") else 1000 for k, _ in kinds]
    for i in range(n):
        kind, make = rng.choices(kinds, weights)[0]
        yield kind, make(i)


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None


def garbage(args):
    started = time.time()
    rng = random.Random(args.seed)
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-garbage-")
    broker = Broker(logs)
    input_topic = "chaos.input"
    svc = Service(broker.bootstrap, "garbage", logs, input_topic, args.partitions)
    port = free_port()
    alerts = None
    try:
        proc = svc.start(port)
        alerts = watch_alerts(args, logs, svc)
        wait_topic(broker.bootstrap, input_topic)
        gen = subprocess.Popen(
            [
                binary(), "generate", "--brokers", broker.bootstrap, "--topic", input_topic,
                "--events", str(args.valid), "--seed", str(args.seed), "--bad-share", "0",
            ],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(os.path.join(logs, "generate.log"), "w"),
        )
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "message.max.bytes": 4 * 1024 * 1024,
                "linger.ms": 20,
                "queue.buffering.max.kbytes": 512 * 1024,
            }
        )
        failed = []
        kinds = {}
        rss = []
        for n, (kind, payload) in enumerate(garbage_records(rng, args.garbage)):
            kinds[kind] = kinds.get(kind, 0) + 1
            while True:
                try:
                    producer.produce(
                        input_topic, payload, key=str(n).encode(),
                        on_delivery=lambda err, m: err and failed.append(str(err)),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if n % 50_000 == 0:
                rss.append(rss_mib(proc.pid))
        producer.flush(120)
        if failed:
            sys.exit(f"chaos: {len(failed)} garbage records not accepted by the broker: {failed[:3]}")
        if gen.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        wait_committed(
            broker.bootstrap, svc.group, input_topic, args.partitions, 900,
            alive=lambda: proc.poll() is None,
        )
        rss.append(rss_mib(proc.pid))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

        def metric(line_start):
            return sum(
                float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith(line_start)
            )

        dlq = read_all(broker.bootstrap, svc.topics["dlq"], args.partitions)
        reasons = {}
        for _, h in dlq:
            k = (h.get("dissuade.error.kind") or b"?").decode()
            reasons[k] = reasons.get(k, 0) + 1
        consumed = metric("dissuade_events_consumed_total")
        # The short run is over before the rate's compressed `for` could hold.
        alert_figures, alerted = alert_report(alerts, [] if args.short else ["DissuadeDeadLetterRate"])
        alerts = None
        scored = metric('dissuade_events_total{outcome="task"}') + metric(
            'dissuade_events_total{outcome="suppressed"}'
        ) + metric('dissuade_events_total{outcome="below_threshold"}')
        result = {
            "drill": "garbage",
            "garbage": args.garbage,
            "valid": args.valid,
            "garbage_kinds": kinds,
            "consumed": int(consumed),
            "processed_valid": int(scored),
            "dead_letters": len(dlq),
            "dead_letters_missing": args.garbage - len(dlq),
            "dead_letter_reasons": reasons,
            "panics": len(svc.panicked()),
            "alive": proc.poll() is None,
            "rss_mib": [round(r, 1) for r in rss if r is not None],
            **alert_figures,
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        return (
            result["alive"]
            and alerted
            and result["panics"] == 0
            and len(dlq) == args.garbage
            and int(scored) == args.valid
            and int(consumed) == args.valid + args.garbage
        )
    finally:
        if alerts:
            alerts.stop()
        svc.stop_all()
        broker.stop()


def metric_value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def config_faults(args):
    """Configuration files broken while running: each is refused, the service keeps the last
    good set and keeps processing, and each repair is applied."""
    import shutil

    started = time.time()
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-config-")
    config_dir = os.path.join(logs, "config")
    shutil.copytree(os.path.join(ROOT, "config"), config_dir)
    broker = Broker(logs)
    input_topic = "chaos.input"
    svc = Service(
        broker.bootstrap, "config", logs, input_topic, args.partitions,
        config=os.path.join(config_dir, "dissuade.toml"),
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rules = os.path.join(config_dir, "rules.toml")
    roster = os.path.join(config_dir, "grid", "roster.csv")
    cells = os.path.join(config_dir, "grid", "cells.geojson")
    originals = {p: open(p, "rb").read() for p in (rules, roster, cells)}

    def scrape():
        return get(base + "/metrics")[1]

    def reloads():
        text = scrape()
        return sum(
            metric_value(text, f'dissuade_config_reloads_total{{result="{r}"}}') or 0
            for r in ("applied", "unchanged", "invalid", "refused")
        )

    def next_reload(after, timeout=30):
        """Seconds until the reload after `after` reloads, and its success flag."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if reloads() > after:
                ok = metric_value(scrape(), "dissuade_config_last_reload_successful")
                return round(time.time() - t0, 1), ok
            time.sleep(0.2)
        return None, None

    def consumed():
        return metric_value(scrape(), "dissuade_events_consumed_total") or 0

    alerts = None
    try:
        proc = svc.start(port)
        alerts = watch_alerts(args, logs, svc)
        wait_topic(broker.bootstrap, input_topic)
        # Four faults take about 30 s (60 s with the alert shown for each); the traffic
        # outlasts them.
        events = int(args.rate * (90 if args.short else 120))
        gen = generate(broker.bootstrap, input_topic, events, args.rate, args.seed, logs)
        time.sleep(5)
        faults = []
        for name, path, broken in [
            ("rule with an unknown operator", rules,
             originals[rules] + b'\n[[rule]]\nid = "drill_broken"\ndescription = "d"\nreason = "r"\nscore = 10\nwhen = "callee_age >>= 3"\n'),
            ("roster row for a grid that does not exist", roster,
             originals[roster] + b"999999-99-999,po-drill,Drill,community_officer,022-00000000\n"),
            ("grid map cut in half", cells, originals[cells][: len(originals[cells]) // 2]),
            ("roster entry removed (valid: its cell's tasks go to the duty desk)", roster,
             b"".join(l for l in originals[roster].splitlines(keepends=True) if b",po-120101-01-001," not in l)),
        ]:
            before, count = consumed(), reloads()
            t_fault = time.time()
            with open(path, "wb") as f:
                f.write(broken)
            seen, ok_flag = next_reload(count)
            time.sleep(3)
            # An invalid file is left in place until the alert fires (at most 30 s).
            alert_after = None
            if alerts and ok_flag == 0:
                while time.time() - t_fault < 30 and alert_after is None:
                    if alerts.state("DissuadeConfigReloadFailed") == "firing":
                        alert_after = round(time.time() - t_fault, 1)
                    time.sleep(0.5)
            kept_processing = consumed() > before
            count = reloads()
            with open(path, "wb") as f:
                f.write(originals[path])
            repaired, repaired_ok = next_reload(count)
            # The next fault starts once this one's alert has resolved.
            t_repair = time.time()
            while alerts and alerts.state("DissuadeConfigReloadFailed") and time.time() - t_repair < 15:
                time.sleep(0.5)
            faults.append({
                "fault": name,
                "seen_after_s": seen,
                "last_reload_successful": ok_flag,
                "kept_processing": kept_processing,
                "repair_applied_after_s": repaired if repaired_ok == 1 else None,
                **({"alert_fired_after_s": alert_after} if alerts else {}),
            })
        if gen.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        wait_committed(broker.bootstrap, svc.group, input_topic, args.partitions, 600,
                       alive=lambda: proc.poll() is None)
        text = scrape()
        log_text = open(proc.log_path, errors="replace").read()
        alert_figures, _ = alert_report(alerts, ["DissuadeConfigReloadFailed"])
        alerts_per_fault = alerts is None or all(
            (f["alert_fired_after_s"] is not None) == (f["last_reload_successful"] == 0) for f in faults
        )
        alerts = None
        result = {
            "drill": "config",
            "events": events,
            "consumed": int(metric_value(text, "dissuade_events_consumed_total") or 0),
            "faults": faults,
            "errors_name_the_place": all(
                s in log_text for s in ("drill_broken", "line", "roster.csv", "cells.geojson")
            ),
            "alive": proc.poll() is None,
            "panics": len(svc.panicked()),
            **alert_figures,
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        return (
            result["alive"]
            and alerts_per_fault
            and result["panics"] == 0
            and result["consumed"] == events
            and result["errors_name_the_place"]
            and all(
                f["seen_after_s"] is not None
                and f["repair_applied_after_s"] is not None
                and f["kept_processing"]
                and f["last_reload_successful"] == (1 if "valid" in f["fault"] else 0)
                for f in faults
            )
        )
    finally:
        if alerts:
            alerts.stop()
        svc.stop_all()
        broker.stop()


def lag_of(text):
    return sum(
        float(l.rsplit(" ", 1)[1])
        for l in text.splitlines()
        if l.startswith("dissuade_consumer_lag_records{")
    )


def flood(args):
    """Twice the service's measured maximum rate for --flood seconds: lag grows, then drains;
    RSS is sampled; nothing is lost against a reference run; tasks delivered after their
    deadline are counted."""
    started = time.time()
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-flood-")
    broker = Broker(logs)
    input_topic = "chaos.input"
    svc = Service(broker.bootstrap, "flood", logs, input_topic, args.partitions)
    reference = Service(broker.bootstrap, "reference", logs, input_topic, args.partitions)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    alerts = None
    try:
        # The maximum: a backlog written before the service starts, then read as fast as it can.
        proc = svc.start(port)
        wait_topic(broker.bootstrap, input_topic)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        backlog = args.backlog
        pre = generate(broker.bootstrap, input_topic, backlog, 0, args.seed, logs)
        if pre.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        proc = svc.start(port)
        t0, c0 = None, 0
        while True:
            c = metric_value(get(base + "/metrics")[1] or "", "dissuade_events_consumed_total") or 0
            if t0 is None and c > 0:
                t0, c0 = time.time(), c
            if c >= backlog:
                break
            if proc.poll() is not None:
                sys.exit("chaos: the service stopped while reading the backlog")
            time.sleep(0.05)
        if c0 > backlog / 2 or time.time() - t0 < 0.3:
            sys.exit(f"chaos: the backlog of {backlog} was read too fast to measure a rate: use a larger --backlog")
        measured_max = (backlog - c0) / (time.time() - t0)
        # The flood.
        offered = int(2 * measured_max)
        events = int(offered * args.flood)
        alerts = watch_alerts(args, logs, svc)
        gen = generate(broker.bootstrap, input_topic, events, offered, args.seed + 1, logs)
        gen_started = time.time()
        samples = []
        while True:
            text = get(base + "/metrics")[1] or ""
            samples.append((round(time.time() - gen_started, 1), lag_of(text), rss_mib(proc.pid)))
            if gen.poll() is not None and time.time() - gen_started > 1:
                break
            time.sleep(1)
        gen_seconds = time.time() - gen_started
        if gen.returncode != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        drained_at = None
        while drained_at is None and time.time() - gen_started < 1800:
            text = get(base + "/metrics")[1] or ""
            consumed = metric_value(text, "dissuade_events_consumed_total") or 0
            samples.append((round(time.time() - gen_started, 1), lag_of(text), rss_mib(proc.pid)))
            if consumed >= backlog + events:
                drained_at = time.time() - gen_started
            elif proc.poll() is not None:
                sys.exit("chaos: the service stopped during the flood")
            else:
                time.sleep(1)
        wait_committed(broker.bootstrap, svc.group, input_topic, args.partitions, 600,
                       alive=lambda: proc.poll() is None)
        alive = proc.poll() is None
        svc.stop_all()
        # The short flood is over before the compressed `for`s could hold.
        alert_figures, alerted = alert_report(
            alerts, [] if args.short else ["DissuadeConsumerLagGrowing", "DissuadeEndToEndLatencyHigh"]
        )
        alerts = None
        run_reference(broker.bootstrap, reference, input_topic, args.partitions)
        tasks = read_all(broker.bootstrap, svc.topics["tasks"], args.partitions)
        late = 0
        for value, _ in tasks:
            t = json.loads(value)
            if t.get("kind") in ("new", "upgrade"):
                deadline = t["deadline"]
                created = t["created_at"]
                late += created > deadline
        result = {
            "drill": "flood",
            "backlog": backlog,
            "measured_max_events_per_s": round(measured_max),
            "offered_events_per_s": offered,
            "achieved_events_per_s": round(events / gen_seconds),
            "flood_events": events,
            "peak_lag": max(s[1] for s in samples),
            "drained_after_s": round(drained_at, 1) if drained_at else None,
            "rss_mib_max": round(max((s[2] or 0) for s in samples), 1),
            "rss_mib_end": round(samples[-1][2] or 0, 1),
            "tasks_created_after_their_deadline": late,
            "alive": alive,
            **compare(broker.bootstrap, svc, reference, args.partitions),
            **alert_figures,
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        return nothing_lost(result) and alive and alerted and drained_at is not None and result["rss_mib_max"] < args.rss_bound
    finally:
        if alerts:
            alerts.stop()
        svc.stop_all()
        reference.stop_all()
        broker.stop()


def lifecycle(args):
    """The task lifecycle under kills: live traffic with short deadlines; officers answer
    the tasks of half the people (chosen by the chain's first task id) as they arrive and
    stay silent on the rest; the service is killed at random moments through the traffic
    and the deadlines. Afterwards every unanswered chain must have had each of its
    escalation tiers (station desk, then centre) and no answered chain any; repeats are
    counted."""
    import threading

    started = time.time()
    rng = random.Random(args.seed)
    logs = tempfile.mkdtemp(prefix="dissuade-chaos-lifecycle-")
    broker = Broker(logs)
    input_topic = "chaos.input"
    svc = Service(broker.bootstrap, "lifecycle", logs, input_topic, args.partitions)
    sla_s, second_s = 30, 15
    svc.env.update(
        DISSUADE__LIFECYCLE__ENABLED="true",
        DISSUADE__LIFECYCLE__SECOND_ESCALATION_AFTER=json.dumps(f"{second_s}s"),
        DISSUADE__KAFKA__FEEDBACK_TOPIC=json.dumps("lifecycle.feedback"),
        DISSUADE__KAFKA__FEEDBACK_DLQ_TOPIC=json.dumps("lifecycle.feedback.dlq"),
        DISSUADE__KAFKA__LIFECYCLE_TOPIC=json.dumps("lifecycle.task-state"),
        # The killed member's partitions come back within seconds, not the default 45 s.
        **{"DISSUADE__KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS": '"6000"'},
        **{f"DISSUADE__DISPATCH__SLA__{level}": json.dumps(f"{sla_s}s") for level in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
    )
    stop = threading.Event()
    answered, seen_tasks, failures = set(), {}, []

    def root_of(task_id):
        while seen_tasks.get(task_id, {}).get("upgrade_of"):
            task_id = seen_tasks[task_id]["upgrade_of"]
        return task_id

    def officers():
        """Answers the tasks of every chain whose first task id ends in an even digit."""
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"officers-{uuid.uuid4()}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        c.subscribe([svc.topics["tasks"]])
        try:
            while not stop.is_set():
                m = c.poll(0.2)
                if m is None or m.error():
                    continue
                t = json.loads(m.value())
                if t.get("kind") not in ("new", "upgrade") or t["task_id"] in seen_tasks:
                    continue
                seen_tasks[t["task_id"]] = t
                if int(root_of(t["task_id"])[-1], 16) % 2 == 0:
                    answered.add(t["task_id"])
                    feedback = {"task_id": t["task_id"], "actor_id": t["assignee"]["id"],
                                "at": int(time.time() * 1000), "outcome": "reached_in_person"}
                    p.produce("lifecycle.feedback", key=t["assignee"]["id"], value=json.dumps(feedback))
                    p.poll(0)
            p.flush(30)
        except Exception as e:  # reported, and the drill fails
            failures.append(repr(e))
        finally:
            c.close()

    proc = None
    try:
        proc = svc.start()
        wait_topic(broker.bootstrap, input_topic)
        wait_topic(broker.bootstrap, svc.topics["tasks"])
        wait_topic(broker.bootstrap, "lifecycle.feedback")
        answering = threading.Thread(target=officers, daemon=True)
        answering.start()
        events = int(args.lifecycle_rate * args.duration)
        gen = generate(broker.bootstrap, input_topic, events, args.lifecycle_rate, args.seed, logs)
        # Kills through the traffic and the deadlines that follow it.
        span = args.duration + sla_s + second_s
        moments = sorted(rng.uniform(2, span) for _ in range(args.kills))
        t0 = time.time()
        for i, at in enumerate(moments):
            time.sleep(max(0, at - (time.time() - t0)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = svc.start()
            log(f"kill {i + 1}/{args.kills} at {at:.1f} s")
        if gen.wait() != 0:
            sys.exit("chaos: the generator failed (see generate.log)")
        # Every deadline and second tier has passed, with room for a restore after a kill.
        time.sleep(max(0, span + 20 - (time.time() - t0)))
        stop.set()
        answering.join()
        alive = proc.poll() is None
        svc.stop_all()
        records = [json.loads(v) for v, _ in read_all(broker.bootstrap, svc.topics["tasks"], args.partitions)]
        tasks = {t["task_id"]: t for t in records if t.get("kind") in ("new", "upgrade")}
        seen_tasks.update(tasks)
        escalations = [t for t in records if t.get("kind") == "escalation"]
        # A chain is its first task and the upgrades of it; its assignee decides its tiers.
        chains = {}
        for task_id in tasks:
            chains.setdefault(root_of(task_id), []).append(tasks[task_id])
        expected = set()
        for root, chain in chains.items():
            if int(root[-1], 16) % 2 == 0:
                continue
            last = chain[-1]
            officer = last["assignee"]["kind"] == "officer"
            station = isinstance(last.get("grid", {}).get("station_id"), str)
            for tier in range(1, 3 if officer and station else 2):
                expected.add((root, tier))
        got = [(root_of(e["escalation_of"]), e["tier"]) for e in escalations]
        result = {
            "drill": "lifecycle",
            "kills": args.kills,
            "events": events,
            "rate": args.lifecycle_rate,
            "sla_s": sla_s,
            "second_escalation_after_s": second_s,
            "tasks": len(tasks),
            "chains": len(chains),
            "answered_chains": sum(1 for r in chains if int(r[-1], 16) % 2 == 0),
            "feedback_sent": len(answered),
            "escalations_expected": len(expected),
            "escalations": len(got),
            "escalations_missing": len(expected - set(got)),
            "escalations_unexpected": len(set(got) - expected),
            "escalation_duplicates": len(got) - len(set(got)),
            "alive": alive,
            "panics": len(svc.panicked()),
            **({"officer_failures": failures} if failures else {}),
            "seconds": round(time.time() - started, 1),
            "logs": logs,
        }
        print(json.dumps(result), flush=True)
        return (
            alive
            and not failures
            and result["panics"] == 0
            and result["escalations_expected"] > 0
            and result["escalations_missing"] == 0
            and result["escalations_unexpected"] == 0
        )
    finally:
        stop.set()
        svc.stop_all()
        broker.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("drills", nargs="*", help="crash, outage, garbage, config, flood, lifecycle (default: all)")
    p.add_argument("--backlog", type=int, help="events read back to measure the maximum rate (flood drill)")
    p.add_argument("--flood", type=int, help="seconds of traffic at twice the maximum (flood drill)")
    p.add_argument("--rss-bound", type=float, default=2048, help="MiB the service must stay under in the flood (2048)")
    p.add_argument("--outage", type=int, help="seconds the broker stays frozen (outage drill)")
    p.add_argument("--short", action="store_true", help="the CI sizes: 3 kills over 20 s at 2,000/s; 100,000 garbage records")
    p.add_argument("--kills", type=int)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument(
        "--delivery", choices=["at-least-once", "exactly-once"], default="at-least-once",
        help="the crash drill's kafka.delivery; with exactly-once, any duplicate fails it",
    )
    p.add_argument("--rate", type=int)
    p.add_argument("--lifecycle-rate", type=int, default=500, help="events/s of the lifecycle drill (500)")
    p.add_argument("--duration", type=float)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--garbage", type=int)
    p.add_argument("--valid", type=int)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--alert-compression", type=float, default=30,
        help="each drill runs Prometheus with the shipped alerting rules, every duration "
        "divided by this (30: `for: 1m` holds 2 s), and reports the alerts that fired; 0: no "
        "Prometheus",
    )
    args = p.parse_args()
    sizes = (
        dict(kills=3, rate=2000, duration=20, garbage=100_000, valid=50_000, outage=30, backlog=100_000, flood=10)
        if args.short
        else dict(
            kills=20, rate=10_000, duration=120, garbage=1_000_000, valid=200_000, outage=30,
            backlog=1_000_000, flood=60,
        )
    )
    for k, v in sizes.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    all_drills = {
        "crash": crash,
        "outage": outage,
        "garbage": garbage,
        "config": config_faults,
        "flood": flood,
        "lifecycle": lifecycle,
    }
    drills = args.drills or list(all_drills)
    unknown = set(drills) - set(all_drills)
    if unknown:
        p.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    ok = True
    for d in drills:
        ok = all_drills[d](args) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
