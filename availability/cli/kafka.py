"""`availability kafka start|stop|status`: the real local Apache Kafka (one node or a
local cluster), see local_kafka."""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

from availability.cli import CommandError
from availability.local_kafka import broker
from availability.local_kafka.broker import KAFKA_VERSION, LocalKafka, LocalKafkaError, Settings

EXIT_NOT_RUNNING = 3

EPILOG = """\
files under --home:
  kafka-<version>/libs/     the Kafka jars, fetched once with `mvn` (--libs-dir: use
                            an existing jars dir instead, e.g. another home's)
  security/                 made once: a local CA (ca.pem), the broker's certificate
                            and key, and client-sasl-ssl.properties (mode 0600): the
                            client settings of the SCRAM-SHA-512 user "availability"
                            for the SASL_SSL listener, with its random password
 one node (--nodes 1, the default):
  kafka-data/               Kafka log.dirs (unless --data-dir), formatted on first start
  kafka/server.properties   the running broker's config (rewritten on each start)
  kafka.pid                 pid of the broker JVM
  logs/server.log           broker log; logs/kafka.out: the JVM's stdout/stderr
 a cluster (--nodes N, N > 1), for each node n = 0 .. N-1:
  kafka-cluster-N/node-n/   data/ (log.dirs; with --data-dir: DIR/node-n),
                            server.properties, kafka.pid, logs/

listeners on 127.0.0.1: PLAINTEXT on --port (what every command uses by default),
the KRaft controller on --controller-port, and SASL_SSL (SCRAM-SHA-512, TLS) on
--sasl-port, e.g.
  availability topics create --brokers 127.0.0.1:9094 \\
      --kafka-config ~/.cache/availability-engine/security/client-sasl-ssl.properties

a local cluster: `availability kafka start --nodes 3` runs three nodes, each a
combined broker+controller and a voter of the KRaft quorum (it survives the loss
of any one). Node n (Kafka node.id n+1) listens on node 0's ports + 10*n:
  node 0: 9092 PLAINTEXT, 9093 controller, 9094 SASL_SSL   (as the single node)
  node 1: 9102, 9103, 9104        node 2: 9112, 9113, 9114
so the clients' bootstrap is --brokers 127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112
(start prints it). Every node has the SASL_SSL listener, with the same user. The
internal topics (consumer offsets, transactions) get replication factor 3 and
min.insync.replicas 2 (also the brokers' default), and `availability topics create`
gives the engine's topics replication factor 3 and min.insync.replicas 2, so a
consumer group and every acknowledged event survive the loss of a broker.
A cluster keeps its own data, apart from the single node's: the two cannot share
a data dir (each is formatted for its own quorum). One local Kafka runs per home
at a time. start is idempotent and starts only the nodes that are not running
(it brings a lost node back); stop and status without --nodes act on whatever
runs from the home; status reports each node and the registered brokers.

JAVA_HOME selects the JDK (17+), else `java` on PATH. Every option's default can
be set with the environment variable named in its help.
"""


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=80)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (except derived ones), keep the epilog's layout."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _common_options() -> argparse.ArgumentParser:
    """Options shared by start/stop/status, so each names the same broker."""
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=str(broker.default_home()),
        help=f"state dir: jars cache, config, pid file, logs [env ${broker.ENV_HOME}]",
    )
    common.add_argument(
        "--port",
        metavar="PORT",
        type=int,
        default=env.get(broker.ENV_PORT) or str(broker.DEFAULT_PORT),
        help=f"broker port on {broker.HOST} [env ${broker.ENV_PORT}]",
    )
    common.add_argument(
        "--controller-port",
        metavar="PORT",
        type=int,
        default=env.get(broker.ENV_CONTROLLER_PORT) or None,
        help=f"KRaft controller port (default: --port + 1) [env ${broker.ENV_CONTROLLER_PORT}]",
    )
    common.add_argument(
        "--sasl-port",
        metavar="PORT",
        type=int,
        default=env.get(broker.ENV_SASL_PORT) or None,
        help=f"SASL_SSL (SCRAM-SHA-512) listener port (default: --port + "
        f"{broker.SASL_PORT_OFFSET}; 0: no such listener) [env ${broker.ENV_SASL_PORT}]",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=env.get(broker.ENV_DATA_DIR) or None,
        help="Kafka log.dirs (default: <home>/kafka-data; of a cluster's node n: "
        f"DIR/node-n, default <home>/kafka-cluster-N/node-n/data) [env ${broker.ENV_DATA_DIR}]",
    )
    common.add_argument(
        "--nodes",
        metavar="N",
        type=int,
        default=env.get(broker.ENV_NODES) or None,
        help=f"1: one broker; 2-{broker.MAX_NODES}: a local KRaft cluster of N combined "
        f"broker+controller nodes, node n on node 0's ports + {broker.NODE_PORT_STRIDE}*n "
        "(default: the one running from --home, else 1) "
        f"[env ${broker.ENV_NODES}]",
    )
    return common


def register(sub: argparse._SubParsersAction) -> None:
    env = os.environ
    common = _common_options()
    parser = sub.add_parser(
        "kafka",
        help=f"start/stop/status of the local Apache Kafka {KAFKA_VERSION}",
        description=_wrap(
            f"Run a real Apache Kafka {KAFKA_VERSION} (KRaft, combined broker+controller) "
            "on 127.0.0.1 for tests, the demo and benchmarks: one node, or with --nodes 3 "
            "a local cluster of three that survives the loss of a broker. Its jars are "
            "fetched once from Maven Central with `mvn` and it runs on the machine's JDK 17+; "
            "the brokers run detached and survive this command."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        parents=[common],
        help="start the broker and wait until it answers (idempotent)",
        description=_wrap(
            "Fetch the jars if missing, format storage on first use, launch the broker "
            "detached and wait until a metadata request succeeds. With --nodes N, launch the "
            "N nodes of a local cluster together and wait until each answers and the cluster "
            "lists all N brokers as registered; nodes already running are left alone, so "
            "start also brings a lost node back. If this home's broker (every node) is "
            "already running and answering, says so and exits 0. Fails with the log's last "
            "lines if a broker dies during startup (stopping the nodes it launched). "
            "Refused while another local Kafka of this home runs (one node vs. a "
            "cluster): stop it first. The SASL_SSL listener's certificates "
            "and its SCRAM-SHA-512 user (random password, kept in "
            "security/client-sasl-ssl.properties only) are made once per home; start "
            "sets the user's credential if the cluster lacks it and logs in once on every "
            "node, printing the listener's addresses and the settings file's path (never "
            "the password)."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    start.add_argument(
        "--heap",
        metavar="SIZE",
        default=env.get(broker.ENV_HEAP) or broker.DEFAULT_HEAP,
        help=f"JVM max heap, e.g. 512m or 2g [env ${broker.ENV_HEAP}]",
    )
    start.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=env.get(broker.ENV_START_TIMEOUT) or str(broker.DEFAULT_START_TIMEOUT),
        help="seconds to wait for the broker (every node, and a cluster's registrations) "
        f"to answer [env ${broker.ENV_START_TIMEOUT}]",
    )
    start.add_argument(
        "--libs-dir",
        metavar="DIR",
        default=env.get(broker.ENV_LIBS) or None,
        help=f"use the Kafka {KAFKA_VERSION} jars in DIR as they are, e.g. "
        f"~/.cache/availability-engine/kafka-{KAFKA_VERSION}/libs, instead of fetching them "
        f"into --home (default: <home>/kafka-{KAFKA_VERSION}/libs) [env ${broker.ENV_LIBS}]",
    )
    start.set_defaults(run=run_start)

    stop = actions.add_parser(
        "stop",
        parents=[common],
        help="stop the broker or every node (SIGTERM, then SIGKILL after --timeout)",
        description=_wrap(
            "Send SIGTERM for a controlled shutdown (to every node of a cluster at once), "
            "wait for the processes to exit (SIGKILL after --timeout) and remove the pid "
            "files. A cluster node still running "
            f"{broker.QUORUM_LOST_GRACE:.0f} s after a majority of the nodes has exited is "
            "killed at once: no controller quorum is left to approve its controlled "
            "shutdown, and Kafka would wait 5 minutes (it recovers that node's logs at its "
            "next start). Without --nodes, stops whatever runs from this home (one node or "
            "a cluster). Not running is not an error."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    stop.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=env.get(broker.ENV_STOP_TIMEOUT) or str(broker.DEFAULT_STOP_TIMEOUT),
        help=f"seconds to wait after SIGTERM before SIGKILL [env ${broker.ENV_STOP_TIMEOUT}]",
    )
    stop.set_defaults(run=run_stop)

    status = actions.add_parser(
        "status",
        parents=[common],
        help="is the broker (every node) running and answering? (exit 0 yes, 3 no)",
        description=_wrap(
            "Report whether this home's broker runs (pid, port) and answers metadata "
            "requests, or why not (no pid file, stale pid, port used by something else), "
            "and whether its SCRAM user logs in on the SASL_SSL listener. For a cluster: "
            "that for each node, then which brokers the cluster lists as registered and how "
            "many partitions are under-replicated (in-sync replicas fewer than replicas). "
            "Without --nodes, reports whatever runs from this home. "
            "Exit status 0 when running and answering (every node, all brokers registered, "
            "and, if it has a SASL_SSL listener, that login works), "
            f"{EXIT_NOT_RUNNING} otherwise."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    status.set_defaults(run=run_status)


def _settings(args: argparse.Namespace) -> Settings:
    for name in ("port", "controller_port", "sasl_port"):
        value = getattr(args, name)
        off = name == "sasl_port" and value == 0
        if value is not None and not off and not 0 < value < 65536:
            raise CommandError(f"--{name.replace('_', '-')} must be a TCP port, got {value}")
    heap = getattr(args, "heap", None)
    if heap is not None and not re.fullmatch(r"\d+[kKmMgG]?", heap):
        raise CommandError(f"--heap must look like 512m or 2g, got {heap!r}")
    settings = Settings.from_env(
        home=args.home,
        port=args.port,
        controller_port=args.controller_port,
        sasl_port=args.sasl_port,
        data_dir=args.data_dir,
        heap=heap,
        nodes=args.nodes,
        libs=getattr(args, "libs_dir", None),
    )
    if args.nodes is not None and not 1 <= args.nodes <= broker.MAX_NODES:
        raise CommandError(f"--nodes must be 1 to {broker.MAX_NODES}, got {args.nodes}")
    if settings.ctrl_port == settings.port:
        raise CommandError("--controller-port must differ from --port")
    if settings.sasl_ssl_port in (settings.port, settings.ctrl_port):
        raise CommandError("--sasl-port must differ from --port and --controller-port")
    if settings.sasl_ssl_port is not None and settings.sasl_ssl_port > 65535:
        raise CommandError(f"--sasl-port (default --port + {broker.SASL_PORT_OFFSET}) must be "
                           f"a TCP port, got {settings.sasl_ssl_port}")
    if settings.nodes is not None and settings.nodes > 1:
        problem = broker.layout_problem(settings, settings.nodes)
        if problem:
            raise CommandError(problem)
    return settings


def _progress(message: str) -> None:
    print(message, flush=True)


def _fail(exc: LocalKafkaError) -> CommandError:
    """Show the log context on stderr; the one-line error is printed by the CLI entry."""
    if exc.details:
        print(exc.details, file=sys.stderr)
    return CommandError(str(exc))


def run_start(args: argparse.Namespace) -> int:
    try:
        LocalKafka(_settings(args), progress=_progress).start(timeout=args.timeout)
    except LocalKafkaError as exc:
        raise _fail(exc) from exc
    return 0


def run_stop(args: argparse.Namespace) -> int:
    try:
        print(LocalKafka(_settings(args), progress=_progress).stop(timeout=args.timeout))
    except LocalKafkaError as exc:
        raise _fail(exc) from exc
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        status = LocalKafka(settings).status()
    except LocalKafkaError as exc:
        raise _fail(exc) from exc
    print(status.describe())
    if not status.running and settings.nodes is None:
        for size in settings.cluster_sizes()[1:]:
            print(f"note: {settings.cluster_dir(size)} holds a {size}-node cluster, not "
                  f"running (`availability kafka status --nodes {size}` for each node)")
    return 0 if status.ok else EXIT_NOT_RUNNING
